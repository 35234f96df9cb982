"""Services that run and finish phases: a chunk of a per-item phase, a per-batch
phase, and recording a phase's success or failure (which moves the batch on)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from orchestrator.models import Batch, ChunkRun, PhaseRun
from orchestrator.services.events import emit, outbox_event
from orchestrator.services.execution import (
    MAX_ERROR,
    PhaseRef,
    batch_facts,
    record_chunk,
    run_batch_handler,
    run_items,
)
from orchestrator.services.progress import advance, lock_batch, save_batch
from orchestrator.states import PhaseState


def _running_phase(phase_run_id: int) -> tuple[Batch, PhaseRef] | None:
    """The phase (with its batch) if it is running, else None: one primary-key read."""
    row = PhaseRun.objects.filter(id=phase_run_id).values_list("state", "batch_id", "name", "handler").first()
    if row is None or row[0] != PhaseState.RUNNING:
        return None
    _, batch_id, name, handler = row
    return batch_facts(batch_id), PhaseRef(id=phase_run_id, name=name, handler=handler)


def phase_chunk_run(*, phase_run_id: int, start: int, end: int) -> dict[str, int]:
    """Run a per-item phase's handler over items [start, end) and record the results.

    Delivered twice, it records nothing the second time; for a phase that is no longer
    running (the batch was cancelled) it does nothing.
    """
    started_at = timezone.now()
    running = _running_phase(phase_run_id)
    if running is None:
        return {"succeeded": 0, "failed": 0, "skipped": 0, "stale": 1}
    batch, phase = running
    outcome = run_items(batch=batch, phase=phase, start=start, end=end)
    if not record_chunk(phase=phase, start=start, end=end, outcome=outcome, started_at=started_at):
        return {**outcome.summary, "duplicate": 1}
    return outcome.summary


def phase_batch_run(*, phase_run_id: int, inline: bool = False) -> None:
    """Run a per-batch phase's handler and record its output, or its failure."""
    running = _running_phase(phase_run_id)
    if running is None:
        return
    batch, phase = running
    started = timezone.now()
    output, error = run_batch_handler(batch=batch, phase=phase)
    if error is not None:
        phase_fail(phase_run_id=phase.id, error=error, inline=inline, work_started_at=started)
    else:
        phase_complete(phase_run_id=phase.id, output=output, inline=inline, work_started_at=started)


def _locked_batch_and_phases(phase_run_id: int) -> tuple[Batch, list[PhaseRun], PhaseRun]:
    batch_id = PhaseRun.objects.filter(id=phase_run_id).values_list("batch_id", flat=True).get()
    batch = lock_batch(batch_id)
    phases = list(batch.phases.order_by("position"))
    phase = next(p for p in phases if p.id == phase_run_id)
    return batch, phases, phase


def phase_complete(
    *,
    phase_run_id: int,
    output: Mapping[str, Any] | None = None,
    inline: bool = False,
    work_started_at: datetime | None = None,
) -> None:
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
        phase.work_started_at = phase.work_started_at or work_started_at
        phase.output = dict(output) if output is not None else None
        phase.save(update_fields=["state", "finished_at", "work_started_at", "output", "items_failed"])
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
            events += advance(batch, phases, now=now, audit=audit, inline=inline)
            save_batch(batch, audit)
        emit(events)


def phase_fail(
    *, phase_run_id: int, error: str, inline: bool = False, work_started_at: datetime | None = None
) -> None:
    """running → failed for a phase; the batch fails once nothing else is running."""
    now = timezone.now()
    with transaction.atomic():
        batch, phases, phase = _locked_batch_and_phases(phase_run_id)
        if phase.state != PhaseState.RUNNING:
            return
        phase.state = PhaseState.FAILED
        phase.finished_at = now
        phase.work_started_at = phase.work_started_at or work_started_at
        phase.error = error[: MAX_ERROR * 4]
        phase.save(update_fields=["state", "finished_at", "work_started_at", "error"])
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
            events += advance(batch, phases, now=now, audit=audit, inline=inline)
            save_batch(batch, audit)
        emit(events)
