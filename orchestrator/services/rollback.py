"""Rollback: run the compensations of a batch's finished phases, newest first.

A phase may name a `compensate` handler (a per-batch handler that undoes it). Rolling
back moves the batch to `rolling_back`, marks every succeeded phase that has one as
pending compensation, and runs them one at a time in reverse order of finishing, each
recorded. A compensation that raises is retried with backoff; when it fails for good
the batch rests in `rollback_failed`, saying which phase and why, and an operator may
start the rollback again. When none is left the batch is `rolled_back`.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from orchestrator.audit.operations import audited_batch_operation
from orchestrator.config import runtime
from orchestrator.errors import Conflict
from orchestrator.models import Batch, OutboxEvent, PhaseRun, StateTransition
from orchestrator.selectors import pipeline_plan
from orchestrator.services.events import ORCHESTRATOR, emit, outbox_event, transition
from orchestrator.services.execution import PhaseRef, batch_facts, run_batch_handler
from orchestrator.services.progress import lock_batch, notify_parent, save_batch
from orchestrator.services.retention import refuse_past_retention
from orchestrator.states import BatchState, PhaseState, TransitionNotAllowed
from orchestrator.workflows import COMPENSATE_TASK, enqueue_orchestration

PENDING, RUNNING, SUCCEEDED, FAILED = "pending", "running", "succeeded", "failed"
ROLLBACK_FROM = {
    BatchState.COMPLETED,
    BatchState.COMPLETED_WITH_ERRORS,
    BatchState.FAILED,
    BatchState.CANCELLED,
    BatchState.ROLLBACK_FAILED,
}


def _reverse_finish_order(phases: list[PhaseRun]) -> list[PhaseRun]:
    return sorted(
        phases, key=lambda p: (p.finished_at or p.started_at or timezone.now(), p.position), reverse=True
    )


def begin_rollback(
    batch: Batch,
    phases: list[PhaseRun],
    *,
    actor: str,
    reason: str,
    audit: list[StateTransition],
    now: datetime,
) -> list[OutboxEvent]:
    """Move a locked batch to `rolling_back` and queue its compensations (after commit)."""
    audit.append(transition(batch, to=BatchState.ROLLING_BACK, actor=actor, reason=reason, at=now))
    plan = pipeline_plan(batch.pipeline_version)
    undo = [
        p
        for p in phases
        if p.state == PhaseState.SUCCEEDED
        and p.compensation_state != SUCCEEDED
        and plan.phase(p.name).compensate is not None
    ]
    PhaseRun.objects.filter(id__in=[p.id for p in undo]).update(
        compensation_state=PENDING, compensation_error=""
    )
    transaction.on_commit(partial(enqueue_compensation, batch))
    order = [p.name for p in _reverse_finish_order(undo)]
    return [outbox_event(batch=batch, event_type="batch.rolling_back", at=now, data={"compensations": order})]


def enqueue_compensation(batch: Batch, countdown: float = 0) -> None:
    enqueue_orchestration(COMPENSATE_TASK, (str(batch.id),), batch, countdown=countdown)


@audited_batch_operation("batch.rollback")
def batch_rollback(*, batch_id: Any, actor: str, reason: str = "") -> Batch:
    """Operator action: roll back an ended batch (or start a failed rollback again)."""
    now = timezone.now()
    with transaction.atomic():
        batch = lock_batch(batch_id)
        if batch.state not in ROLLBACK_FROM:
            raise Conflict(
                "invalid_state",
                f"a {batch.state} batch cannot be rolled back; cancel it first",
                state=batch.state,
            )
        refuse_past_retention(batch)
        phases = list(batch.phases.all())
        audit: list[StateTransition] = []
        try:
            events = begin_rollback(
                batch, phases, actor=actor, reason=reason or "rollback requested", audit=audit, now=now
            )
        except TransitionNotAllowed as exc:  # pragma: no cover - ROLLBACK_FROM mirrors the table
            raise Conflict("invalid_state", str(exc)) from exc
        save_batch(batch, audit)
        emit(events)
    return batch


def compensation_step(*, batch_id: Any) -> float | None:
    """Run the next pending compensation of a rolling-back batch.

    Returns None when there is nothing more to do now (done, failed for good, or the
    batch is no longer rolling back), 0 to go on at once, or a delay in seconds before
    retrying a compensation that raised.
    """
    with transaction.atomic():
        batch = lock_batch(batch_id)
        if batch.state != BatchState.ROLLING_BACK:
            return None
        phases = list(batch.phases.all())
        waiting = [p for p in _reverse_finish_order(phases) if p.compensation_state in (PENDING, RUNNING)]
        if not waiting:
            now = timezone.now()
            audit = [
                transition(
                    batch,
                    to=BatchState.ROLLED_BACK,
                    actor=ORCHESTRATOR,
                    reason="all compensations done",
                    at=now,
                )
            ]
            save_batch(batch, audit)
            emit([outbox_event(batch=batch, event_type="batch.rolled_back", at=now)])
            _tell_parent(batch)
            return None
        phase = waiting[0]
        phase.compensation_state = RUNNING
        phase.compensation_attempts += 1
        phase.save(update_fields=["compensation_state", "compensation_attempts"])
    handler = pipeline_plan(batch.pipeline_version).phase(phase.name).compensate
    assert handler is not None
    result = run_batch_handler(
        batch=batch_facts(batch.id), phase=PhaseRef(id=phase.id, name=phase.name, handler=handler)
    )
    return _record_compensation(batch.id, phase.id, result.error)


def _record_compensation(batch_id: Any, phase_id: int, error: str | None) -> float | None:
    now = timezone.now()
    with transaction.atomic():
        batch = lock_batch(batch_id)
        phase = batch.phases.get(id=phase_id)
        if batch.state != BatchState.ROLLING_BACK or phase.compensation_state != RUNNING:
            return None
        if error is None:
            phase.compensation_state, phase.compensated_at, phase.compensation_error = SUCCEEDED, now, ""
            phase.save(update_fields=["compensation_state", "compensated_at", "compensation_error"])
            emit(
                [
                    outbox_event(
                        batch=batch, event_type="batch.phase_compensated", at=now, data={"phase": phase.name}
                    )
                ]
            )
            return 0
        phase.compensation_error = error[:4000]
        if phase.compensation_attempts < runtime("compensation_max_attempts"):
            phase.compensation_state = PENDING
            phase.save(update_fields=["compensation_state", "compensation_error"])
            base = runtime("compensation_backoff_seconds")
            return float(min(base * 2 ** (phase.compensation_attempts - 1), 300))
        phase.compensation_state = FAILED
        phase.save(update_fields=["compensation_state", "compensation_error"])
        reason = (
            f"compensation of {phase.name} failed after {phase.compensation_attempts} attempts: {error[:200]}"
        )
        audit = [
            transition(
                batch,
                to=BatchState.ROLLBACK_FAILED,
                actor=ORCHESTRATOR,
                reason=reason,
                phase=phase.name,
                at=now,
            )
        ]
        batch.error = reason
        save_batch(batch, audit)
        data = {"phase": phase.name, "error": error[:500]}
        emit([outbox_event(batch=batch, event_type="batch.rollback_failed", at=now, data=data)])
        _tell_parent(batch)
        return None


def _tell_parent(batch: Batch) -> None:
    """A child that ended by rollback tells its parent (whose phase then fails)."""
    if batch.parent_phase_id is not None:
        transaction.on_commit(partial(notify_parent, batch))
