"""The context of a service call: its correlation id, and the breakers already counting.

The engine runs every handler inside `handler_call_context()`: the batch's correlation
id is then sent downstream (`X-Correlation-ID`) and logged with each request without
the handler passing it, and the breaker of the handler's declared dependency is left
to the engine, which counts the handler's failure once (the client counting it too
would open the breaker after half the failures).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from orchestrator.observability import context as log_context

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class CallContext:
    correlation_id: str | None = None
    # Services whose circuit breaker the caller already counts this call against.
    counted_breakers: frozenset[str] = frozenset()


_current: ContextVar[CallContext] = ContextVar("bos_service_call", default=CallContext())  # noqa: B039 - frozen


def current() -> CallContext:
    return _current.get()


def correlation_id(explicit: str | None = None) -> str:
    """The id a request carries: the caller's, else the call's or the bound log context's,
    else a new one."""
    return explicit or _current.get().correlation_id or log_context.correlation_id() or uuid.uuid4().hex


@contextmanager
def call_context(*, correlation_id: str | None = None, counted_breaker: str | None = None) -> Iterator[None]:
    outer = _current.get()
    counted = outer.counted_breakers | ({counted_breaker} if counted_breaker else set())
    token = _current.set(CallContext(correlation_id or outer.correlation_id, frozenset(counted)))
    try:
        yield
    finally:
        _current.reset(token)


def handler_call_context(
    func: Callable[P, R], *, correlation_id: str | None, dependency: str | None
) -> Callable[P, R]:
    """`func` (a phase handler) run inside a call context; used by the engine."""

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with call_context(correlation_id=correlation_id, counted_breaker=dependency):
            return func(*args, **kwargs)

    return run
