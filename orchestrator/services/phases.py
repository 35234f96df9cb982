"""Services that run and finish phases: a chunk of a per-item phase, a per-batch
phase, and recording a phase's success or failure (which moves the batch on).

Round trips are constant per chunk and per phase, never per item: a chunk reads its
items in one query, runs the handler on each in memory, and records all results,
failures and progress in one short transaction.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from orchestrator.handlers import BatchContext, ItemContext, ItemFailed, get_handler
from orchestrator.models import Batch, BatchItem, ChunkRun, ItemResult, PhaseRun
from orchestrator.payloads import payload_from_storage
from orchestrator.selectors import iter_item_results, pipeline_plan
from orchestrator.services.batches import advance, lock_batch, save_batch
from orchestrator.services.events import emit, outbox_event
from orchestrator.states import ItemState, PhaseState

logger = logging.getLogger(__name__)
MAX_ERROR = 2000


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR]


def _running_phase(phase_run_id: int) -> PhaseRun | None:
    return (
        PhaseRun.objects.select_related("batch__tenant", "batch__pipeline_version__pipeline")
        .filter(id=phase_run_id, state=PhaseState.RUNNING)
        .first()
    )


def _claim_chunk(phase_run_id: int, start: int, end: int, summary: dict[str, int], started_at: Any) -> bool:
    """Insert the chunk's idempotency row; False when it was already recorded."""
    with connection.cursor() as cursor:
        cursor.execute(
            'INSERT INTO orchestrator_chunkrun (phase_run_id, start, "end", succeeded, failed,'
            " skipped, started_at, finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, now())"
            " ON CONFLICT (phase_run_id, start) DO NOTHING RETURNING id",
            [
                phase_run_id,
                start,
                end,
                summary["succeeded"],
                summary["failed"],
                summary["skipped"],
                started_at,
            ],
        )
        row = cursor.fetchone()
    return row is not None


def phase_chunk_run(*, phase_run_id: int, start: int, end: int) -> dict[str, int]:
    """Run a per-item phase's handler over items [start, end) and record the results.

    Items that failed in an earlier phase are skipped. An item whose handler raises
    is recorded as failed; the chunk goes on. Delivered twice, it records nothing new.
    """
    started_at = timezone.now()
    phase = _running_phase(phase_run_id)
    if phase is None:
        return {"succeeded": 0, "failed": 0, "skipped": 0, "stale": 1}
    batch = phase.batch
    spec = pipeline_plan(batch.pipeline_version).phase(phase.name)
    handler = get_handler(phase.handler)
    items = list(
        BatchItem.objects.filter(batch_id=batch.id, seq__gte=start, seq__lt=end)
        .order_by("seq")
        .values_list("id", "key", "payload", "state")
    )
    prior: dict[int, dict[str, Any]] = {}
    if handler.needs_results:
        for item_id, phase_name, output in ItemResult.objects.filter(
            item__batch_id=batch.id, item__seq__gte=start, item__seq__lt=end, ok=True
        ).values_list("item_id", "phase_run__name", "output"):
            prior.setdefault(item_id, {})[phase_name] = output

    results: list[ItemResult] = []
    failures: list[BatchItem] = []
    skipped = 0
    for item_id, key, payload, state in items:
        if state == ItemState.FAILED:
            skipped += 1
            continue
        ctx = ItemContext(
            key=key,
            payload=payload_from_storage(payload),
            metadata=batch.metadata,
            options=spec.options,
            results=prior.get(item_id, {}),
        )
        try:
            output = dict(handler.func(ctx))
        except ItemFailed as exc:
            error = str(exc)[:MAX_ERROR]
        except Exception as exc:  # noqa: BLE001 - a handler bug fails the item, not the phase
            logger.warning("item %s failed in %s: %s", key, phase.name, exc, exc_info=True)
            error = _error_text(exc)
        else:
            results.append(ItemResult(item_id=item_id, phase_run_id=phase.id, ok=True, output=output))
            continue
        results.append(ItemResult(item_id=item_id, phase_run_id=phase.id, ok=False, error=error))
        failures.append(
            BatchItem(id=item_id, state=ItemState.FAILED, failed_phase=phase.name, last_error=error)
        )

    summary = {"succeeded": len(results) - len(failures), "failed": len(failures), "skipped": skipped}
    with transaction.atomic():
        if not _claim_chunk(phase.id, start, end, summary, started_at):
            return {**summary, "duplicate": 1}
        ItemResult.objects.bulk_create(results)
        if failures:
            BatchItem.objects.bulk_update(failures, ["state", "failed_phase", "last_error"])
        PhaseRun.objects.filter(id=phase.id).update(
            chunks_done=F("chunks_done") + 1,
            items_done=F("items_done") + len(items),
            items_failed=F("items_failed") + len(failures),
        )
    return summary


def phase_batch_run(*, phase_run_id: int) -> None:
    """Run a per-batch phase's handler and record its output, or its failure."""
    phase = _running_phase(phase_run_id)
    if phase is None:
        return
    batch = phase.batch
    spec = pipeline_plan(batch.pipeline_version).phase(phase.name)
    handler = get_handler(phase.handler)
    siblings = list(PhaseRun.objects.filter(batch_id=batch.id).values_list("name", "id", "output"))
    outputs = {name: output for name, _, output in siblings if output is not None}
    phase_ids = {name: id_ for name, id_, _ in siblings}
    ctx = BatchContext(
        batch_id=str(batch.id),
        tenant=batch.tenant.slug,
        external_id=batch.external_id,
        metadata=batch.metadata,
        options=spec.options,
        items_total=batch.items_total,
        phase_outputs=outputs,
        iter_item_results=lambda name: iter_item_results(phase_ids[name]),
    )
    try:
        output = dict(handler.func(ctx))
    except Exception as exc:  # noqa: BLE001 - recorded as the phase's failure
        logger.warning("phase %s of batch %s failed", phase.name, batch.id, exc_info=True)
        phase_fail(phase_run_id=phase.id, error=_error_text(exc) + "\n" + traceback.format_exc(limit=5))
        return
    phase_complete(phase_run_id=phase.id, output=output)


def _locked_batch_and_phases(phase_run_id: int) -> tuple[Batch, list[PhaseRun], PhaseRun]:
    batch_id = PhaseRun.objects.filter(id=phase_run_id).values_list("batch_id", flat=True).get()
    batch = lock_batch(batch_id)
    phases = list(batch.phases.order_by("position"))
    phase = next(p for p in phases if p.id == phase_run_id)
    return batch, phases, phase


def phase_complete(*, phase_run_id: int, output: Mapping[str, Any] | None = None) -> None:
    """running → succeeded for a phase, then start what is ready or finish the batch.

    Claimed under the batch lock: delivered twice, the second call does nothing.
    """
    now = timezone.now()
    with transaction.atomic():
        batch, phases, phase = _locked_batch_and_phases(phase_run_id)
        if phase.state != PhaseState.RUNNING:
            return
        if phase.mode == "per_item":
            totals = ChunkRun.objects.filter(phase_run_id=phase.id).aggregate(failed=Sum("failed"))
            phase.items_failed = totals["failed"] or 0
        phase.state = PhaseState.SUCCEEDED
        phase.finished_at = now
        phase.output = dict(output) if output is not None else None
        phase.save(update_fields=["state", "finished_at", "output", "items_failed"])
        events = [
            outbox_event(
                batch=batch,
                event_type="batch.phase_completed",
                at=now,
                data={"phase": phase.name, "items_failed": phase.items_failed},
            )
        ]
        audit: list[Any] = []
        if batch.state == "running":
            events += advance(batch, phases, now=now, audit=audit)
            save_batch(batch, audit)
        emit(events)


def phase_fail(*, phase_run_id: int, error: str) -> None:
    """running → failed for a phase; the batch fails once nothing else is running."""
    now = timezone.now()
    with transaction.atomic():
        batch, phases, phase = _locked_batch_and_phases(phase_run_id)
        if phase.state != PhaseState.RUNNING:
            return
        phase.state = PhaseState.FAILED
        phase.finished_at = now
        phase.error = error[: MAX_ERROR * 4]
        phase.save(update_fields=["state", "finished_at", "error"])
        events = [
            outbox_event(
                batch=batch,
                event_type="batch.phase_failed",
                at=now,
                data={"phase": phase.name, "error": error[:500]},
            )
        ]
        audit: list[Any] = []
        if batch.state == "running":
            events += advance(batch, phases, now=now, audit=audit)
            save_batch(batch, audit)
        emit(events)
