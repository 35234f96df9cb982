"""Celery task metrics, wired by bos_project/celery.py's signal receivers.

- The sender stamps each message with `bos_sent_at` (wall-clock seconds; for a task with
  a countdown or ETA, the time it becomes due), so the worker observes the queue wait
  `bos_task_queue_wait_seconds{task,queue}` when it starts the task. Across machines the
  wait is only as good as their clocks agree.
- Start to end: `bos_task_duration_seconds{task,state}` and the worker's busy seconds
  (`bos_worker_busy_seconds_total`, beside `bos_worker_wall_seconds_total` for utilisation).
- Each task's database queries are counted and timed (orchestrator/observability/queries.py).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import datetime
from typing import Any

from orchestrator.observability import metrics
from orchestrator.observability.queries import metered

SENT_AT_HEADER = "bos_sent_at"


class _Running:
    """What a task in progress holds: its start and its query meter, by task id."""

    def __init__(self) -> None:
        self.by_id: dict[str, tuple[float, ExitStack]] = {}


_running = _Running()


def due_at(headers: dict[str, Any], now: float) -> float:
    """When a message is due: now, or its ETA when that is later."""
    eta = headers.get("eta")
    if isinstance(eta, str):
        try:
            return max(now, datetime.fromisoformat(eta).timestamp())
        except ValueError:
            return now
    return now


def stamp_sent(headers: dict[str, Any] | None) -> None:
    if headers is not None:
        headers[SENT_AT_HEADER] = due_at(headers, time.time())


def _task_name(task: Any) -> str:
    return str(getattr(task, "name", None) or metrics.UNKNOWN)


def task_started(task_id: str | None, task: Any) -> None:
    request = getattr(task, "request", None)
    sent_at = getattr(request, SENT_AT_HEADER, None)
    delivery = getattr(request, "delivery_info", None) or {}
    waited = time.time() - float(sent_at) if isinstance(sent_at, int | float) else None
    name = _task_name(task)
    metrics.record_task_started(task=name, queue=str(delivery.get("routing_key") or ""), waited=waited)
    stack = ExitStack()
    stack.enter_context(metered("task", lambda: name))
    _running.by_id[task_id or ""] = (time.perf_counter(), stack)


def task_finished(task_id: str | None, task: Any, state: str | None) -> None:
    running = _running.by_id.pop(task_id or "", None)
    if running is None:
        return
    started, stack = running
    stack.close()
    metrics.record_task_finished(
        task=_task_name(task), state=state or "", seconds=time.perf_counter() - started
    )
