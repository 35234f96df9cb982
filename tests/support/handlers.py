"""Phase handlers used only by test pipelines (registered in the test worker too)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from orchestrator.handlers import BatchContext, ItemContext, ItemFailed, batch_handler, item_handler


@item_handler("test.echo")
def echo(ctx: ItemContext) -> dict[str, Any]:
    if isinstance(ctx.payload, dict) and ctx.payload.get("fail"):
        raise ItemFailed(f"asked to fail: {ctx.payload['fail']}")
    return {"key": ctx.key}


@item_handler("test.slow")
def slow(ctx: ItemContext) -> dict[str, Any]:
    time.sleep(float(ctx.options.get("seconds", 0.05)))
    return {"key": ctx.key}


@batch_handler("test.explode")
def explode(ctx: BatchContext) -> dict[str, Any]:
    raise RuntimeError("the per-batch handler blew up")


@batch_handler("test.count")
def count(ctx: BatchContext) -> dict[str, Any]:
    return {"items": ctx.items_total}


@batch_handler("test.gate")
def gate(ctx: BatchContext) -> dict[str, Any]:
    """Fails while the file named in the batch's metadata `gate` exists."""
    if Path(ctx.metadata["gate"]).exists():
        raise RuntimeError("the gate is closed")
    return {"passed": True}


@batch_handler("test.undo")
def undo(ctx: BatchContext) -> dict[str, Any]:
    return {"undone": True}


@batch_handler("test.undo_gated")
def undo_gated(ctx: BatchContext) -> dict[str, Any]:
    """A compensation that fails while the file named in metadata `undo_gate` exists."""
    if Path(ctx.metadata["undo_gate"]).exists():
        raise RuntimeError("cannot undo yet")
    return {"undone": True}
