"""The correlation context of the work at hand, bound for every log line (structlog
contextvars) and carried across processes.

Keys: `correlation_id` (from the Kafka message, the REST request's `X-Correlation-ID`, or
the batch), `batch_id`, `tenant`, `phase`, `task_id`. A Celery task gets the context of
whoever sent it through the message header `bos_log` (bos_project/celery.py); workflows
set it from the batch explicitly, so tasks sent for several batches at once (a lot of
Kafka requests committed together) each carry their own batch's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog

KEYS = ("correlation_id", "batch_id", "tenant", "phase", "task_id")
# The Celery message header holding the sender's context.
TASK_HEADER = "bos_log"
HTTP_HEADER = "X-Correlation-ID"
MAX_ID_LENGTH = 200  # Batch.correlation_id's length


def _clean(values: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if k in KEYS and v not in (None, "")}


def current() -> dict[str, str]:
    """The bound context (only the keys above, only those known)."""
    return _clean(structlog.contextvars.get_contextvars())


def correlation_id() -> str | None:
    return current().get("correlation_id")


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def bind(**values: Any) -> None:
    """Bind the known values (None and empty ones are left out)."""
    structlog.contextvars.bind_contextvars(**_clean(values))


def clear() -> None:
    structlog.contextvars.unbind_contextvars(*KEYS)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """The values bound for the block, the previous ones restored after it."""
    with structlog.contextvars.bound_contextvars(**_clean(values)):
        yield


def batch_context(batch: Any, phase: str | None = None) -> dict[str, str]:
    """The context of work about `batch` (a Batch, its tenant loaded or cheap to load)."""
    return _clean(
        {
            "correlation_id": batch.correlation_id,
            "batch_id": batch.id,
            "tenant": batch.tenant.slug,
            "phase": phase,
        }
    )


def envelope_context(envelope: Mapping[str, Any]) -> dict[str, str]:
    """The context of an event envelope (inbound or outbound)."""
    data = envelope.get("data") or {}
    return _clean(
        {
            "correlation_id": envelope.get("correlation_id"),
            "tenant": envelope.get("tenant"),
            "batch_id": data.get("batch_id") if isinstance(data, Mapping) else None,
            "phase": data.get("phase") if isinstance(data, Mapping) else None,
        }
    )


def accepted_correlation_id(value: str | None) -> str | None:
    """A caller's correlation id, if usable: printable, not blank, at most 200 characters."""
    if not value:
        return None
    value = value.strip()
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        return None
    return value
