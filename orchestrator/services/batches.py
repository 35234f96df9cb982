"""Services that create and steer batches: create, start, cancel, retry."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from orchestrator import audit
from orchestrator.audit.operations import as_actor, audited_batch_operation, mark_recorded
from orchestrator.config import runtime
from orchestrator.decide import PhaseEvent, phase_sources, phase_target
from orchestrator.errors import Conflict, InvalidRequest, OrchestrationError
from orchestrator.models import (
    Batch,
    BatchItem,
    ChunkRun,
    ItemResult,
    PhaseRun,
    PipelineVersion,
    ProcessedEvent,
    StateTransition,
    Tenant,
)
from orchestrator.observability import tracing
from orchestrator.pipelines import PipelinePlan, chunk_bounds
from orchestrator.selectors import pipeline_plan, resolve_pipeline_version, tenant_id_of
from orchestrator.services.bulk import copy_items
from orchestrator.services.events import ORCHESTRATOR, emit, outbox_event, transition
from orchestrator.services.progress import advance, lock_batch, notify_parent, save_batch
from orchestrator.services.retention import refuse_past_retention
from orchestrator.states import BATCH_TERMINAL, BatchState, ItemState, PhaseState, TransitionNotAllowed
from orchestrator.workflows import BATCH_START_TASK, enqueue_orchestration

logger = logging.getLogger(__name__)


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
    # The W3C traceparent of the span that took the request in ('' : the current span's).
    traceparent: str = ""


@dataclass(frozen=True)
class BatchCreateResult:
    batch: Batch
    created: bool


def _check_request(request: BatchRequest) -> None:
    if not request.items:
        raise InvalidRequest("no_items", "a batch needs at least one item")
    if len(request.items) > runtime("max_items", tenant=request.tenant):
        raise InvalidRequest(
            "too_many_items",
            f"{len(request.items)} items; at most {runtime('max_items', tenant=request.tenant)} are allowed",
        )
    keys = [item["key"] for item in request.items]
    if len(set(keys)) != len(keys):
        raise InvalidRequest("duplicate_item_key", "item keys must be unique within a batch")
    limit = settings.BOS_MAX_ITEM_BYTES
    for item in request.items:
        size = len(json.dumps(item.get("payload"), separators=(",", ":"), ensure_ascii=False).encode())
        if size > limit:
            raise InvalidRequest(
                "item_too_large",
                f"item {str(item['key'])[:100]!r}: its payload is {size} bytes of JSON; at most {limit} are allowed",
            )
    if not 0 <= request.priority <= 9:
        raise InvalidRequest("invalid_priority", "priority must be between 0 and 9")


def claim_events(event_type: str, events: Sequence[tuple[str, int, Any]]) -> set[str]:
    """Record inbound event ids `(event_id, tenant_id, batch_id)` in one statement.

    Returns the ids that were new; the others were already processed.
    """
    if not events:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO orchestrator_processedevent (event_id, event_type, tenant_id, batch_id, processed_at)"
            " SELECT e, %s, t, b, now() FROM unnest(%s::text[], %s::bigint[], %s::uuid[]) AS r(e, t, b)"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            [event_type, [e[0] for e in events], [e[1] for e in events], [e[2] for e in events]],
        )
        return {row[0] for row in cursor.fetchall()}


def _existing_for_event(event_id: str) -> Batch | None:
    row = ProcessedEvent.objects.filter(event_id=event_id).select_related("batch").first()
    return row.batch if row else None


def batch_create(
    *, request: BatchRequest, actor: str, event_id: str | None = None, parent_phase: PhaseRun | None = None
) -> BatchCreateResult:
    """Store a batch with its items and phases, accept it, and start it after commit.

    Idempotent: the same `event_id`, or the same (tenant, external_id), returns the
    batch that exists and creates nothing. Audited `batch.create` (a refusal too).
    """
    who = as_actor(actor)
    try:
        with transaction.atomic():
            result = _batch_create(request=request, actor=actor, event_id=event_id, parent_phase=parent_phase)
            audit.record(
                "batch.create",
                object_type="batch",
                object_id=result.batch.pk,
                tenant=result.batch.tenant_id,
                detail=create_detail(request, created=result.created),
                who=who,
            )
        return result
    except OrchestrationError as exc:
        audit.record(
            "batch.create",
            outcome=audit.Outcome.ERROR,
            object_type="batch",
            object_id=request.external_id,
            tenant=tenant_id_of(request.tenant),
            detail={**create_detail(request, created=False), "code": exc.code, "message": exc.message},
            who=who,
        )
        mark_recorded(exc)
        raise


def create_detail(request: BatchRequest, *, created: bool) -> dict[str, Any]:
    """What the audit log keeps of a batch request (never its payloads or metadata)."""
    return {
        "external_id": request.external_id,
        "pipeline": request.pipeline,
        "items": len(request.items),
        "created": created,
    }


def _batch_create(
    *, request: BatchRequest, actor: str, event_id: str | None, parent_phase: PhaseRun | None
) -> BatchCreateResult:
    _check_request(request)
    version = resolve_pipeline_version(request.pipeline, request.pipeline_version, request.external_id)
    plan = pipeline_plan(version)
    now = timezone.now()
    with transaction.atomic():
        tenant, _ = Tenant.objects.get_or_create(slug=request.tenant)
        batch = new_batch(request, tenant=tenant, version=version, parent_phase=parent_phase)
        # The event row names the batch before the batch row exists: foreign keys are
        # checked at commit (Django makes them DEFERRABLE INITIALLY DEFERRED).
        if event_id and not claim_events("batch.requested", [(event_id, tenant.id, batch.id)]):
            existing = _existing_for_event(event_id)
            if existing is not None:
                return BatchCreateResult(existing, False)
        audit = accepted_audit(batch, actor=actor, at=now)
        try:
            with transaction.atomic():
                batch.save(force_insert=True)
        except IntegrityError:
            existing = Batch.objects.select_related("tenant", "pipeline_version__pipeline").get(
                tenant=tenant, external_id=request.external_id, parent__isnull=True
            )
            if event_id:
                ProcessedEvent.objects.filter(event_id=event_id).update(batch=existing)
            return BatchCreateResult(existing, False)
        copy_items(batch_id=batch.id, tenant_id=tenant.id, items=request.items)
        PhaseRun.objects.bulk_create(phase_runs_for(batch, plan))
        StateTransition.objects.bulk_create(audit)
        emit([outbox_event(batch=batch, event_type="batch.accepted", at=now)])
        transaction.on_commit(partial(send_starts, [batch]))
    logger.info(
        "batch created",
        extra={"batch_id": str(batch.id), "tenant": tenant.slug, "external_id": batch.external_id},
    )
    return BatchCreateResult(batch, True)


def new_batch(
    request: BatchRequest, *, tenant: Tenant, version: PipelineVersion, parent_phase: PhaseRun | None = None
) -> Batch:
    """The unsaved row of a requested batch (its state is set by `accepted_audit`)."""
    return Batch(
        tenant=tenant,
        external_id=request.external_id,
        pipeline_version=version,
        priority=request.priority,
        deadline=request.deadline,
        metadata=request.metadata,
        correlation_id=request.correlation_id,
        traceparent=request.traceparent or tracing.current_traceparent(),
        items_total=len(request.items),
        state="",
        parent_id=parent_phase.batch_id if parent_phase else None,
        parent_phase=parent_phase,
        parent_attempt=parent_phase.attempts if parent_phase else None,
    )


def accepted_audit(batch: Batch, *, actor: str, at: datetime) -> list[StateTransition]:
    """A new batch's first two steps, received → accepted (unsaved rows; the batch moves)."""
    return [
        transition(batch, to=BatchState.RECEIVED, actor=actor, reason="requested", at=at),
        transition(batch, to=BatchState.ACCEPTED, actor=ORCHESTRATOR, reason="pipeline planned", at=at),
    ]


def phase_runs_for(batch: Batch, plan: PipelinePlan) -> list[PhaseRun]:
    """The unsaved phase rows of a new batch, one per phase of its plan."""
    return [
        PhaseRun(
            batch_id=batch.id,
            tenant_id=batch.tenant_id,
            name=spec.name,
            handler=spec.handler,
            mode=spec.mode,
            position=position,
            items_total=batch.items_total if spec.mode == "per_item" else 0,
            chunk_size=chunk_size,
            chunks_total=len(chunk_bounds(batch.items_total, chunk_size)) if spec.mode == "per_item" else 1,
        )
        for position, spec in enumerate(plan.phases)
        for chunk_size in [spec.chunk_size or runtime("chunk_size", tenant=batch.tenant_id)]
    ]


def send_starts(batches: list[Batch]) -> None:
    """Send the starts of batches just committed; a failure leaves them to the reconciler.

    The batches are stored (this runs after commit), so a broker that refuses the send
    must not fail the caller (an API client would see a 500 for a batch that exists; the
    consumer would read the request again and find it done). The first failure stops the
    sending: the broker is down, the rest would wait on it too.
    """
    for n, batch in enumerate(batches):
        try:
            _enqueue_start(batch)
        except Exception as exc:  # noqa: BLE001 - the commit happened; the reconciler starts them
            logger.warning(
                "the start of %d stored batch(es) was not sent (%s: %s); they stay accepted "
                "until the reconciler sends it: %s",
                len(batches) - n,
                type(exc).__name__,
                exc,
                ", ".join(str(b.id) for b in batches[n:]),
            )
            return


def _enqueue_start(batch: Batch) -> None:
    enqueue_orchestration(BATCH_START_TASK, (str(batch.id),), batch)


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


@audited_batch_operation("batch.cancel")
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
        PhaseRun.objects.filter(batch_id=batch.id, state__in=phase_sources(PhaseEvent.CANCEL)).update(
            state=PhaseState.CANCELLED, finished_at=now
        )
        save_batch(batch, audit)
        emit([outbox_event(batch=batch, event_type="batch.cancelled", at=now)])
        if batch.parent_phase_id is not None:
            transaction.on_commit(partial(notify_parent, batch))
        # Sub-pipelines started for this batch are cancelled with it (and theirs, in turn);
        # a child rolling back finishes its rollback (a rollback cannot be cancelled).
        live = batch.children.exclude(state__in=[*BATCH_TERMINAL, BatchState.ROLLING_BACK])
        for child_id in live.values_list("id", flat=True):
            batch_cancel(batch_id=child_id, actor=actor, reason=f"parent batch {batch.id} cancelled")
    return batch


@audited_batch_operation("batch.retry")
def batch_retry(*, batch_id: Any, actor: str, reason: str = "") -> Batch:
    """Resume a failed batch: its failed phases run again, finished work is kept."""
    now = timezone.now()
    with transaction.atomic():
        batch = lock_batch(batch_id)
        if batch.state != BatchState.FAILED:
            raise Conflict("invalid_state", f"only a failed batch can be retried; this one is {batch.state}")
        refuse_past_retention(batch)
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
        # The phases that did not finish run again (a retry reopens failed and cancelled ones).
        PhaseRun.objects.filter(
            batch_id=batch.id,
            state__in=[PhaseState.FAILED, PhaseState.CANCELLED],
        ).update(state=phase_target(PhaseState.FAILED, PhaseEvent.REOPEN), error="")
        batch.error = ""
        phases = list(batch.phases.all())
        events = [outbox_event(batch=batch, event_type="batch.retried", at=now)]
        events += advance(batch, phases, now=now, audit=audit)
        save_batch(batch, audit)
        emit(events)
    return batch


@audited_batch_operation("batch.retry_items")
def batch_retry_items(*, batch_id: Any, actor: str, reason: str = "") -> Batch:
    """Run the failed items of a batch that completed with errors again.

    The phases from the first one any of them failed in onwards run again, for those
    items only (items that succeeded keep their results, and per-batch phases such as
    the report see every item again). Items that fail again end the batch
    `completed_with_errors` once more; the history records who asked and why.
    """
    now = timezone.now()
    with transaction.atomic():
        batch = lock_batch(batch_id)
        if batch.state != BatchState.COMPLETED_WITH_ERRORS:
            raise Conflict(
                "invalid_state",
                f"only a batch completed with errors has failed items to retry; this one is {batch.state}",
            )
        refuse_past_retention(batch)
        failed = BatchItem.objects.filter(batch_id=batch.id, state=ItemState.FAILED)
        failed_phases = set(failed.values_list("failed_phase", flat=True))
        phases = list(batch.phases.all())
        first = min(p.position for p in phases if p.name in failed_phases)
        reopened = [p for p in phases if p.position >= first]
        item_ids = list(failed.values_list("id", flat=True))
        for phase in reopened:
            _reopen_phase(phase, item_ids)
        failed.update(state=ItemState.PENDING, failed_phase="", last_error="", error_class="")
        audit = [
            transition(
                batch, to=BatchState.RUNNING, actor=actor, reason=reason or "retry failed items", at=now
            )
        ]
        batch.items_failed = batch.items_succeeded = 0
        events = [
            outbox_event(batch=batch, event_type="batch.retried", at=now, data={"items": len(item_ids)}),
            *advance(batch, phases, now=now, audit=audit),
        ]
        save_batch(batch, audit)
        emit(events)
    return batch


def _reopen_phase(phase: PhaseRun, item_ids: list[int]) -> None:
    """Make `phase` pending again: the given items' results and every chunk record go.

    Its chunks then run again over all ranges; items that succeeded are skipped (their
    state says so), so only the retried items are worked on and recorded.
    """
    if phase.mode == "per_item":
        ItemResult.objects.filter(phase_run_id=phase.id, item_id__in=item_ids).delete()
        ChunkRun.objects.filter(phase_run_id=phase.id).delete()
        phase.chunks_done = phase.items_done = phase.items_failed = 0
        phase.chunks_total = len(chunk_bounds(phase.items_total, phase.chunk_size))
    phase.state = phase_target(phase.state, PhaseEvent.REOPEN)
    phase.output, phase.error, phase.error_class, phase.skip_reason = None, "", "", ""
    phase.finished_at = None
    phase.save(
        update_fields=[
            "state",
            "output",
            "error",
            "error_class",
            "skip_reason",
            "finished_at",
            "chunks_done",
            "chunks_total",
            "items_done",
            "items_failed",
        ]
    )
