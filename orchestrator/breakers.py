"""Circuit breakers per downstream dependency, shared by every worker (state in Redis).

A handler declares the service it calls (`@item_handler("x", dependency="scoring")`).
Each `dependency_unavailable` / `transient` / `timeout` failure of a call counts; after
`BOS_BREAKER_FAIL_MAX` in a row the breaker opens: work for that dependency is deferred
(not failed) until `BOS_BREAKER_RESET_SECONDS` have passed, then one call probes it
(half-open) and a success closes it again. Built on pybreaker's Redis storage.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import pybreaker
import redis
from django.conf import settings

from orchestrator.classify import RETRYABLE, classify
from orchestrator.config import runtime

NAMESPACE = "bos:breaker"


def _not_a_dependency_failure(exc: BaseException) -> bool:
    """pybreaker's `exclude` hook: only failures that say the service is in trouble count."""
    return classify(exc, settings.BOS_ERROR_RULES) not in RETRYABLE


@lru_cache(maxsize=64)
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@lru_cache(maxsize=256)
def _breaker(dependency: str) -> pybreaker.CircuitBreaker:
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, _client(), namespace=f"{NAMESPACE}:{dependency}"
    )
    return pybreaker.CircuitBreaker(
        fail_max=runtime("breaker_fail_max"),
        reset_timeout=runtime("breaker_reset_seconds"),
        state_storage=storage,
        exclude=[_not_a_dependency_failure],
        name=dependency,
    )


def breaker(dependency: str) -> pybreaker.CircuitBreaker:
    """The dependency's breaker, with the thresholds in force now (runtime settings)."""
    cb = _breaker(dependency)
    cb.fail_max = runtime("breaker_fail_max")
    cb.reset_timeout = runtime("breaker_reset_seconds")
    return cb


def seconds_until_probe(dependency: str) -> float:
    """How long an open breaker stays open (0 when it may be tried now)."""
    cb = breaker(dependency)
    opened = cb._state_storage.opened_at  # noqa: SLF001 - pybreaker exposes it on the storage only
    if cb.current_state != pybreaker.STATE_OPEN or opened is None:
        return 0.0
    return max(0.0, opened.timestamp() + cb.reset_timeout - time.time())


def breaker_states() -> list[dict[str, Any]]:
    """Every breaker known to Redis, for the API, the admin and /metrics."""
    names = sorted(
        {
            key.decode().split(":")[2]
            for key in _client().scan_iter(f"{NAMESPACE}:*")
            if key.decode().count(":") >= 3
        }
    )
    states = []
    for name in names:
        cb = breaker(name)
        states.append(
            {
                "dependency": name,
                "state": cb.current_state,
                "failures": cb.fail_counter,
                "opens_for_seconds": round(seconds_until_probe(name), 1),
            }
        )
    return states
