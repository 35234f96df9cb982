"""Running phase handlers and recording what they produced.

Used by the chunk and per-batch tasks and, for small batches, inline by the
orchestrator itself. Round trips are constant per chunk, never per item: a chunk
reads its items in one query, runs the handler on each in memory, and records all
results, failures and progress in one short transaction.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol
from uuid import UUID

import pybreaker
from billiard.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from orchestrator.breakers import breaker, seconds_until_probe
from orchestrator.classify import RETRYABLE, ErrorClass, classify
from orchestrator.handlers import BatchContext, ItemContext, ItemFailed, get_handler
from orchestrator.masking import mask_error
from orchestrator.models import Batch, BatchItem, ItemResult, PhaseRun
from orchestrator.observability import metrics
from orchestrator.selectors import iter_item_results, pipeline_plan
from orchestrator.service_clients.context import handler_call_context
from orchestrator.service_clients.errors import CircuitOpen
from orchestrator.services.bulk import Recorded, record_chunk_results
from orchestrator.states import ItemState

logger = logging.getLogger(__name__)
MAX_ERROR = 2000


class PhaseLike(Protocol):
    """What running a phase needs to know of it: a `PhaseRun` or a `PhaseRef`."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def handler(self) -> str: ...


@dataclass(frozen=True)
class PhaseRef:
    id: int
    name: str
    handler: str


@lru_cache(maxsize=512)
def batch_facts(batch_id: UUID) -> Batch:
    """A batch with its tenant and pipeline version, cached per process.

    Only what never changes after creation may be read from it: id, tenant,
    external_id, metadata, items_total, pipeline_version. Never its state.
    """
    return Batch.objects.select_related("tenant", "pipeline_version").get(id=batch_id)


def error_text(exc: BaseException) -> str:
    """An exception as stored on an item or a result: masked, so no secret in a message
    reaches the database (orchestrator/masking.py)."""
    return mask_error(f"{type(exc).__name__}: {exc}")[:MAX_ERROR]


@dataclass
class ChunkOutcome:
    """What a chunk's handler calls gave. `results` rows: (item id, ok, output, error,
    error class); `failures`: (item id, error, error class); `retryable`: the failures
    whose class says trying again may help."""

    # The items looked at are [start, end): `end` is the chunk's end, or earlier when it
    # was stopped (its soft time limit, a cancel); the rest is not recorded here.
    start: int = 0
    end: int = 0
    skipped: int = 0
    results: list[tuple[int, bool, Any, str, str]] = field(default_factory=list)
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    stopped: str = ""

    @property
    def items(self) -> int:
        return self.end - self.start

    @property
    def retryable(self) -> list[tuple[int, str, str]]:
        return [f for f in self.failures if f[2] in RETRYABLE]

    @property
    def summary(self) -> dict[str, int]:
        failed = len(self.failures)
        return {"succeeded": len(self.results) - failed, "failed": failed, "skipped": self.skipped}


class DependencyOpen(Exception):
    """The circuit breaker of a phase's dependency is open: wait, do not fail."""

    def __init__(self, dependency: str, seconds: float) -> None:
        super().__init__(f"the circuit breaker of {dependency} is open for {seconds:.0f} s more")
        self.dependency = dependency
        self.seconds = seconds


ItemRow = tuple[int, str, Any, str]


def load_items(batch_id: UUID, start: int, end: int) -> list[ItemRow]:
    """(id, key, payload, state) of items [start, end), in order."""
    return list(
        BatchItem.objects.filter(batch_id=batch_id, seq__gte=start, seq__lt=end)
        .order_by("seq")
        .values_list("id", "key", "payload", "state")
    )


def run_items(
    *,
    batch: Batch,
    phase: PhaseLike,
    start: int,
    end: int,
    items: list[ItemRow] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ChunkOutcome:
    """Apply a per-item phase's handler to items [start, end); nothing is written.

    Items that failed in an earlier phase are skipped. An item whose handler raises is
    a failed item, not a failed chunk. `items` may be given already loaded (with their
    current states), else they are read. The loop stops at the next item boundary when
    `should_stop()` turns true (the lease was lost: cancelled, taken over) or the task's
    soft time limit is reached; `outcome.end` then says how far it got.
    """
    spec = pipeline_plan(batch.pipeline_version).phase(phase.name)
    handler = get_handler(phase.handler)
    if items is None:
        items = load_items(batch.id, start, end)
    prior: dict[int, dict[str, Any]] = {}
    if handler.needs_results:
        for item_id, phase_name, output in ItemResult.objects.filter(
            item__batch_id=batch.id, item__seq__gte=start, item__seq__lt=end, ok=True
        ).values_list("item_id", "phase_run__name", "output"):
            prior.setdefault(item_id, {})[phase_name] = output

    dependency = handler.dependency
    cb = breaker(dependency) if dependency else None
    if dependency and (wait := seconds_until_probe(dependency)) > 0:
        raise DependencyOpen(dependency, wait)
    # Service clients log and send the batch's correlation id, and leave the dependency's
    # breaker to `cb` here (counted once per item, not twice).
    func = handler_call_context(
        handler.func, correlation_id=batch.correlation_id or str(batch.id), dependency=dependency
    )
    outcome = ChunkOutcome(start=start, end=start)
    for item_id, key, payload, state in items:
        if should_stop is not None and should_stop():
            outcome.stopped = "its lease was lost (cancelled, retried or taken over)"
            break
        outcome.end += 1
        if state != ItemState.PENDING:
            # Failed in an earlier phase; or, when only failed items are retried, done.
            outcome.skipped += 1
            continue
        ctx = ItemContext(
            key=key,
            payload=payload,
            metadata=batch.metadata,
            options=spec.options,
            results=prior.get(item_id, {}),
        )
        try:
            output = dict(cb.call(func, ctx) if cb is not None else func(ctx))
        except SoftTimeLimitExceeded:
            outcome.end -= 1  # this item did not finish: it goes with the rest
            outcome.stopped = "the task's soft time limit was reached"
            break
        except pybreaker.CircuitBreakerError as exc:
            # It opened during this chunk: the whole chunk waits for the probe.
            assert dependency is not None
            raise DependencyOpen(dependency, seconds_until_probe(dependency)) from exc
        except CircuitOpen as exc:
            # A service the handler calls (declared as its dependency or not) has its
            # breaker open: waiting is not an attempt.
            raise DependencyOpen(exc.service, seconds_until_probe(exc.service)) from exc
        except ItemFailed as exc:
            error, error_class = mask_error(str(exc))[:MAX_ERROR], ErrorClass.BAD_INPUT
        except Exception as exc:  # noqa: BLE001 - a handler bug fails the item, not the phase
            error_class = classify(exc, settings.BOS_ERROR_RULES)
            logger.warning("item %s failed in %s (%s): %s", key, phase.name, error_class, exc)
            error = error_text(exc)
        else:
            outcome.results.append((item_id, True, output, "", ""))
            continue
        outcome.results.append((item_id, False, None, error, error_class))
        outcome.failures.append((item_id, error, error_class))
    metrics.record_items_processed(len(outcome.results))
    return outcome


def record_chunk(
    *,
    phase: PhaseLike,
    start: int,
    outcome: ChunkOutcome,
    started_at: datetime,
    attempt: int,
    count_progress: bool = True,
) -> Recorded:
    """Store a chunk's results, failures and progress at once, for the items it got to
    ([start, outcome.end)); fenced by the phase attempt (`Recorded.stored` False when the
    chunk was already stored, or the phase moved on).

    An inline phase passes `count_progress=False`: it saves its phase row anyway.
    """
    return record_chunk_results(
        phase_run_id=phase.id,
        phase=phase.name,
        start=start,
        end=outcome.end,
        started_at=started_at,
        rows=outcome.results,
        failures=outcome.failures,
        skipped=outcome.skipped,
        count_progress=count_progress,
        attempt=attempt,
    )


def fail_pending(*, batch: Batch, start: int, end: int, error: str) -> ChunkOutcome:
    """An outcome that fails every pending item of [start, end) with a dependency error:
    the chunk waited for its dependency as long as it may. No retry follows it."""
    outcome = ChunkOutcome(start=start, end=start, stopped=error)
    for item_id, _key, _payload, state in load_items(batch.id, start, end):
        outcome.end += 1
        if state != ItemState.PENDING:
            outcome.skipped += 1
            continue
        row = (item_id, error[:MAX_ERROR], ErrorClass.DEPENDENCY_UNAVAILABLE.value)
        outcome.results.append((item_id, False, None, row[1], row[2]))
        outcome.failures.append(row)
    return outcome


@dataclass(frozen=True)
class BatchHandlerResult:
    """What a per-batch handler gave: its output, or its error and the error's class."""

    output: dict[str, Any] | None = None
    error: str | None = None
    error_class: str = ""
    # No retry may help (it waited for its dependency as long as it may).
    final: bool = False

    @property
    def retryable(self) -> bool:
        return self.error is not None and self.error_class in RETRYABLE


def run_batch_handler(*, batch: Batch, phase: PhaseLike) -> BatchHandlerResult:
    """Run a per-batch phase's handler: (output, None), or (None, error) if it raised.

    Raises `DependencyOpen` when the breaker of its dependency, or of a service it calls,
    is open: the phase waits for it like a chunk does, using up no attempt.
    """
    spec = pipeline_plan(batch.pipeline_version).phase(phase.name)
    handler = get_handler(phase.handler)
    siblings = list(PhaseRun.objects.filter(batch_id=batch.id).values_list("name", "id", "output", "state"))
    phase_ids = {name: id_ for name, id_, _, _ in siblings}
    ctx = BatchContext(
        batch_id=str(batch.id),
        tenant=batch.tenant.slug,
        external_id=batch.external_id,
        metadata=batch.metadata,
        options=spec.options,
        items_total=batch.items_total,
        phase_outputs={name: output for name, _, output, _ in siblings if output is not None},
        iter_item_results=lambda name: iter_item_results(phase_ids[name]),
        phase_states={name: state for name, _, _, state in siblings},
    )
    dependency = handler.dependency
    if dependency and (wait := seconds_until_probe(dependency)) > 0:
        raise DependencyOpen(dependency, wait)
    cb = breaker(dependency) if dependency else None
    try:
        func = handler_call_context(
            handler.func, correlation_id=batch.correlation_id or str(batch.id), dependency=dependency
        )
        return BatchHandlerResult(output=dict(cb.call(func, ctx) if cb is not None else func(ctx)))
    except pybreaker.CircuitBreakerError as exc:
        assert dependency is not None
        raise DependencyOpen(dependency, seconds_until_probe(dependency)) from exc
    except CircuitOpen as exc:
        raise DependencyOpen(exc.service, seconds_until_probe(exc.service)) from exc
    except Exception as exc:  # noqa: BLE001 - recorded as the phase's failure
        logger.warning("phase %s of batch %s failed", phase.name, batch.id, exc_info=True)
        return BatchHandlerResult(
            error=error_text(exc) + "\n" + mask_error(traceback.format_exc(limit=5)),
            error_class=classify(exc, settings.BOS_ERROR_RULES),
        )
