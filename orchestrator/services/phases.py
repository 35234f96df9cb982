"""Services that run and finish phases: a chunk of a per-item phase, a per-batch
phase, and recording a phase's success or failure (which moves the batch on)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from orchestrator.classify import ErrorClass, backoff_delay
from orchestrator.config import runtime
from orchestrator.decide import PhaseEvent, RetryMode, phase_target, retry_mode
from orchestrator.insights.sla import sla_review
from orchestrator.masking import mask_error
from orchestrator.models import Batch, ChunkRun, OutboxEvent, PhaseRun, StateTransition
from orchestrator.observability import spans
from orchestrator.selectors import pipeline_plan
from orchestrator.services.events import emit, outbox_event
from orchestrator.services.execution import (
    MAX_ERROR,
    BatchHandlerResult,
    DependencyOpen,
    PhaseRef,
    batch_facts,
    fail_pending,
    record_chunk,
    run_batch_handler,
    run_items,
)
from orchestrator.services.leases import (
    HEARTBEAT,
    Claim,
    LeaseHandle,
    lease_extend,
    lease_release,
    lease_take,
    owner_name,
)
from orchestrator.services.progress import advance, lock_batch, save_batch
from orchestrator.states import BatchState, PhaseState
from orchestrator.workflows import send_chunks, send_phase_complete


@dataclass(frozen=True)
class RunningPhase:
    batch: Batch
    phase: PhaseRef
    attempt: int
    started_at: datetime | None


def _running_phase(phase_run_id: int, phase_attempt: int = 0) -> RunningPhase | None:
    """The phase (with its batch) if it is running at `phase_attempt` (0: any), else None:
    one primary-key read."""
    row = (
        PhaseRun.objects.filter(id=phase_run_id)
        .values_list("state", "batch_id", "name", "handler", "attempts", "started_at", "batch__state")
        .first()
    )
    if row is None:
        return None
    state, batch_id, name, handler, attempts, started_at, batch_state = row
    if state != PhaseState.RUNNING or batch_state != BatchState.RUNNING:
        return None
    if phase_attempt and attempts != phase_attempt:
        return None
    ref = PhaseRef(id=phase_run_id, name=name, handler=handler)
    return RunningPhase(batch_facts(batch_id), ref, attempts, started_at)


class RetryChunk(Exception):
    """Try the chunk again in `delay` seconds: items failed transiently, or the breaker
    of its dependency is open (`attempt_used` False: waiting is not an attempt)."""

    def __init__(self, delay: float, reason: str, *, attempt_used: bool, waiting_on: str = "") -> None:
        super().__init__(reason)
        self.delay, self.reason, self.attempt_used, self.waiting_on = delay, reason, attempt_used, waiting_on


def retry_policy(spec_retry: Mapping[str, Any], *, tenant_id: int) -> dict[str, float]:
    """A phase's retry policy: its definition's, else the runtime settings (the tenant's own)."""
    return {
        "max_attempts": spec_retry.get("max_attempts", runtime("retry_max_attempts", tenant=tenant_id)),
        "base": spec_retry.get("base", runtime("retry_base_seconds", tenant=tenant_id)),
        "cap": spec_retry.get("cap", runtime("retry_cap_seconds", tenant=tenant_id)),
        "jitter": spec_retry.get("jitter", runtime("retry_jitter", tenant=tenant_id)),
    }


def wait_limit(batch: Batch, phase_started_at: datetime | None) -> datetime:
    """Until when work may wait for a dependency: the batch's deadline, else
    `BOS_MAX_WAIT_SECONDS` after its phase started. Bounded by time, never by a count."""
    if batch.deadline is not None:
        return batch.deadline
    return (phase_started_at or timezone.now()) + timedelta(
        seconds=runtime("max_wait_seconds", tenant=batch.tenant_id)
    )


def _hold_for_retry(*, phase_run_id: int, start: int, owner: str, delay: float) -> None:
    """A retry by countdown comes back to its lease (same task id): keep it until then. A
    longer wait is stored and sent by beat as a new task: give the lease up for it."""
    if retry_mode(delay, max_countdown=runtime("max_countdown_seconds")) == RetryMode.DEFER:
        lease_release(phase_run_id=phase_run_id, start=start, owner=owner)
    else:
        lease_extend(phase_run_id=phase_run_id, start=start, owner=owner, seconds=delay)


def _wait_or_give_up(
    exc: DependencyOpen, running: RunningPhase, *, start: int, owner: str, now: datetime | None
) -> str:
    """Wait for an open breaker — raise `RetryChunk`, using up no attempt — until
    `wait_limit`; past it, return why the work gives up."""
    limit = wait_limit(running.batch, running.started_at)
    if (now or timezone.now()) >= limit:
        return f"waited for {exc.dependency} until {limit.isoformat()} (its circuit breaker stayed open)"
    delay = max(exc.seconds, 1.0)
    _hold_for_retry(phase_run_id=running.phase.id, start=start, owner=owner, delay=delay)
    raise RetryChunk(delay, str(exc), attempt_used=False, waiting_on=exc.dependency) from exc


def _backoff(running: RunningPhase, attempt: int) -> float | None:
    """The wait before the next attempt by the phase's retry policy; None after the last."""
    policy = retry_policy(
        pipeline_plan(running.batch.pipeline_version).phase(running.phase.name).retry,
        tenant_id=running.batch.tenant_id,
    )
    if attempt >= policy["max_attempts"]:
        return None
    return backoff_delay(
        attempt, base=policy["base"], cap=policy["cap"], jitter=policy["jitter"], rand=random.random()
    )


def phase_chunk_run(
    *,
    phase_run_id: int,
    start: int,
    end: int,
    attempt: int = 1,
    phase_attempt: int = 0,
    task_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, int]:
    """Run a per-item phase's handler over items [start, end) and record the results.

    Claim before effect: the chunk's lease is taken first, so a chunk already recorded,
    held by a live worker, or of a phase no longer running at `phase_attempt` (cancelled,
    retried) runs no handler. Items that failed transiently (transient, timeout,
    dependency unavailable) make the whole chunk try again later, with exponential
    backoff and jitter, up to the phase's `max_attempts`; then they are recorded as
    failed with their class. While the breaker of a dependency is open the chunk waits,
    using up no attempt, until `wait_limit`; past it, its items fail. A chunk stopped by
    its soft time limit records what it finished and sends the rest as a new chunk.
    """
    started_at = timezone.now()
    running = _running_phase(phase_run_id, phase_attempt)
    if running is None:
        return {"succeeded": 0, "failed": 0, "skipped": 0, "stale": 1}
    batch, phase = running.batch, running.phase
    owner = owner_name(task_id)
    claim = lease_take(phase_run_id=phase.id, start=start, end=end, attempt=running.attempt, owner=owner)
    if claim != Claim.TAKEN:
        return {"succeeded": 0, "failed": 0, "skipped": 0, claim.value: 1}
    with spans.chunk(batch, phase.name, start, end, attempt) as span:
        summary = _run_leased_chunk(
            running, start=start, end=end, attempt=attempt, owner=owner, started_at=started_at, now=now
        )
        spans.chunk_outcome(span, summary)
    return summary


def _run_leased_chunk(
    running: RunningPhase,
    *,
    start: int,
    end: int,
    attempt: int,
    owner: str,
    started_at: datetime,
    now: datetime | None,
) -> dict[str, int]:
    """The rest of `phase_chunk_run`, once the chunk's lease is taken."""
    batch, phase = running.batch, running.phase
    handle = HEARTBEAT.hold(LeaseHandle(phase.id, start, owner))
    try:
        try:
            outcome = run_items(
                batch=batch, phase=phase, start=start, end=end, should_stop=handle.should_stop
            )
        except DependencyOpen as exc:
            reason = _wait_or_give_up(exc, running, start=start, owner=owner, now=now)
            outcome = fail_pending(batch=batch, start=start, end=end, error=reason)
        if outcome.retryable and not outcome.stopped and (delay := _backoff(running, attempt)) is not None:
            first = outcome.retryable[0]
            _hold_for_retry(phase_run_id=phase.id, start=start, owner=owner, delay=delay)
            raise RetryChunk(
                delay,
                f"{len(outcome.retryable)} item(s) failed ({first[2]}): {first[1][:200]}",
                attempt_used=True,
            )
        if handle.lost:
            # Cancelled, retried or taken over meanwhile: whoever holds it now records it.
            return {"succeeded": 0, "failed": 0, "skipped": 0, "lost": 1}
        recorded = record_chunk(
            phase=phase, start=start, outcome=outcome, started_at=started_at, attempt=running.attempt
        )
    finally:
        HEARTBEAT.drop(handle)
    if not recorded.stored:
        return {**outcome.summary, "duplicate": 1}
    if outcome.end < end:
        # Stopped early by its soft time limit: the rest goes on as a chunk of its own.
        send_chunks(batch, phase.id, ((outcome.end, end),), phase_attempt=running.attempt)
    if recorded.phase_covered:
        send_phase_complete(batch, phase.id, phase_attempt=running.attempt)
    return outcome.summary


def phase_retry_noted(*, phase_run_id: int, delay: float, reason: str, waiting_on: str = "") -> None:
    """Make a chunk's coming retry visible on its phase (API, admin)."""
    PhaseRun.objects.filter(id=phase_run_id).update(
        retries=F("retries") + 1,
        next_retry_at=timezone.now() + timedelta(seconds=delay),
        waiting_on=waiting_on,
        error=reason[:2000],
    )


def phase_batch_run(
    *,
    phase_run_id: int,
    inline: bool = False,
    attempt: int = 1,
    phase_attempt: int = 0,
    task_id: str | None = None,
    now: datetime | None = None,
) -> None:
    """Run a per-batch phase's handler and record its output, or its failure.

    Claims the phase's lease first, like a chunk (`start` 0). A failure of a retryable
    class (transient, timeout, dependency) is tried again with the phase's backoff
    policy, up to its `max_attempts`, before the phase fails. While the breaker of its
    dependency is open it waits, using up no attempt, until `wait_limit`.
    """
    running = _running_phase(phase_run_id, phase_attempt)
    if running is None:
        return
    batch, phase = running.batch, running.phase
    owner = owner_name(task_id)
    if lease_take(phase_run_id=phase.id, start=0, end=0, attempt=running.attempt, owner=owner) != Claim.TAKEN:
        return
    handle = HEARTBEAT.hold(LeaseHandle(phase.id, 0, owner))
    started = timezone.now()
    try:
        try:
            result = run_batch_handler(batch=batch, phase=phase)
        except DependencyOpen as exc:
            reason = _wait_or_give_up(exc, running, start=0, owner=owner, now=now)
            result = BatchHandlerResult(
                error=reason, error_class=ErrorClass.DEPENDENCY_UNAVAILABLE, final=True
            )
        if result.retryable and not result.final and (delay := _backoff(running, attempt)) is not None:
            _hold_for_retry(phase_run_id=phase.id, start=0, owner=owner, delay=delay)
            raise RetryChunk(delay, f"({result.error_class}) {(result.error or '')[:200]}", attempt_used=True)
    finally:
        HEARTBEAT.drop(handle)
    if result.error is not None:
        phase_fail(
            phase_run_id=phase.id,
            error=result.error,
            inline=inline,
            work_started_at=started,
            error_class=result.error_class,
            phase_attempt=running.attempt,
        )
    else:
        phase_complete(
            phase_run_id=phase.id,
            output=result.output,
            inline=inline,
            work_started_at=started,
            phase_attempt=running.attempt,
        )


def _locked_batch_and_phases(phase_run_id: int) -> tuple[Batch, list[PhaseRun], PhaseRun]:
    batch_id = PhaseRun.objects.filter(id=phase_run_id).values_list("batch_id", flat=True).get()
    batch = lock_batch(batch_id)
    phases = list(batch.phases.order_by("position"))
    phase = next(p for p in phases if p.id == phase_run_id)
    return batch, phases, phase


def _is_current(phase: PhaseRun, phase_attempt: int) -> bool:
    """Fencing: only a running phase, at the attempt the caller worked for (0: any)."""
    return phase.state == PhaseState.RUNNING and (not phase_attempt or phase.attempts == phase_attempt)


def phase_complete(
    *,
    phase_run_id: int,
    output: Mapping[str, Any] | None = None,
    inline: bool = False,
    work_started_at: datetime | None = None,
    phase_attempt: int = 0,
) -> None:
    """running → succeeded for a phase, then start what is ready or finish the batch.

    Claimed under the batch lock: delivered twice, the second call does nothing; from an
    attempt that is not the phase's current one (a leftover chord), it does nothing. A
    per-item phase completes only once its chunk records cover all its items.
    """
    now = timezone.now()
    with transaction.atomic():
        batch, phases, phase = _locked_batch_and_phases(phase_run_id)
        if not _is_current(phase, phase_attempt):
            return
        if phase.mode == "per_item":
            totals = ChunkRun.objects.filter(phase_run_id=phase.id).aggregate(
                failed=Sum("failed"), covered=Sum(F("end") - F("start"))
            )
            if (totals["covered"] or 0) < phase.items_total:
                # An early or duplicate callback (a re-sent chord): the rest is still coming.
                return
            phase.items_failed = totals["failed"] or 0
        phase.output = dict(output) if output is not None else None
        # A note left by a retry on the way is not the error of a phase that succeeded.
        phase.error, phase.error_class = "", ""
        _end_phase(
            batch,
            phase,
            phase_target(phase.state, PhaseEvent.COMPLETE),
            now,
            work_started_at,
            ["output", "items_failed"],
        )
        data = {"phase": phase.name, "items_failed": phase.items_failed}
        _move_on(
            batch,
            phases,
            outbox_event(batch=batch, event_type="batch.phase_completed", at=now, data=data),
            now,
            inline,
        )


def phase_fail(
    *,
    phase_run_id: int,
    error: str,
    inline: bool = False,
    work_started_at: datetime | None = None,
    error_class: str = "",
    phase_attempt: int = 0,
) -> None:
    """running → failed for a phase; the batch fails once nothing else is running.

    Fenced like `phase_complete`: a failure reported for another attempt changes nothing.
    """
    now = timezone.now()
    with transaction.atomic():
        batch, phases, phase = _locked_batch_and_phases(phase_run_id)
        if not _is_current(phase, phase_attempt):
            return
        phase.error, phase.error_class = mask_error(error)[: MAX_ERROR * 4], error_class
        _end_phase(batch, phase, phase_target(phase.state, PhaseEvent.FAIL), now, work_started_at, [])
        data = {"phase": phase.name, "error": phase.error[:500]}
        _move_on(
            batch,
            phases,
            outbox_event(batch=batch, event_type="batch.phase_failed", at=now, data=data),
            now,
            inline,
        )


def _end_phase(
    batch: Batch,
    phase: PhaseRun,
    state: PhaseState,
    now: datetime,
    work_started_at: datetime | None,
    fields: list[str],
) -> None:
    """Record how a running phase ended (and its span); it no longer waits for any retry."""
    phase.state, phase.finished_at = state, now
    phase.work_started_at = phase.work_started_at or work_started_at
    phase.next_retry_at, phase.waiting_on = None, ""
    phase.save(
        update_fields=[
            "state",
            "finished_at",
            "work_started_at",
            "next_retry_at",
            "waiting_on",
            "error",
            "error_class",
            *fields,
        ]
    )
    spans.phase_ended(batch, phase)


def _move_on(batch: Batch, phases: list[PhaseRun], event: OutboxEvent, now: datetime, inline: bool) -> None:
    """After a phase ended (batch locked): review its SLA, start what is ready or finish,
    and publish. The SLA events come first: a deadline passed is news before the batch's end."""
    events = [event, *sla_review(batch, phases, now=now)]
    audit: list[StateTransition] = []
    if batch.state == BatchState.RUNNING:
        events += advance(batch, phases, now=now, audit=audit, inline=inline)
        save_batch(batch, audit)
    emit(events)
