"""Moving a running batch forward: start what is ready, skip what must be skipped, run
small batches inline, finish the batch when nothing is left.

Called by the services that change a phase (start, complete, fail, retry) with the batch
row locked, so two phases finishing at once see each other and exactly one of them
starts what depended on both.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from orchestrator.config import flag_enabled
from orchestrator.decide import (
    BatchView,
    BeginRollback,
    FailPhase,
    FinishBatch,
    NotifyParent,
    PhaseEvent,
    PhaseView,
    SkipPhase,
    StartPhases,
    decide_next,
    phase_sources,
    phase_target,
)
from orchestrator.errors import NotFound
from orchestrator.models import Batch, BatchItem, OutboxEvent, PhaseRun, StateTransition
from orchestrator.observability import spans
from orchestrator.pipelines import PipelinePlan
from orchestrator.selectors import pipeline_plan
from orchestrator.services.events import ORCHESTRATOR, outbox_event, transition
from orchestrator.services.execution import (
    DependencyOpen,
    ItemRow,
    load_items,
    record_chunk,
    run_batch_handler,
    run_items,
)
from orchestrator.states import SETTLED_STATES, BatchState, ItemState, PhaseState
from orchestrator.workflows import (
    CHILD_FINISHED_TASK,
    PhaseDispatch,
    dispatch_phase,
    enqueue_orchestration,
    runs_here,
)


def lock_batch(batch_id: Any) -> Batch:
    try:
        return (
            Batch.objects.select_for_update(of=("self",))
            .select_related("tenant", "pipeline_version__pipeline")
            .get(id=batch_id)
        )
    except (Batch.DoesNotExist, ValueError) as exc:
        raise NotFound("batch_not_found", f"batch {batch_id} does not exist") from exc


def save_batch(batch: Batch, audit: list[StateTransition]) -> None:
    batch.save()
    StateTransition.objects.bulk_create(audit)


def advance(
    batch: Batch,
    phases: list[PhaseRun],
    *,
    now: datetime,
    audit: list[StateTransition],
    inline: bool = False,
) -> list[OutboxEvent]:
    """Record what `decide_next` says: start or skip what is ready, or finish the batch.

    A ready phase whose `when` condition is false is skipped (and the phases after it,
    per their trigger). With `inline` (the caller is an orchestration task), a small
    batch — at most `BOS_INLINE_MAX_ITEMS` items — runs its ready phases right here
    instead of fanning them out: a fan-out costs more than so little work. States,
    history and events are the same either way. Sub-pipelines are always dispatched.
    """
    plan = pipeline_plan(batch.pipeline_version)
    events: list[OutboxEvent] = []
    items: list[ItemRow] | None = None
    by_name = {p.name: p for p in phases}
    while True:
        decision = decide_next(_view(batch, plan, phases))
        to_start: list[PhaseRun] = []
        for effect in decision.effects:
            if isinstance(effect, SkipPhase):
                _skip(batch, by_name[effect.phase], effect.reason, now, events)
            elif isinstance(effect, FailPhase):
                _fail_condition(batch, by_name[effect.phase], effect.error, now, events)
            elif isinstance(effect, StartPhases):
                to_start = _start(batch, [by_name[name] for name in effect.phases], now, events)
            elif isinstance(effect, FinishBatch):
                events += _finish(batch, phases, effect, now=now, audit=audit)
            elif isinstance(effect, BeginRollback):
                from orchestrator.services.rollback import begin_rollback

                events += begin_rollback(
                    batch, phases, actor=ORCHESTRATOR, reason=effect.reason, audit=audit, now=now
                )
            elif isinstance(effect, NotifyParent):
                transaction.on_commit(partial(notify_parent, batch))
        if not to_start:
            return events
        # The sender's choice: fan the phases out to the workers, or run them right here.
        dispatched = [p for p in to_start if not runs_here(batch, p.mode, inline=inline)]
        if dispatched:
            _dispatch(batch, dispatched)
        here = [p for p in to_start if p not in dispatched]
        if not here:
            return events
        items = load_items(batch.id, 0, batch.items_total) if items is None else items
        fallback = []
        for phase in here:
            event = _run_phase_inline(batch, phase, items)
            if event is None:
                fallback.append(phase)  # stays running; its tasks will retry it
                continue
            events.append(event)
            # One save per phase: bulk_update's CASE expressions cost more to build.
            phase.save(update_fields=INLINE_FIELDS)
            spans.phase_ended(batch, phase)
        if fallback:
            # The inline run was their first try: their tasks go on from the second.
            PhaseRun.objects.filter(id__in=[p.id for p in fallback]).update(retries=F("retries") + 1)
            _dispatch(batch, fallback, attempt=2)
        now = timezone.now()


def _view(batch: Batch, plan: PipelinePlan, phases: list[PhaseRun]) -> BatchView:
    return BatchView(
        phases=tuple(
            PhaseView(p.name, PhaseState(p.state), p.mode, p.items_failed, p.output) for p in phases
        ),
        dependencies=plan.dependencies,
        triggers={spec.name: spec.trigger for spec in plan.phases},
        conditions={spec.name: spec.when for spec in plan.phases},
        condition_names=partial(_condition_names, batch),
        on_failure=plan.on_failure,
        has_parent=batch.parent_phase_id is not None,
    )


def _condition_names(batch: Batch, phases: Mapping[str, PhaseView]) -> dict[str, Any]:
    failed = sum(p.items_failed for p in phases.values() if p.mode == "per_item")
    pipeline = batch.pipeline_version.pipeline.name
    return {
        "flag": partial(flag_enabled, batch_id=str(batch.id), tenant=batch.tenant.slug, pipeline=pipeline),
        "metadata": batch.metadata,
        "batch": {
            "priority": batch.priority,
            "tenant": batch.tenant.slug,
            "external_id": batch.external_id,
            "pipeline": pipeline,
            "items_total": batch.items_total,
        },
        "items": {"total": batch.items_total, "failed": failed, "ok": batch.items_total - failed},
        "phases": {
            p.name: {"state": p.state.value, "output": p.output, "items_failed": p.items_failed}
            for p in phases.values()
        },
    }


def _start(
    batch: Batch, to_start: list[PhaseRun], now: datetime, events: list[OutboxEvent]
) -> list[PhaseRun]:
    """Mark the phases `decide_next` starts `running`, a new attempt each."""
    PhaseRun.objects.filter(
        id__in=[p.id for p in to_start], state__in=phase_sources(PhaseEvent.START)
    ).update(
        state=phase_target(PhaseState.PENDING, PhaseEvent.START),
        started_at=now,
        work_started_at=None,
        finished_at=None,
        error="",
        attempts=F("attempts") + 1,
    )
    for phase in to_start:
        phase.state = phase_target(phase.state, PhaseEvent.START)
        phase.started_at, phase.work_started_at = now, None
        phase.attempts += 1
        events.append(
            outbox_event(batch=batch, event_type="batch.phase_started", at=now, data={"phase": phase.name})
        )
    return to_start


def _skip(batch: Batch, phase: PhaseRun, reason: str, now: datetime, events: list[OutboxEvent]) -> None:
    phase.state = phase_target(phase.state, PhaseEvent.SKIP)
    phase.skip_reason, phase.finished_at = reason[:500], now
    phase.save(update_fields=["state", "skip_reason", "finished_at"])
    spans.phase_ended(batch, phase)
    data = {"phase": phase.name, "reason": reason[:500]}
    events.append(outbox_event(batch=batch, event_type="batch.phase_skipped", at=now, data=data))


def _fail_condition(
    batch: Batch, phase: PhaseRun, error: str, now: datetime, events: list[OutboxEvent]
) -> None:
    phase.state = phase_target(phase.state, PhaseEvent.FAIL)
    phase.started_at, phase.finished_at = now, now
    phase.error = error[:2000]
    phase.save(update_fields=["state", "started_at", "finished_at", "error"])
    spans.phase_ended(batch, phase)
    data = {"phase": phase.name, "error": phase.error[:500]}
    events.append(outbox_event(batch=batch, event_type="batch.phase_failed", at=now, data=data))


INLINE_FIELDS = [
    "state",
    "error_class",
    "started_at",
    "work_started_at",
    "finished_at",
    "output",
    "error",
    "items_done",
    "items_failed",
    "chunks_done",
    "chunks_total",
]


def _run_phase_inline(batch: Batch, phase: PhaseRun, items: list[ItemRow]) -> OutboxEvent | None:
    """Run a whole phase in this transaction; its outcome is set on `phase`, unsaved.

    `items` are the batch's items, loaded once for the whole inline run; the states of
    those this phase fails are updated in it, so later phases skip them. Returns None,
    recording nothing, when items failed transiently or the dependency's breaker is
    open: the phase is then dispatched, so its chunk task retries with backoff.
    """
    started = phase.work_started_at = timezone.now()
    output: dict[str, Any] | None = None
    error: str | None = None
    if phase.mode == "per_item":
        try:
            outcome = run_items(batch=batch, phase=phase, start=0, end=batch.items_total, items=items)
        except DependencyOpen:
            return None
        if outcome.retryable:
            return None
        record_chunk(
            phase=phase,
            start=0,
            outcome=outcome,
            started_at=started,
            attempt=phase.attempts,
            count_progress=False,
        )
        failed = {item_id for item_id, _, _ in outcome.failures}
        items[:] = [(i, k, p, ItemState.FAILED if i in failed else s) for i, k, p, s in items]
        phase.items_done, phase.items_failed = outcome.items, len(outcome.failures)
        phase.chunks_done = phase.chunks_total = 1
    else:
        result = run_batch_handler(batch=batch, phase=phase)
        if result.retryable:
            return None  # its task will retry it with backoff
        output, error = result.output, result.error
        phase.error_class = result.error_class
    phase.finished_at = timezone.now()
    phase.state = phase_target(phase.state, PhaseEvent.FAIL if error else PhaseEvent.COMPLETE)
    phase.output = output
    phase.error = error or ""
    data: dict[str, Any]
    if error:
        data = {"phase": phase.name, "error": error[:500]}
        return outbox_event(batch=batch, event_type="batch.phase_failed", at=phase.finished_at, data=data)
    data = {"phase": phase.name, "items_failed": phase.items_failed}
    return outbox_event(batch=batch, event_type="batch.phase_completed", at=phase.finished_at, data=data)


def _finish(
    batch: Batch,
    phases: list[PhaseRun],
    finish: FinishBatch,
    *,
    now: datetime,
    audit: list[StateTransition],
) -> list[OutboxEvent]:
    outcome, items_failed = finish.outcome, finish.items_failed
    if outcome != BatchState.FAILED:
        # Its items' states follow right after the commit, outside the batch lock: O(items)
        # writes are no part of a transition (readers see them as succeeded meanwhile).
        transaction.on_commit(
            partial(settle_items, batch_id=batch.id, transitions_count=batch.transitions_count + 1)
        )
    batch.items_failed = items_failed
    batch.items_succeeded = batch.items_total - items_failed if outcome != BatchState.FAILED else 0
    batch.report = {p.name: p.output for p in phases if p.mode != "per_item" and p.output is not None}
    reason = finish.reason
    if finish.failed_phase:
        batch.error = next(p for p in phases if p.name == finish.failed_phase).error
        reason = f"{reason}: {batch.error[:200]}"
    audit.append(
        transition(batch, to=outcome, actor=ORCHESTRATOR, reason=reason, phase=finish.failed_phase, at=now)
    )
    return [outbox_event(batch=batch, event_type=f"batch.{outcome.value}", at=now)]


def settle_items(*, batch_id: Any, transitions_count: int | None = None) -> int:
    """Mark the pending items of a batch that completed `succeeded`; how many.

    Fenced by the batch's history: only while it is still completed (with errors) at the
    transition that ended it (`transitions_count`; None: whichever), so a retry or a rewind
    that reopened it meanwhile is never overwritten. `bos_check --repair` settles a batch
    whose settling was lost with its process.
    """
    done = Batch.objects.filter(id=batch_id, state__in=SETTLED_STATES)
    if transitions_count is not None:
        done = done.filter(transitions_count=transitions_count)
    if not done.exists():
        return 0
    return BatchItem.objects.filter(batch_id=batch_id, state=ItemState.PENDING).update(
        state=ItemState.SUCCEEDED
    )


def notify_parent(child: Batch) -> None:
    """Tell the parent of a child batch that the child has ended (after commit)."""
    enqueue_orchestration(CHILD_FINISHED_TASK, (str(child.id),), child)


def _dispatch(batch: Batch, phases: list[PhaseRun], attempt: int = 1) -> None:
    dispatch = [PhaseDispatch.of(batch, p, attempt=attempt) for p in phases]
    transaction.on_commit(partial(_enqueue_phases, dispatch))


def _enqueue_phases(dispatch: list[PhaseDispatch]) -> None:
    for phase in dispatch:
        dispatch_phase(phase)
