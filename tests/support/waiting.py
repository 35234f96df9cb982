"""Waiting for asynchronous outcomes in tests, with a bounded timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from orchestrator.models import Batch

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_terminal(batch_id: Any, timeout: float = 60.0) -> Batch:
    def done() -> Batch | None:
        batch = Batch.objects.select_related("tenant", "pipeline_version__pipeline").get(id=batch_id)
        return batch if batch.is_terminal else None

    return wait_for(done, timeout=timeout, what=f"batch {batch_id} to end")


def worker_answers(node: str | None = None) -> bool:
    """Whether a Celery worker (`node`, or any) answers a ping; False while the broker
    connection is being re-established (a test before may have restarted Redis)."""
    from bos_project.celery import app

    try:
        return bool(app.control.ping(destination=[node] if node else None, timeout=0.5))
    except (ConnectionError, OSError, OperationalError, RedisError):
        return False
