"""Creating many batches in one transaction: the Kafka consumer's intake of a poll.

`batch_create_many` stores what `batch_create` stores, for a list of requests, with a
fixed number of statements whatever their count: one claim of all event ids, one insert
of all batches, one COPY of all items, one insert each of phases, history and outbox
events. A request that can never succeed (unknown pipeline, too many items, ...) gets its
error in the result and takes nothing else down. Idempotent like `batch_create`: a known
`event_id`, or a `(tenant, external_id)` that exists (in the database or earlier in the
same list), creates nothing and answers the batch that exists.

A pipeline version this process cannot run (a pinned version naming a handler its code
lacks: `PipelineDefinitionError`) is such an error too, `pipeline_not_runnable`. The
batches' starts are sent after commit; when the Celery broker refuses them, the batches
are stored all the same (the commit happened) and stay `accepted` until the reconciler
sends their start again, so a broker outage never undoes or loses a stored request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from orchestrator import audit
from orchestrator.audit.operations import as_actor
from orchestrator.errors import InvalidRequest, OrchestrationError
from orchestrator.models import Batch, PhaseRun, ProcessedEvent, StateTransition, Tenant
from orchestrator.pipelines import PipelineDefinitionError
from orchestrator.selectors import pipeline_plan, resolve_pipeline_version
from orchestrator.services import batches as batch_services
from orchestrator.services.batches import (
    BatchCreateResult,
    BatchRequest,
    _check_request,
    accepted_audit,
    claim_events,
    new_batch,
    phase_runs_for,
)
from orchestrator.services.bulk import copy_items_many
from orchestrator.services.events import emit, outbox_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Intake:
    """One request of a poll: what it asks, who asks, and its inbound event id."""

    request: BatchRequest
    actor: str
    event_id: str


def batch_create_many(intakes: Sequence[Intake]) -> list[BatchCreateResult | OrchestrationError]:
    """Store the batches of `intakes`, accepted, in one transaction; results in order."""
    results: list[BatchCreateResult | OrchestrationError | None] = [None] * len(intakes)
    versions: dict[tuple[str, int | None], Any] = {}
    candidates: list[tuple[int, Intake, Any]] = []
    for i, intake in enumerate(intakes):
        request = intake.request
        try:
            _check_request(request)
            # A/B splits choose per external id, so only pinned or split-free lookups are shared.
            key = (request.pipeline, request.pipeline_version)
            version = versions.get(key)
            if version is None:
                version = resolve_pipeline_version(
                    request.pipeline, request.pipeline_version, request.external_id
                )
                if request.pipeline_version is not None or not version.pipeline.split:
                    versions[key] = version
            pipeline_plan(version)  # a broken definition fails this request here
        except OrchestrationError as exc:
            results[i] = exc
            continue
        except PipelineDefinitionError as exc:
            which = (
                f"version {request.pipeline_version}" if request.pipeline_version else "its active version"
            )
            results[i] = InvalidRequest(
                "pipeline_not_runnable",
                f"pipeline {request.pipeline!r} ({which}) cannot run in this process ({exc.code}): {exc}",
            )
            continue
        candidates.append((i, intake, version))
    if candidates:
        with transaction.atomic():
            _store(candidates, results)
    done = [r for r in results if r is not None]
    assert len(done) == len(intakes), "every request gets a result"
    return done


def _store(
    candidates: list[tuple[int, Intake, Any]], results: list[BatchCreateResult | OrchestrationError | None]
) -> None:
    now = timezone.now()
    tenants = {
        slug: Tenant.objects.get_or_create(slug=slug)[0]
        for slug in sorted({c[1].request.tenant for c in candidates})
    }
    # Within the list: the first request for a (tenant, external id) or an event id wins.
    first_of: dict[tuple[str, str], int] = {}
    seen_events: dict[str, int] = {}
    fresh: list[tuple[int, Intake, Batch]] = []
    repeats: list[tuple[int, int]] = []
    for i, intake, version in candidates:
        request = intake.request
        earlier = first_of.get((request.tenant, request.external_id), seen_events.get(intake.event_id))
        if earlier is not None:
            repeats.append((i, earlier))
            continue
        first_of[(request.tenant, request.external_id)] = i
        seen_events[intake.event_id] = i
        fresh.append((i, intake, new_batch(request, tenant=tenants[request.tenant], version=version)))

    claimed = claim_events("batch.requested", [(k.event_id, b.tenant_id, b.id) for _, k, b in fresh])
    known = [(i, intake) for i, intake, batch in fresh if intake.event_id not in claimed]
    if known:
        by_event = dict(
            ProcessedEvent.objects.filter(event_id__in=[k.event_id for _, k in known]).values_list(
                "event_id", "batch_id"
            )
        )
        existing = Batch.objects.select_related("tenant", "pipeline_version__pipeline").in_bulk(
            [b for b in by_event.values() if b is not None]
        )
        for i, intake in known:
            done = existing.get(by_event.get(intake.event_id))
            if done is not None:
                results[i] = BatchCreateResult(done, False)
    fresh = [(i, intake, batch) for i, intake, batch in fresh if results[i] is None]

    # The batches are inserted already accepted, like batch_create's (one statement); a
    # (tenant, external id) that exists makes its row a no-op (ON CONFLICT DO NOTHING).
    history = {batch.id: accepted_audit(batch, actor=intake.actor, at=now) for _, intake, batch in fresh}
    Batch.objects.bulk_create([batch for _, _, batch in fresh], ignore_conflicts=True)
    inserted = set(Batch.objects.filter(id__in=[b.id for _, _, b in fresh]).values_list("id", flat=True))
    for i, intake, batch in fresh:
        if batch.id not in inserted:
            other = Batch.objects.select_related("tenant", "pipeline_version__pipeline").get(
                tenant=batch.tenant, external_id=batch.external_id, parent__isnull=True
            )
            ProcessedEvent.objects.filter(event_id=intake.event_id).update(batch=other)
            results[i] = BatchCreateResult(other, False)
    created = [(i, intake, batch) for i, intake, batch in fresh if batch.id in inserted]

    if created:
        copy_items_many([(b.id, b.tenant_id, intake.request.items) for _, intake, b in created])
        PhaseRun.objects.bulk_create(
            [run for _, _, b in created for run in phase_runs_for(b, pipeline_plan(b.pipeline_version))]
        )
        StateTransition.objects.bulk_create([row for _, _, b in created for row in history[b.id]])
        emit([outbox_event(batch=b, event_type="batch.accepted", at=now) for _, _, b in created])
        for i, _, batch in created:
            results[i] = BatchCreateResult(batch, True)
        audit.record_many(
            audit.Entry(
                "batch.create",
                object_type="batch",
                object_id=str(batch.id),
                tenant=batch.tenant_id,
                detail=batch_services.create_detail(intake.request, created=True),
                who=as_actor(intake.actor),
            )
            for _, intake, batch in created
        )
        transaction.on_commit(lambda: _start_all([b for _, _, b in created]))
    for i, earlier in repeats:
        first = results[earlier]
        results[i] = BatchCreateResult(first.batch, False) if isinstance(first, BatchCreateResult) else first


def _start_all(batches: list[Batch]) -> None:
    # Sent through the engine's one seam (orchestrator.workflows.SENDER).
    batch_services.send_starts(batches)
