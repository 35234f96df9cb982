"""The task base whose results are stored in PostgreSQL, where the admin shows them.

Per-batch phases, orchestration about one batch, maintenance and analytics tasks use it
(`base=StoredResultTask`, or `StoredRetryingTask` from tasks.orchestration); chunk tasks
and chord callbacks keep the app's Redis backend (orchestrator/task_results.py says why).
"""

from __future__ import annotations

from typing import Any

from celery import Task

from orchestrator.task_results import database_backend


class StoredResultTask(Task):  # type: ignore[type-arg]
    """Stores its extended result in django-celery-results' TaskResult, linked to its batch."""

    @property
    def backend(self) -> Any:
        return database_backend(self.app)

    @backend.setter
    def backend(self, value: Any) -> None:
        # Celery may assign a backend to a task class; this one's is fixed by design.
        pass
