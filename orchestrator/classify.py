"""Classifying failures, as pure code: what went wrong decides what happens next.

| class | meaning | next |
|---|---|---|
| `transient` | may work if tried again (a 503, a 429, a flaky call) | retried with backoff |
| `timeout` | took too long | retried with backoff |
| `dependency_unavailable` | a service it needs is down | retried; counts against that service's circuit breaker |
| `bad_input` | the item itself is wrong (`ItemFailed`, invalid data) | failed at once |
| `permanent` | will fail the same way every time (a 4xx, a bug) | failed at once |

Rules, in order: a class the exception names itself (`bos_error_class`, set by the
handler exceptions in `orchestrator.handlers`); configured rules by exception type name
(`BOS_ERROR_RULES`); an HTTP status (`status_code` or `status`); built-in types.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from enum import StrEnum


class ErrorClass(StrEnum):
    TRANSIENT = "transient"
    TIMEOUT = "timeout"
    DEPENDENCY_UNAVAILABLE = "dependency_unavailable"
    BAD_INPUT = "bad_input"
    PERMANENT = "permanent"


RETRYABLE = frozenset({ErrorClass.TRANSIENT, ErrorClass.TIMEOUT, ErrorClass.DEPENDENCY_UNAVAILABLE})
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def _type_names(exc: BaseException) -> list[str]:
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__] + [
        cls.__qualname__ for cls in type(exc).__mro__
    ]


def classify(exc: BaseException, rules: Mapping[str, str] | None = None) -> ErrorClass:
    named = getattr(exc, "bos_error_class", None)
    if named:
        return ErrorClass(named)
    for name in _type_names(exc):
        if rules and name in rules:
            return ErrorClass(rules[name])
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if isinstance(status, int) and 400 <= status < 600:
        return ErrorClass.TRANSIENT if status in RETRYABLE_STATUS else ErrorClass.PERMANENT
    names = set(_type_names(exc))
    if isinstance(exc, TimeoutError | socket.timeout) or "SoftTimeLimitExceeded" in names:
        return ErrorClass.TIMEOUT
    if isinstance(exc, ConnectionError) or names & {
        "OperationalError",
        "InterfaceError",
        "CircuitBreakerError",
    }:
        return ErrorClass.DEPENDENCY_UNAVAILABLE
    if isinstance(exc, ValueError | KeyError | TypeError | UnicodeError):
        return ErrorClass.BAD_INPUT
    return ErrorClass.PERMANENT


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float, rand: float) -> float:
    """Exponential backoff before try `attempt + 1`: base · 2^(attempt − 1), capped, then
    shortened by up to `jitter` (a fraction) of itself; `rand` in [0, 1) is the draw."""
    delay = min(cap, base * 2.0 ** max(0, attempt - 1))
    return float(delay * (1 - jitter * rand))
