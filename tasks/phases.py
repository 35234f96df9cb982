"""Phase tasks: a chunk of a per-item phase, or a whole per-batch phase.

Item failures are recorded and the task returns normally, so a failed item never
leaves a chord hanging; only infrastructure errors (database gone) raise, and those
are retried with backoff.
"""

from __future__ import annotations

from celery import shared_task

from orchestrator.services.phases import phase_batch_run, phase_chunk_run
from tasks.orchestration import RetryingTask


@shared_task(name="tasks.phases.run_item_chunk_task", base=RetryingTask)
def run_item_chunk_task(phase_run_id: int, start: int, end: int) -> dict[str, int]:
    return phase_chunk_run(phase_run_id=phase_run_id, start=start, end=end)


@shared_task(name="tasks.phases.run_batch_phase_task", base=RetryingTask)
def run_batch_phase_task(phase_run_id: int) -> None:
    phase_batch_run(phase_run_id=phase_run_id, inline=True)
