"""Orchestration tasks: start a batch, record a phase's completion or failure, start and
follow child batches, run compensations.

Thin by design: each takes ids and calls one service. Their results are stored in
PostgreSQL (tasks/results.py), but those of the chord callbacks (`phase_complete_task`,
`phase_fail_task`), which stay in Redis beside the chord they end. Services are idempotent (they
claim their transition), so a redelivered task does nothing the second time.
"""

from __future__ import annotations

from uuid import UUID

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError

from orchestrator.services.batches import batch_start
from orchestrator.services.children import child_batch_finished, child_batch_start
from orchestrator.services.execution import batch_facts
from orchestrator.services.phases import phase_complete, phase_fail
from orchestrator.services.rollback import compensation_step, enqueue_compensation
from tasks.results import StoredResultTask


class RetryingTask(Task):  # type: ignore[type-arg]
    """Retries with exponential backoff and jitter when the database or broker is away.

    Only connection-level errors retry: anything else is a bug or a bad input, and
    retrying it would only repeat it.
    """

    autoretry_for = (OperationalError, InterfaceError, ConnectionError)
    retry_backoff = 1
    # Capped low so work resumes within seconds of the database coming back; 60 tries
    # ride out an outage of about ten minutes before the reconciler has to step in.
    retry_backoff_max = 10
    retry_jitter = True
    max_retries = 60


class StoredRetryingTask(StoredResultTask, RetryingTask):
    """A retrying task whose result is stored in PostgreSQL (tasks/results.py)."""


@shared_task(name="tasks.orchestration.batch_start_task", base=StoredRetryingTask)
def batch_start_task(batch_id: str) -> None:
    batch_start(batch_id=batch_id, inline=True)


@shared_task(name="tasks.orchestration.phase_complete_task", base=RetryingTask)
def phase_complete_task(phase_run_id: int, phase_attempt: int = 0) -> None:
    phase_complete(phase_run_id=phase_run_id, inline=True, phase_attempt=phase_attempt)


@shared_task(name="tasks.orchestration.phase_fail_task", base=RetryingTask)
def phase_fail_task(phase_run_id: int, error: str, phase_attempt: int = 0) -> None:
    phase_fail(phase_run_id=phase_run_id, error=error, inline=True, phase_attempt=phase_attempt)


@shared_task(name="tasks.orchestration.child_batch_start_task", base=StoredRetryingTask)
def child_batch_start_task(phase_run_id: int) -> None:
    child_batch_start(phase_run_id=phase_run_id)


@shared_task(name="tasks.orchestration.child_batch_finished_task", base=StoredRetryingTask)
def child_batch_finished_task(child_id: str) -> None:
    child_batch_finished(child_id=child_id)


@shared_task(name="tasks.orchestration.compensate_task", base=StoredRetryingTask)
def compensate_task(batch_id: str) -> None:
    """Run a rolling-back batch's compensations one after another; a failed one is
    tried again later (a new task with a countdown), so no worker sleeps on it."""
    while (delay := compensation_step(batch_id=batch_id)) is not None:
        if delay:
            enqueue_compensation(batch_facts(UUID(batch_id)), countdown=delay)
            return
