"""Who is acting, and from where: the context an audit record takes its actor and
address from.

Actors (CONTRACT §5): `user:<username>`, `kafka:<event_id>`, `system:<name>` (a beat
task, the reconciler, a management command run without `--actor`). An HTTP request's
actor is resolved when a record is written, because the user is authenticated late
(DRF authenticates in the view).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Who:
    actor: str
    ip: str | None = None
    correlation_id: str = ""


_current: ContextVar[Callable[[], Who] | None] = ContextVar("bos_audit_who", default=None)


def system(name: str) -> str:
    return f"system:{name}"


def user(username: str) -> str:
    return f"user:{username}"


def kafka(event_id: str) -> str:
    return f"kafka:{event_id}"


def current_who() -> Who:
    """The acting context; `system:unknown` where none was set (a bug to fix, not to hide)."""
    resolve = _current.get()
    return resolve() if resolve is not None else Who(actor=system("unknown"))


@contextmanager
def acting_as(who: Who | Callable[[], Who]) -> Iterator[None]:
    """`who` (or a function giving it when a record is written) acts within the block."""
    token = _current.set(who if callable(who) else (lambda: who))
    try:
        yield
    finally:
        _current.reset(token)
