"""Phase tasks: a chunk of a per-item phase, or a whole per-batch phase.

Item failures are recorded and the task returns normally, so a failed item never
leaves a chord hanging. Work that failed transiently, or whose dependency's breaker is
open, is retried later: with a broker countdown (a chord waits for it), or, for a wait
longer than `BOS_MAX_COUNTDOWN_SECONDS`, stored and sent again by beat. Database
outages are retried with backoff by the task class. A per-batch phase's result is
stored in PostgreSQL (tasks/results.py); chunk results stay in Redis, with their chord.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from orchestrator.config import runtime
from orchestrator.decide import RetryMode, retry_mode
from orchestrator.services.deferred import defer
from orchestrator.services.phases import RetryChunk, phase_batch_run, phase_chunk_run, phase_retry_noted
from tasks.orchestration import RetryingTask, StoredRetryingTask


def retry_options(task: Any) -> dict[str, Any]:
    """Options for `task.retry` that never run out: waiting is bounded by time (the
    services decide when to give up), not by Celery's retry count (`max_retries=None`
    would mean the task class's own limit)."""
    return {"max_retries": task.request.retries + 1}


def _retry_later(
    task: Any, retry: RetryChunk, phase_run_id: int, args: tuple[Any, ...], attempt: int, phase_attempt: int
) -> Exception | None:
    """Note the coming retry on the phase; hand the task back to Celery for a countdown,
    or, for a wait longer than a countdown may safely be, store it for beat (None)."""
    phase_retry_noted(
        phase_run_id=phase_run_id, delay=retry.delay, reason=retry.reason, waiting_on=retry.waiting_on
    )
    next_attempt = attempt + 1 if retry.attempt_used else attempt
    if retry_mode(retry.delay, max_countdown=runtime("max_countdown_seconds")) == RetryMode.DEFER:
        chunk = len(args) == 3
        defer(
            phase_run_id=phase_run_id,
            kind="chunk" if chunk else "batch_phase",
            delay=retry.delay,
            attempt=next_attempt,
            start=args[1] if chunk else 0,
            end=args[2] if chunk else 0,
            reason=retry.reason,
        )
        return None
    return task.retry(  # type: ignore[no-any-return]
        args=(*args, next_attempt, phase_attempt), countdown=retry.delay, exc=retry, **retry_options(task)
    )


@shared_task(name="tasks.phases.run_item_chunk_task", base=RetryingTask, bind=True)
def run_item_chunk_task(
    self: Any, phase_run_id: int, start: int, end: int, attempt: int = 1, phase_attempt: int = 0
) -> dict[str, int]:
    try:
        return phase_chunk_run(
            phase_run_id=phase_run_id,
            start=start,
            end=end,
            attempt=attempt,
            phase_attempt=phase_attempt,
            task_id=self.request.id,
        )
    except RetryChunk as retry:
        later = _retry_later(self, retry, phase_run_id, (phase_run_id, start, end), attempt, phase_attempt)
        if later is not None:
            raise later from retry
    # Deferred: this member of the chord ends; the phase waits until the chunk is recorded.
    return {"succeeded": 0, "failed": 0, "skipped": 0, "deferred": 1}


@shared_task(name="tasks.phases.run_batch_phase_task", base=StoredRetryingTask, bind=True)
def run_batch_phase_task(self: Any, phase_run_id: int, attempt: int = 1, phase_attempt: int = 0) -> None:
    try:
        phase_batch_run(
            phase_run_id=phase_run_id,
            inline=True,
            attempt=attempt,
            phase_attempt=phase_attempt,
            task_id=self.request.id,
        )
    except RetryChunk as retry:
        later = _retry_later(self, retry, phase_run_id, (phase_run_id,), attempt, phase_attempt)
        if later is not None:
            raise later from retry
