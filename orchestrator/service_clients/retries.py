"""What a client retries, and how long it waits in between (a tenacity policy).

Retried: timeouts, connections refused or dropped, and the statuses the engine also
treats as transient (`orchestrator.classify.RETRYABLE_STATUS`: 500, 502, 503, 504, 408,
425 and 429). Never another 4xx. A method that is not idempotent (POST, PATCH) is retried
only with an idempotency key (sent as `Idempotency-Key`), or when the request surely
never reached the service (it could not connect). Between tries: the service's
`Retry-After` when it gives one no longer than `retry_after_cap` (a longer one ends the
retries: the engine's own backoff waits instead of a worker), else exponential backoff
with jitter, the engine's formula (`orchestrator.classify.backoff_delay`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import tenacity

from orchestrator.classify import backoff_delay
from orchestrator.service_clients.config import ServiceConfig
from orchestrator.service_clients.errors import (
    CircuitOpen,
    ServiceCallError,
    ServiceFailed,
    ServiceTimeout,
    ServiceUnavailable,
)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def should_retry(
    exc: BaseException, *, config: ServiceConfig, method: str, idempotency_key: str | None
) -> bool:
    if isinstance(exc, CircuitOpen) or not isinstance(
        exc, ServiceTimeout | ServiceFailed | ServiceUnavailable
    ):
        return False
    if exc.retry_after is not None and exc.retry_after > config.retry_after_cap:
        return False
    return method in IDEMPOTENT_METHODS or idempotency_key is not None or not exc.maybe_sent


def wait_seconds(config: ServiceConfig, attempt: int, exc: BaseException | None) -> float:
    """The pause after try `attempt` failed with `exc`."""
    retry_after = exc.retry_after if isinstance(exc, ServiceCallError) else None
    if retry_after is not None:
        return min(retry_after, config.retry_after_cap)
    return backoff_delay(
        attempt, base=config.backoff, cap=config.backoff_cap, jitter=config.jitter, rand=random.random()
    )


def retrying(
    config: ServiceConfig,
    *,
    method: str,
    idempotency_key: str | None,
    retries: int | None = None,
    before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
) -> tenacity.Retrying:
    """The retry loop of one call: `retries` (default the service's) more tries at most."""

    def retry(state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        return exc is not None and should_retry(
            exc, config=config, method=method, idempotency_key=idempotency_key
        )

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return wait_seconds(config, state.attempt_number, exc)

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(1 + (config.retries if retries is None else retries)),
        retry=retry,
        wait=wait,
        before_sleep=before_sleep,
        reraise=True,
    )
