"""Phase handlers used only by test pipelines (registered in the test worker too)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from orchestrator.handlers import (
    BatchContext,
    DependencyUnavailable,
    ItemContext,
    ItemFailed,
    PermanentError,
    TransientError,
    batch_handler,
    item_handler,
)


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


def _attempt(ctx: ItemContext) -> int:
    """How many times this item has been tried in this test run (counted in Redis)."""
    import redis
    from django.conf import settings

    key = f"bos:test:attempts:{ctx.metadata['run']}:{ctx.key}"
    return int(redis.Redis.from_url(settings.REDIS_URL).incr(key))


@item_handler("test.flaky")
def flaky(ctx: ItemContext) -> dict[str, Any]:
    """Fails transiently the first `fail_times` tries of each item (metadata), then works;
    an item whose payload says `bad` is bad input; `always` always fails transiently."""
    if ctx.payload.get("bad"):
        raise ItemFailed("this item is malformed")
    attempt = _attempt(ctx)
    if ctx.payload.get("always") or attempt <= int(ctx.metadata.get("fail_times", 0)):
        raise TransientError(f"try {attempt} failed")
    return {"attempt": attempt}


@item_handler("test.scoring", dependency="test-scoring")
def scoring(ctx: ItemContext) -> dict[str, Any]:
    """Calls a 'scoring service' that is down while the metadata's `gate` file exists."""
    if Path(ctx.metadata["gate"]).exists():
        raise DependencyUnavailable("test-scoring", "connection refused")
    return {"score": len(ctx.key)}


@batch_handler("test.flaky_batch")
def flaky_batch(ctx: BatchContext) -> dict[str, Any]:
    """A per-batch handler failing transiently its first `fail_times` tries (metadata)."""
    import redis
    from django.conf import settings

    tries = int(redis.Redis.from_url(settings.REDIS_URL).incr(f"bos:test:batch-tries:{ctx.metadata['run']}"))
    if tries <= int(ctx.metadata.get("fail_times", 0)):
        raise TransientError(f"batch try {tries} failed")
    return {"tries": tries}


@item_handler("test.gated_item")
def gated_item(ctx: ItemContext) -> dict[str, Any]:
    """Items whose payload says `gated` fail while the metadata's `gate` file exists."""
    if ctx.payload.get("gated") and Path(ctx.metadata["gate"]).exists():
        raise PermanentError("the gate is closed for this item")
    return {"passed": ctx.key}


def _count_call(ctx: ItemContext) -> int:
    """Count one handler call of this item in this test run (in Redis, across processes)."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.hincrby(f"bos:test:calls:{ctx.metadata['run']}", ctx.key, 1)
    return int(client.incr(f"bos:test:calls-total:{ctx.metadata['run']}"))


@item_handler("test.counted")
def counted(ctx: ItemContext) -> dict[str, Any]:
    """Counts its calls per item (see `handler_calls`), sleeping `seconds` (options) each;
    raises the soft time limit at the item whose key the metadata's `soft_limit_at` names."""
    _count_call(ctx)
    if ctx.metadata.get("soft_limit_at") == ctx.key:
        from billiard.exceptions import SoftTimeLimitExceeded

        raise SoftTimeLimitExceeded()
    time.sleep(float(ctx.options.get("seconds", 0)))
    return {"key": ctx.key}


def handler_calls(run: str) -> dict[str, int]:
    """How often `test.counted` ran each item of the run (key → calls)."""
    import redis
    from django.conf import settings

    raw = redis.Redis.from_url(settings.REDIS_URL).hgetall(f"bos:test:calls:{run}")
    return {k.decode(): int(v) for k, v in raw.items()}


@batch_handler("test.scoring_batch", dependency="test-scoring")
def scoring_batch(ctx: BatchContext) -> dict[str, Any]:
    """A per-batch handler calling the same 'scoring service' as `test.scoring`."""
    if Path(ctx.metadata["gate"]).exists():
        raise DependencyUnavailable("test-scoring", "connection refused")
    return {"scored": ctx.items_total}


@batch_handler("test.hold")
def hold(ctx: BatchContext) -> dict[str, Any]:
    """Waits while the file named in the batch's metadata `hold` exists (at most 60 s):
    the batch rests at this phase boundary until the test lets it go."""
    deadline = time.monotonic() + 60
    while Path(ctx.metadata["hold"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"held": True}


@item_handler("test.leak")
def leak(ctx: ItemContext) -> dict[str, Any]:
    """Fails with the customer's e-mail and card number in its message (masking tests)."""
    raise ValueError(f"customer {ctx.payload['email']} paid with {ctx.payload['card']}: refused")


@batch_handler("test.leak_batch")
def leak_batch(ctx: BatchContext) -> dict[str, Any]:
    """Fails with a credential and an e-mail in its message (masking tests)."""
    raise RuntimeError(
        f"upstream refused Authorization: Bearer {ctx.metadata['token']} for {ctx.metadata['email']}"
    )
