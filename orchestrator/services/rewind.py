"""Rewinding an ended batch to one of its snapshots: it runs again from that phase boundary.

A snapshot (`BatchSnapshot`, taken every minute while a batch has not ended) says which
phases were done — succeeded or skipped — at that moment. Rewinding keeps those phases
as they are, provided they are still so now and everything they ran after is kept too;
every other phase becomes pending again with its results, chunk records, leases,
deferred retries and counters cleared (its attempt count goes on, so a callback of an
earlier attempt stays stale). Items that failed in a phase that runs again, and items
marked succeeded at the batch's end, are pending again; items that failed in a kept
phase stay failed. The batch goes back to `running` — one transition with the
operator's name and reason, and a `batch.rewound` event naming the snapshot and the
phases — and runs on from there. A sub-pipeline phase that runs again gets a new child.

Only a batch that ended `failed` or `completed_with_errors` can be rewound: those are the
ended states the state machine lets run again. `rewind_plan` says what a rewind would
do without doing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from orchestrator.errors import Conflict, NotFound
from orchestrator.models import (
    Batch,
    BatchItem,
    BatchSnapshot,
    ChunkRun,
    DeferredTask,
    ItemResult,
    PhaseRun,
    WorkLease,
)
from orchestrator.pipelines import chunk_bounds
from orchestrator.selectors import pipeline_plan
from orchestrator.services.events import emit, outbox_event, transition
from orchestrator.services.progress import advance, lock_batch, save_batch
from orchestrator.services.retention import refuse_past_retention
from orchestrator.states import PHASE_DONE, BatchState, ItemState, PhaseState

REWIND_FROM = frozenset({BatchState.FAILED, BatchState.COMPLETED_WITH_ERRORS})


@dataclass(frozen=True)
class RewindPlan:
    """What rewinding `batch_id` to `snapshot_id` does (or did)."""

    batch_id: Any
    snapshot_id: int
    snapshot_taken_at: datetime
    state: str
    kept: list[str]
    rerun: list[str]
    items_reset: int
    results_cleared: int


def _snapshot(batch: Batch, snapshot_id: int) -> BatchSnapshot:
    snapshot = BatchSnapshot.objects.filter(id=snapshot_id, batch_id=batch.id).first()
    if snapshot is None:
        raise NotFound("snapshot_not_found", f"batch {batch.id} has no snapshot {snapshot_id}")
    return snapshot


def _kept(batch: Batch, phases: list[PhaseRun], snapshot: BatchSnapshot) -> set[str]:
    """The phases done at the snapshot and unchanged since, whose dependencies are all kept."""
    then = {p["name"]: p["state"] for p in snapshot.phases}
    kept = {p.name for p in phases if then.get(p.name) in PHASE_DONE and p.state == then[p.name]}
    dependencies = pipeline_plan(batch.pipeline_version).dependencies
    while dropped := {name for name in kept if not set(dependencies.get(name, ())) <= kept}:
        kept -= dropped
    return kept


def _items_to_reset(batch: Batch, rerun: list[str]) -> Any:
    return BatchItem.objects.filter(batch_id=batch.id).filter(
        Q(state=ItemState.SUCCEEDED) | Q(state=ItemState.FAILED, failed_phase__in=rerun)
    )


def _plan(batch: Batch, phases: list[PhaseRun], snapshot_id: int) -> RewindPlan:
    snapshot = _snapshot(batch, snapshot_id)
    if batch.state not in REWIND_FROM:
        allowed = " or ".join(sorted(REWIND_FROM))
        raise Conflict(
            "invalid_state",
            f"a {batch.state} batch cannot be rewound; only a {allowed} one",
            state=batch.state,
        )
    kept = _kept(batch, phases, snapshot)
    rerun = [p for p in phases if p.name not in kept]
    if not rerun:
        raise Conflict("nothing_to_rewind", f"every phase was done at snapshot {snapshot.id}")
    names = [p.name for p in rerun]
    return RewindPlan(
        batch_id=batch.id,
        snapshot_id=snapshot.id,
        snapshot_taken_at=snapshot.taken_at,
        state=batch.state,
        kept=[p.name for p in phases if p.name in kept],
        rerun=names,
        items_reset=_items_to_reset(batch, names).count(),
        results_cleared=ItemResult.objects.filter(phase_run_id__in=[p.id for p in rerun]).count(),
    )


def rewind_plan(*, batch_id: Any, snapshot_id: int) -> RewindPlan:
    """What `batch_rewind` would do now; changes nothing."""
    try:
        batch = Batch.objects.select_related("pipeline_version").get(id=batch_id)
    except (Batch.DoesNotExist, ValueError) as exc:
        raise NotFound("batch_not_found", f"batch {batch_id} does not exist") from exc
    return _plan(batch, list(batch.phases.order_by("position")), snapshot_id)


def batch_rewind(*, batch_id: Any, snapshot_id: int, actor: str, reason: str = "") -> RewindPlan:
    """Operator action: run an ended batch again from the phase boundary of a snapshot."""
    now = timezone.now()
    with transaction.atomic():
        batch = lock_batch(batch_id)
        refuse_past_retention(batch)
        phases = list(batch.phases.order_by("position"))
        plan = _plan(batch, phases, snapshot_id)
        rerun = [p for p in phases if p.name in plan.rerun]
        ids = [p.id for p in rerun]
        _items_to_reset(batch, plan.rerun).update(
            state=ItemState.PENDING, failed_phase="", last_error="", error_class=""
        )
        ItemResult.objects.filter(phase_run_id__in=ids).delete()
        ChunkRun.objects.filter(phase_run_id__in=ids).delete()
        WorkLease.objects.filter(phase_run_id__in=ids).delete()
        DeferredTask.objects.filter(phase_run_id__in=ids).delete()
        for phase in rerun:
            _reset(phase)
        PhaseRun.objects.bulk_update(rerun, RESET_FIELDS)
        why = (
            f"rewound to snapshot {plan.snapshot_id} of {plan.snapshot_taken_at.isoformat(timespec='seconds')}:"
            f" {', '.join(plan.rerun)} run again"
        )
        audit = [
            transition(
                batch,
                to=BatchState.RUNNING,
                actor=actor,
                reason=f"{why}; {reason}" if reason else why,
                at=now,
            )
        ]
        batch.items_succeeded = batch.items_failed = 0
        batch.error, batch.report = "", None
        data: dict[str, Any] = {
            "snapshot": plan.snapshot_id,
            "snapshot_taken_at": plan.snapshot_taken_at.isoformat().replace("+00:00", "Z"),
            "phases": plan.rerun,
            "kept": plan.kept,
        }
        if reason.strip():
            data["reason"] = reason.strip()[:500]
        events = [outbox_event(batch=batch, event_type="batch.rewound", at=now, data=data)]
        events += advance(batch, phases, now=now, audit=audit)
        save_batch(batch, audit)
        emit(events)
    return plan


RESET_FIELDS = [
    "state",
    "output",
    "error",
    "error_class",
    "skip_reason",
    "started_at",
    "work_started_at",
    "finished_at",
    "items_done",
    "items_failed",
    "chunks_done",
    "chunks_total",
    "retries",
    "next_retry_at",
    "waiting_on",
    "compensation_state",
    "compensation_attempts",
    "compensation_error",
    "compensated_at",
]


def _reset(phase: PhaseRun) -> None:
    """A phase as if it had not run yet, but for its attempt count."""
    phase.state = PhaseState.PENDING
    phase.output, phase.error, phase.error_class, phase.skip_reason = None, "", "", ""
    phase.started_at = phase.work_started_at = phase.finished_at = None
    phase.items_done = phase.items_failed = phase.chunks_done = 0
    phase.chunks_total = (
        len(chunk_bounds(phase.items_total, phase.chunk_size)) if phase.mode == "per_item" else 1
    )
    phase.retries, phase.next_retry_at, phase.waiting_on = 0, None, ""
    phase.compensation_state, phase.compensation_attempts, phase.compensation_error = "", 0, ""
    phase.compensated_at = None
