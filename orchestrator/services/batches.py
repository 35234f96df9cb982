"""Services that create and steer batches: create, start, cancel, retry, finish."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from orchestrator.errors import Conflict, InvalidRequest, NotFound
from orchestrator.models import (
    Batch,
    BatchItem,
    OutboxEvent,
    PhaseRun,
    ProcessedEvent,
    StateTransition,
    Tenant,
)
from orchestrator.pipelines import chunk_bounds
from orchestrator.selectors import pipeline_plan, resolve_pipeline_version
from orchestrator.services.bulk import copy_items
from orchestrator.services.events import emit, outbox_event, transition
from orchestrator.services.execution import ItemRow, load_items, record_chunk, run_batch_handler, run_items
from orchestrator.states import (
    BatchState,
    ItemState,
    PhaseState,
    TransitionNotAllowed,
    batch_outcome,
    ready_phases,
)

logger = logging.getLogger(__name__)
ORCHESTRATOR = "orchestrator"


@dataclass(frozen=True)
class BatchRequest:
    """A validated request for a batch, from Kafka or REST."""

    tenant: str
    external_id: str
    pipeline: str
    items: Sequence[dict[str, Any]]
    pipeline_version: int | None = None
    priority: int = 5
    deadline: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    correlation_id: str = ""


@dataclass(frozen=True)
class BatchCreateResult:
    batch: Batch
    created: bool


def _check_request(request: BatchRequest) -> None:
    if not request.items:
        raise InvalidRequest("no_items", "a batch needs at least one item")
    if len(request.items) > settings.BOS_MAX_ITEMS:
        raise InvalidRequest(
            "too_many_items",
            f"{len(request.items)} items; at most {settings.BOS_MAX_ITEMS} are allowed",
        )
    keys = [item["key"] for item in request.items]
    if len(set(keys)) != len(keys):
        raise InvalidRequest("duplicate_item_key", "item keys must be unique within a batch")
    if not 0 <= request.priority <= 9:
        raise InvalidRequest("invalid_priority", "priority must be between 0 and 9")


def _claim_event(event_id: str, event_type: str, tenant: Tenant, batch_id: Any) -> bool:
    """Record an inbound event id; False when it was already processed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO orchestrator_processedevent (event_id, event_type, tenant_id, batch_id, processed_at)"
            " VALUES (%s, %s, %s, %s, now()) ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            [event_id, event_type, tenant.id, batch_id],
        )
        return cursor.fetchone() is not None


def _existing_for_event(event_id: str) -> Batch | None:
    row = ProcessedEvent.objects.filter(event_id=event_id).select_related("batch").first()
    return row.batch if row else None


def batch_create(*, request: BatchRequest, actor: str, event_id: str | None = None) -> BatchCreateResult:
    """Store a batch with its items and phases, accept it, and start it after commit.

    Idempotent: the same `event_id`, or the same (tenant, external_id), returns the
    batch that exists and creates nothing.
    """
    _check_request(request)
    version = resolve_pipeline_version(request.pipeline, request.pipeline_version)
    plan = pipeline_plan(version)
    now = timezone.now()
    with transaction.atomic():
        tenant, _ = Tenant.objects.get_or_create(slug=request.tenant)
        batch = Batch(
            tenant=tenant,
            external_id=request.external_id,
            pipeline_version=version,
            priority=request.priority,
            deadline=request.deadline,
            metadata=request.metadata,
            correlation_id=request.correlation_id,
            items_total=len(request.items),
            state="",
        )
        # The event row names the batch before the batch row exists: foreign keys are
        # checked at commit (Django makes them DEFERRABLE INITIALLY DEFERRED).
        if event_id and not _claim_event(event_id, "batch.requested", tenant, batch.id):
            existing = _existing_for_event(event_id)
            if existing is not None:
                return BatchCreateResult(existing, False)
        audit = [
            transition(batch, to=BatchState.RECEIVED, actor=actor, reason="requested", at=now),
            transition(batch, to=BatchState.ACCEPTED, actor=ORCHESTRATOR, reason="pipeline planned", at=now),
        ]
        try:
            with transaction.atomic():
                batch.save(force_insert=True)
        except IntegrityError:
            existing = Batch.objects.select_related("tenant", "pipeline_version__pipeline").get(
                tenant=tenant, external_id=request.external_id
            )
            if event_id:
                ProcessedEvent.objects.filter(event_id=event_id).update(batch=existing)
            return BatchCreateResult(existing, False)
        copy_items(batch_id=batch.id, tenant_id=tenant.id, items=request.items)
        PhaseRun.objects.bulk_create(
            [
                PhaseRun(
                    batch_id=batch.id,
                    tenant_id=tenant.id,
                    name=spec.name,
                    handler=spec.handler,
                    mode=spec.mode,
                    position=position,
                    items_total=batch.items_total if spec.mode == "per_item" else 0,
                    chunk_size=chunk_size,
                    chunks_total=len(chunk_bounds(batch.items_total, chunk_size))
                    if spec.mode == "per_item"
                    else 1,
                )
                for position, spec in enumerate(plan.phases)
                for chunk_size in [spec.chunk_size or settings.BOS_CHUNK_SIZE]
            ]
        )
        StateTransition.objects.bulk_create(audit)
        emit([outbox_event(batch=batch, event_type="batch.accepted", at=now)])
        batch_id = batch.id
        transaction.on_commit(lambda: _enqueue_start(batch_id))
    logger.info(
        "batch created",
        extra={"batch_id": str(batch.id), "tenant": tenant.slug, "external_id": batch.external_id},
    )
    return BatchCreateResult(batch, True)


def _enqueue_start(batch_id: Any) -> None:
    from tasks.orchestration import batch_start_task

    batch_start_task.delay(str(batch_id))


def lock_batch(batch_id: Any) -> Batch:
    try:
        return (
            Batch.objects.select_for_update(of=("self",))
            .select_related("tenant", "pipeline_version__pipeline")
            .get(id=batch_id)
        )
    except (Batch.DoesNotExist, ValueError) as exc:
        raise NotFound("batch_not_found", f"batch {batch_id} does not exist") from exc


def batch_start(*, batch_id: Any, inline: bool = False) -> None:
    """accepted → running, and dispatch the phases that can start. Idempotent."""
    now = timezone.now()
    with transaction.atomic():
        batch = lock_batch(batch_id)
        if batch.state != BatchState.ACCEPTED:
            return
        audit = [transition(batch, to=BatchState.RUNNING, actor=ORCHESTRATOR, reason="started", at=now)]
        batch.started_at = now
        phases = list(batch.phases.all())
        events = [outbox_event(batch=batch, event_type="batch.started", at=now)]
        events += advance(batch, phases, now=now, audit=audit, inline=inline)
        save_batch(batch, audit)
        emit(events)


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
    """From the phases' states, start what is ready or finish the batch.

    The caller holds the batch lock, so two phases finishing at once see each other's
    result and exactly one of them starts what depended on both.

    With `inline` (the caller is an orchestration task), a small batch — at most
    `BOS_INLINE_MAX_ITEMS` items — runs its ready phases right here instead of fanning
    them out to other tasks: a fan-out costs more than the work. The states, history
    and events are the same either way.
    """
    events: list[OutboxEvent] = []
    run_here = inline and batch.items_total <= settings.BOS_INLINE_MAX_ITEMS
    items: list[ItemRow] | None = None
    while to_start := _ready(batch, phases):
        if not run_here:
            # An inline phase is saved once, when it ends, in this same transaction.
            PhaseRun.objects.filter(id__in=[p.id for p in to_start], state=PhaseState.PENDING).update(
                state=PhaseState.RUNNING, started_at=now, finished_at=None, error=""
            )
        for phase in to_start:
            phase.state = PhaseState.RUNNING
            phase.started_at = now
            events.append(
                outbox_event(
                    batch=batch, event_type="batch.phase_started", at=now, data={"phase": phase.name}
                )
            )
        if not run_here:
            dispatch = [(p.id, p.mode, p.items_total, p.chunk_size) for p in to_start]
            transaction.on_commit(partial(_enqueue_phases, dispatch))
            break
        items = load_items(batch.id, 0, batch.items_total) if items is None else items
        for phase in to_start:
            events.append(_run_phase_inline(batch, phase, items))
            # One save per phase: bulk_update's CASE expressions cost more to build.
            phase.save(update_fields=INLINE_FIELDS)
        now = timezone.now()
    items_failed = BatchItem.objects.filter(batch_id=batch.id, state=ItemState.FAILED).count()
    outcome = batch_outcome({p.name: PhaseState(p.state) for p in phases}, items_failed)
    if outcome is not None:
        events += _finish(batch, phases, outcome, items_failed=items_failed, now=now, audit=audit)
    return events


def _ready(batch: Batch, phases: list[PhaseRun]) -> list[PhaseRun]:
    """Phases that can start now; none once a phase has failed."""
    states = {p.name: PhaseState(p.state) for p in phases}
    if PhaseState.FAILED in states.values():
        return []
    ready = ready_phases(pipeline_plan(batch.pipeline_version).dependencies, states)
    return [p for p in phases if p.name in ready]


INLINE_FIELDS = [
    "state",
    "started_at",
    "finished_at",
    "output",
    "error",
    "items_done",
    "items_failed",
    "chunks_done",
    "chunks_total",
]


def _run_phase_inline(batch: Batch, phase: PhaseRun, items: list[ItemRow]) -> OutboxEvent:
    """Run a whole phase in this transaction; its outcome is set on `phase`, unsaved.

    `items` are the batch's items, loaded once for the whole inline run; the states of
    those this phase fails are updated in it, so later phases skip them.
    """
    started = timezone.now()
    output: dict[str, Any] | None = None
    error: str | None = None
    if phase.mode == "per_item":
        outcome = run_items(batch=batch, phase=phase, start=0, end=batch.items_total, items=items)
        record_chunk(
            phase=phase,
            start=0,
            end=batch.items_total,
            outcome=outcome,
            started_at=started,
            count_progress=False,
        )
        failed = {item_id for item_id, _ in outcome.failures}
        items[:] = [(i, k, p, ItemState.FAILED if i in failed else s) for i, k, p, s in items]
        phase.items_done, phase.items_failed = outcome.items, len(outcome.failures)
        phase.chunks_done = phase.chunks_total = 1
    else:
        output, error = run_batch_handler(batch=batch, phase=phase)
    phase.finished_at = timezone.now()
    phase.state = PhaseState.FAILED if error else PhaseState.SUCCEEDED
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
    outcome: BatchState,
    *,
    items_failed: int,
    now: datetime,
    audit: list[StateTransition],
) -> list[Any]:
    if outcome != BatchState.FAILED:
        BatchItem.objects.filter(batch_id=batch.id, state=ItemState.PENDING).update(state=ItemState.SUCCEEDED)
    batch.items_failed = items_failed
    batch.items_succeeded = batch.items_total - items_failed if outcome != BatchState.FAILED else 0
    batch.report = {p.name: p.output for p in phases if p.mode == "per_batch" and p.output is not None}
    failed = [p for p in phases if p.state == PhaseState.FAILED]
    reason = f"phase {failed[0].name} failed: {failed[0].error[:200]}" if failed else "all phases done"
    if failed:
        batch.error = failed[0].error
    audit.append(
        transition(
            batch,
            to=outcome,
            actor=ORCHESTRATOR,
            reason=reason,
            phase=failed[0].name if failed else "",
            at=now,
        )
    )
    return [outbox_event(batch=batch, event_type=f"batch.{outcome.value}", at=now)]


def _enqueue_phases(dispatch: list[tuple[int, str, int, int]]) -> None:
    from orchestrator.workflows import dispatch_phase

    for phase_run_id, mode, items_total, chunk_size in dispatch:
        dispatch_phase(phase_run_id=phase_run_id, mode=mode, items_total=items_total, chunk_size=chunk_size)


def batch_cancel(*, batch_id: Any, actor: str, reason: str = "") -> Batch:
    """Cancel a batch that has not ended; its pending and running phases are cancelled."""
    now = timezone.now()
    with transaction.atomic():
        batch = lock_batch(batch_id)
        try:
            audit = [
                transition(
                    batch, to=BatchState.CANCELLED, actor=actor, reason=reason or "cancel requested", at=now
                )
            ]
        except TransitionNotAllowed as exc:
            raise Conflict(
                "invalid_state", f"a {batch.state} batch cannot be cancelled", state=batch.state
            ) from exc
        PhaseRun.objects.filter(batch_id=batch.id, state__in=[PhaseState.PENDING, PhaseState.RUNNING]).update(
            state=PhaseState.CANCELLED, finished_at=now
        )
        save_batch(batch, audit)
        emit([outbox_event(batch=batch, event_type="batch.cancelled", at=now)])
    return batch


def batch_retry(*, batch_id: Any, actor: str, reason: str = "") -> Batch:
    """Resume a failed batch: its failed phases run again, finished work is kept."""
    now = timezone.now()
    with transaction.atomic():
        batch = lock_batch(batch_id)
        if batch.state != BatchState.FAILED:
            raise Conflict("invalid_state", f"only a failed batch can be retried; this one is {batch.state}")
        try:
            audit = [
                transition(
                    batch, to=BatchState.RUNNING, actor=actor, reason=reason or "retry requested", at=now
                )
            ]
        except TransitionNotAllowed as exc:
            raise Conflict(
                "invalid_state", f"a {batch.state} batch cannot be retried", state=batch.state
            ) from exc
        PhaseRun.objects.filter(
            batch_id=batch.id, state__in=[PhaseState.FAILED, PhaseState.CANCELLED]
        ).update(state=PhaseState.PENDING, error="")
        batch.error = ""
        phases = list(batch.phases.all())
        events = [outbox_event(batch=batch, event_type="batch.retried", at=now)]
        events += advance(batch, phases, now=now, audit=audit)
        save_batch(batch, audit)
        emit(events)
    return batch
