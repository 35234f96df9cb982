"""The Celery application, configured from Django settings (namespace CELERY).

Logging: Celery uses Django's LOGGING (the structlog pipeline) instead of its own, and
every task runs in the correlation context of whoever sent it (orchestrator/observability).
Metrics: queue wait, duration and database use per task, and each process's memory
(orchestrator/observability/task_metrics.py, metrics.py).
Traces (OTEL_EXPORTER_OTLP_ENDPOINT set) are set up in the process that runs the tasks:
each prefork pool process (`worker_process_init`), or the worker itself with a pool that
does not fork; and in beat (`beat_init`).
"""

from __future__ import annotations

import logging.config
import os
from typing import Any

from celery import Celery
from celery.signals import (
    beat_init,
    before_task_publish,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from orchestrator.observability import context, tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bos_project.settings")

app = Celery("bos")
app.config_from_object("django.conf:settings", namespace="CELERY")


@setup_logging.connect
def _use_django_logging(**kwargs: Any) -> None:
    """A receiver here stops Celery configuring logging itself (its root handler, its
    formats): workers and beat log through the same pipeline as every other process."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    if app.conf.worker_redirect_stdouts:
        # A task's print() becomes a log line too (one JSON object, not a bare line).
        app.log.redirect_stdouts(app.conf.worker_redirect_stdouts_level)


@before_task_publish.connect
def _carry_context(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """Put the sender's correlation context in the task message's `bos_log` header.

    A context set explicitly for the message (orchestrator/workflows.py, from its batch)
    wins; it only borrows the correlation id when it has none. `task_id` is the sender's
    own and is never carried.
    """
    if headers is None:
        return
    carried = context.current()
    carried.pop("task_id", None)
    explicit = dict(headers.get(context.TASK_HEADER) or {})
    if explicit.get("batch_id"):
        if "correlation_id" not in explicit and carried.get("batch_id") == explicit["batch_id"]:
            explicit["correlation_id"] = carried.get("correlation_id", "")
        merged = {k: v for k, v in explicit.items() if v}
    else:
        merged = {**carried, **explicit}
    if merged:
        headers[context.TASK_HEADER] = merged


@task_prerun.connect
def _bind_task_context(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    context.clear()
    carried = getattr(getattr(task, "request", None), context.TASK_HEADER, None)
    context.bind(**(carried if isinstance(carried, dict) else {}), task_id=task_id)


@task_postrun.connect
def _clear_task_context(**kwargs: Any) -> None:
    context.clear()


@task_prerun.connect
def _drop_broken_connections(**kwargs: Any) -> None:
    """Before a task, close database connections that saw an error and no longer work.

    Workers keep connections across tasks (CELERY_DB_REUSE_MAX), so after PostgreSQL
    went away the dead connection must be dropped, or every retry would reuse it.
    Healthy connections are left alone: no extra round trip per task.
    """
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.errors_occurred:
            conn.close_if_unusable_or_obsolete()


# --- metrics (docs/observability.md "Metrics") ---


@before_task_publish.connect
def _stamp_sent_at(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    from orchestrator.observability import task_metrics

    task_metrics.stamp_sent(headers)


@task_prerun.connect
def _meter_task(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    from orchestrator.observability import task_metrics

    task_metrics.task_started(task_id, task)


@task_postrun.connect
def _record_task(
    task_id: str | None = None, task: Any = None, state: str | None = None, **kwargs: Any
) -> None:
    from orchestrator.observability import task_metrics

    task_metrics.task_finished(task_id, task, state)


@worker_init.connect
def _worker_metrics(**kwargs: Any) -> None:
    from orchestrator.observability import metrics

    metrics.start_process_metrics("worker")


@beat_init.connect
def _beat_metrics(**kwargs: Any) -> None:
    from orchestrator.observability import metrics

    metrics.start_process_metrics("beat")


@worker_process_shutdown.connect
def _leave_metrics(**kwargs: Any) -> None:
    """A prefork child ends with os._exit (no atexit): its live gauges go now."""
    from orchestrator.observability import multiprocess

    multiprocess.leave()


# --- traces (docs/observability.md "Traces") ---


def _forks(pool: Any) -> bool:
    """Whether the worker's pool runs tasks in processes of its own (prefork, the default)."""
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    return any(kind in str(name) for kind in ("prefork", "processes"))


@worker_init.connect
def _trace_worker(sender: Any = None, **kwargs: Any) -> None:
    if not _forks(getattr(sender, "pool_cls", "prefork")):
        tracing.setup("worker")


@worker_process_init.connect
def _trace_pool_process(**kwargs: Any) -> None:
    tracing.setup("worker")


@beat_init.connect
def _trace_beat(**kwargs: Any) -> None:
    tracing.setup("beat")


@worker_process_shutdown.connect
@worker_shutdown.connect
def _flush_traces(**kwargs: Any) -> None:
    """A pool process leaves with os._exit (no atexit): export its buffered spans first."""
    tracing.shutdown()
