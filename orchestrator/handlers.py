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
    """Raised by a per-item handler to fail one item with a reason."""


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


_REGISTRY: dict[str, Handler] = {}


def item_handler(
    name: str, *, needs_results: bool = False
) -> Callable[[Callable[[ItemContext], Mapping[str, Any]]], Callable[[ItemContext], Mapping[str, Any]]]:
    def register(
        func: Callable[[ItemContext], Mapping[str, Any]],
    ) -> Callable[[ItemContext], Mapping[str, Any]]:
        _REGISTRY[name] = Handler(name, "per_item", func, needs_results)
        return func

    return register


def batch_handler(
    name: str,
) -> Callable[[Callable[[BatchContext], Mapping[str, Any]]], Callable[[BatchContext], Mapping[str, Any]]]:
    def register(
        func: Callable[[BatchContext], Mapping[str, Any]],
    ) -> Callable[[BatchContext], Mapping[str, Any]]:
        _REGISTRY[name] = Handler(name, "per_batch", func)
        return func

    return register


def get_handler(name: str) -> Handler:
    return _REGISTRY[name]


def handler_modes() -> dict[str, Mode]:
    return {name: h.mode for name, h in _REGISTRY.items()}
