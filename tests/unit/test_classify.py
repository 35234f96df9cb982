"""Failures are classified, and the class decides retrying."""

from __future__ import annotations

import pytest

from orchestrator.classify import RETRYABLE, ErrorClass, backoff_delay, classify
from orchestrator.handlers import DependencyUnavailable, ItemFailed, PermanentError, TransientError

pytestmark = pytest.mark.unit


class HttpError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class OperationalError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ItemFailed("no text"), ErrorClass.BAD_INPUT),
        (TransientError("flaky"), ErrorClass.TRANSIENT),
        (PermanentError("never"), ErrorClass.PERMANENT),
        (DependencyUnavailable("scoring", "down"), ErrorClass.DEPENDENCY_UNAVAILABLE),
        (HttpError(503), ErrorClass.TRANSIENT),
        (HttpError(429), ErrorClass.TRANSIENT),
        (HttpError(404), ErrorClass.PERMANENT),
        (HttpError(422), ErrorClass.PERMANENT),
        (TimeoutError(), ErrorClass.TIMEOUT),
        (ConnectionRefusedError(), ErrorClass.DEPENDENCY_UNAVAILABLE),
        (OperationalError("db gone"), ErrorClass.DEPENDENCY_UNAVAILABLE),
        (KeyError("text"), ErrorClass.BAD_INPUT),
        (RuntimeError("bug"), ErrorClass.PERMANENT),
    ],
)
def test_failures_are_classified(exc: BaseException, expected: ErrorClass) -> None:
    assert classify(exc) == expected


def test_configured_rules_win_over_built_in_ones() -> None:
    assert classify(RuntimeError("x"), {"RuntimeError": "transient"}) == ErrorClass.TRANSIENT
    assert classify(KeyError("x"), {"builtins.KeyError": "permanent"}) == ErrorClass.PERMANENT


def test_only_transient_timeout_and_dependency_errors_are_retried() -> None:
    assert {ErrorClass.TRANSIENT, ErrorClass.TIMEOUT, ErrorClass.DEPENDENCY_UNAVAILABLE} == RETRYABLE


def test_backoff_doubles_up_to_the_cap_and_jitter_only_shortens() -> None:
    delays = [backoff_delay(n, base=1, cap=10, jitter=0.5, rand=0) for n in range(1, 7)]
    assert delays == [1, 2, 4, 8, 10, 10]
    assert backoff_delay(3, base=1, cap=10, jitter=0.5, rand=1) == 2
