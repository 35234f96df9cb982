"""The phase-handler registry: how pipelines name the code their phases run.

A per-item handler takes an `ItemContext` and returns a JSON-able dict (the item's
output for that phase) or raises `ItemFailed` (or any exception) to fail that item
alone. A per-batch handler takes a `BatchContext` and returns the phase's output; if it
raises, the phase fails. Handlers register with the decorators below; the modules
holding them are listed in `settings.BOS_HANDLER_MODULES` and imported at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.pipelines import HandlerMode as Mode


class ItemFailed(Exception):
    """Raised by a per-item handler to fail one item with a reason (bad input: not retried)."""

    bos_error_class = "bad_input"


class TransientError(Exception):
    """Raised by a handler for a failure that may go away: retried with backoff."""

    bos_error_class = "transient"


class PermanentError(Exception):
    """Raised by a handler for a failure that will not go away: not retried."""

    bos_error_class = "permanent"


class DependencyUnavailable(Exception):
    """Raised by a handler when a service it needs is down: retried, and counted
    against that service's circuit breaker."""

    bos_error_class = "dependency_unavailable"

    def __init__(self, dependency: str, message: str = "") -> None:
        super().__init__(f"{dependency} is unavailable{': ' + message if message else ''}")
        self.dependency = dependency


@dataclass(frozen=True)
class ItemContext:
    key: str
    payload: Any
    metadata: Mapping[str, Any]
    options: Mapping[str, Any]
    results: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchContext:
    batch_id: str
    tenant: str
    external_id: str
    metadata: Mapping[str, Any]
    options: Mapping[str, Any]
    items_total: int
    phase_outputs: Mapping[str, Any]
    iter_item_results: Callable[[str], Iterator[tuple[str, bool, Any]]]
    phase_states: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Handler:
    name: str
    mode: Mode
    func: Callable[..., Mapping[str, Any]]
    needs_results: bool = False
    # The downstream service it calls: its failures count against that circuit breaker.
    dependency: str | None = None


_REGISTRY: dict[str, Handler] = {}


def item_handler(
    name: str, *, needs_results: bool = False, dependency: str | None = None
) -> Callable[[Callable[[ItemContext], Mapping[str, Any]]], Callable[[ItemContext], Mapping[str, Any]]]:
    def register(
        func: Callable[[ItemContext], Mapping[str, Any]],
    ) -> Callable[[ItemContext], Mapping[str, Any]]:
        _REGISTRY[name] = Handler(name, "per_item", func, needs_results, dependency)
        return func

    return register


def batch_handler(
    name: str, *, dependency: str | None = None
) -> Callable[[Callable[[BatchContext], Mapping[str, Any]]], Callable[[BatchContext], Mapping[str, Any]]]:
    def register(
        func: Callable[[BatchContext], Mapping[str, Any]],
    ) -> Callable[[BatchContext], Mapping[str, Any]]:
        _REGISTRY[name] = Handler(name, "per_batch", func, dependency=dependency)
        return func

    return register


def get_handler(name: str) -> Handler:
    return _REGISTRY[name]


def handler_modes() -> dict[str, Mode]:
    return {name: h.mode for name, h in _REGISTRY.items()}
