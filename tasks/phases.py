"""Phase tasks: a chunk of a per-item phase, or a whole per-batch phase.

Item failures are recorded and the task returns normally, so a failed item never
leaves a chord hanging. A chunk whose items failed transiently, or whose dependency's
breaker is open, is retried later with a countdown (the chord waits for it); database
outages are retried with backoff by the task class.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from orchestrator.services.phases import RetryChunk, phase_batch_run, phase_chunk_run, phase_retry_noted
from tasks.orchestration import RetryingTask


@shared_task(name="tasks.phases.run_item_chunk_task", base=RetryingTask, bind=True)
def run_item_chunk_task(
    self: Any, phase_run_id: int, start: int, end: int, attempt: int = 1
) -> dict[str, int]:
    try:
        return phase_chunk_run(phase_run_id=phase_run_id, start=start, end=end, attempt=attempt)
    except RetryChunk as retry:
        phase_retry_noted(
            phase_run_id=phase_run_id, delay=retry.delay, reason=retry.reason, waiting_on=retry.waiting_on
        )
        next_attempt = attempt + 1 if retry.attempt_used else attempt
        raise self.retry(
            args=(phase_run_id, start, end, next_attempt), countdown=retry.delay, max_retries=None, exc=retry
        ) from retry


@shared_task(name="tasks.phases.run_batch_phase_task", base=RetryingTask)
def run_batch_phase_task(phase_run_id: int) -> None:
    phase_batch_run(phase_run_id=phase_run_id, inline=True)
