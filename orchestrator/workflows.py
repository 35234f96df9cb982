"""Celery canvas building: how a phase becomes tasks.

A per-item phase is a chord: one task per chunk of items (by item sequence range),
whose callback records the phase's completion; an error callback records its failure
if a chunk task fails for good, so a phase never hangs. A per-batch phase is one task;
a sub-pipeline phase is one task that creates and starts the child batch.
"""

from __future__ import annotations

from celery import chord

from orchestrator.pipelines import chunk_bounds


def dispatch_phase(*, phase_run_id: int, mode: str, items_total: int, chunk_size: int) -> None:
    from tasks.orchestration import child_batch_start_task, phase_complete_task, phase_fail_task
    from tasks.phases import run_batch_phase_task, run_item_chunk_task

    if mode == "per_batch":
        run_batch_phase_task.delay(phase_run_id)
        return
    if mode == "sub_pipeline":
        child_batch_start_task.delay(phase_run_id)
        return
    header = [
        run_item_chunk_task.si(phase_run_id, start, end)
        for start, end in chunk_bounds(items_total, chunk_size)
    ]
    body = phase_complete_task.si(phase_run_id)
    body.on_error(phase_fail_task.si(phase_run_id, "a chunk task of this phase failed for good"))
    chord(header)(body)
