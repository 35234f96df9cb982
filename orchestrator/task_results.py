"""Task results people can find: the Celery result backend that stores in PostgreSQL.

Per-batch phase, orchestration-about-one-batch, maintenance and analytics tasks store
their extended results (name, arguments, worker, status, result or traceback, times) in
django-celery-results' `TaskResult`, where the admin shows them. Chunk tasks and chord
callbacks keep the app's Redis backend: chord counters and the many chunk results are
right and fast there (docs/observability.md, "Task results").

`BatchResultBackend` is django-celery-results' `DatabaseBackend` that also writes a
`BatchTask` row linking the task to its batch, read from the batch context that
`orchestrator.workflows` puts in every task's `bos_log` header. Through that link the
admin scopes task results to the reader's tenants; a task of no batch (maintenance,
analytics) has no link and is the platform's: superusers only.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from celery import Celery
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from orchestrator.models import Batch, BatchTask
from orchestrator.observability.context import TASK_HEADER

_BACKENDS: dict[int, BatchResultBackend] = {}


def batch_id_of(request: Any) -> uuid.UUID | None:
    """The batch a task request is about (its `bos_log` header), if it names a valid one."""
    carried = getattr(request, TASK_HEADER, None) if request is not None else None
    if not isinstance(carried, dict):
        return None
    try:
        return uuid.UUID(str(carried.get("batch_id") or ""))
    except ValueError:
        return None


class BatchResultBackend(DatabaseBackend):  # type: ignore[misc]
    """Results in `TaskResult`, each linked to the batch its task is about."""

    def _store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        request: Any = None,
        using: str | None = None,
    ) -> Any:
        stored = super()._store_result(task_id, result, status, traceback, request, using)
        batch_id = batch_id_of(request)
        if batch_id is not None:
            link = BatchTask(task_id=task_id, batch_id=batch_id)
            # A batch deleted meanwhile leaves its task's result unlinked (superusers').
            with contextlib.suppress(IntegrityError), transaction.atomic():
                # One statement, and nothing when the task stores its result again (a retry).
                BatchTask.objects.bulk_create([link], ignore_conflicts=True)
        return stored


def database_backend(app: Celery) -> BatchResultBackend:
    """The one database backend of `app` (backends hold connections' state: reuse it)."""
    backend = _BACKENDS.get(id(app))
    if backend is None:
        backend = _BACKENDS[id(app)] = BatchResultBackend(app=app)
    return backend


def task_results_of(batch: Batch) -> QuerySet[TaskResult]:
    """The stored task results of `batch`, newest first."""
    return TaskResult.objects.filter(batch_link__batch_id=batch.id).order_by("-date_done")
