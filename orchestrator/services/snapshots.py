"""Periodic snapshots of non-terminal batches, and what recovery reads from them.

Every minute (Celery beat, `tasks.snapshots.snapshot_task`) each batch that has not
ended gets a `BatchSnapshot`: its state, the number of its transitions, its failed items
and, per phase, state and progress. A run costs the same few queries however many
batches are active (one read of the batches, one of their phases, one insert, one
DELETE that keeps only the newest `keep` snapshots of each).

Recovery compares snapshots: a running batch whose newest snapshots are all alike, and
still match the batch as it is now, has made no progress at all. That signal is
independent of the reconciler, which only looks at *running phases* without progress: a
batch stuck between phases (none running, none started) is invisible to it, and visible
here.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from orchestrator.models import Batch, BatchSnapshot, PhaseRun
from orchestrator.states import BatchState

# The states a batch is snapshotted in: every one that is not terminal.
SNAPSHOT_STATES = (BatchState.RECEIVED, BatchState.ACCEPTED, BatchState.RUNNING, BatchState.ROLLING_BACK)
KEEP = 20
STALL_SNAPSHOTS = 3
# The newest snapshots must span at least this long before a batch counts as stalled, so
# snapshots taken seconds apart (by hand, `bos_snapshot`) never make one look stalled.
STALL_MIN_SPAN_SECONDS = 60.0
PHASE_FIELDS = (
    "batch_id",
    "name",
    "state",
    "items_done",
    "items_failed",
    "chunks_done",
    "attempts",
    "started_at",
    "finished_at",
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _phase_record(row: dict[str, Any]) -> dict[str, Any]:
    """A phase as a snapshot stores it (JSON-ready)."""
    return {
        "name": row["name"],
        "state": row["state"],
        "items_done": row["items_done"],
        "items_failed": row["items_failed"],
        "chunks_done": row["chunks_done"],
        "attempts": row["attempts"],
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
    }


def _phases_of(batch_ids: list[UUID]) -> dict[UUID, list[dict[str, Any]]]:
    """The phases of these batches, in pipeline order: one query."""
    phases: dict[UUID, list[dict[str, Any]]] = defaultdict(list)
    rows = (
        PhaseRun.objects.filter(batch_id__in=batch_ids).order_by("batch_id", "position").values(*PHASE_FIELDS)
    )
    for row in rows:
        phases[row["batch_id"]].append(_phase_record(row))
    return phases


def _ranked(queryset: Any) -> Any:
    """Annotate snapshots with their rank within their batch, newest first (1 = newest)."""
    return queryset.annotate(
        rank=Window(
            RowNumber(),
            partition_by=[F("batch_id")],
            order_by=[F("taken_at").desc(), F("id").desc()],
        )
    )


def snapshot_running_batches(*, now: datetime | None = None, keep: int = KEEP) -> int:
    """Snapshot every non-terminal batch; keep the newest `keep` of each. Returns how many.

    Four statements whatever the number of batches: read the batches, read their
    phases, then in one transaction insert the snapshots and delete those beyond the
    newest `keep` of each batch just snapshotted (a batch that ended keeps its last ones
    until it is deleted).
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    now = now or timezone.now()
    batches = list(
        Batch.objects.filter(state__in=SNAPSHOT_STATES)
        .order_by()
        .values_list("id", "tenant_id", "state", "transitions_count", "items_failed")
    )
    if not batches:
        return 0
    ids = [row[0] for row in batches]
    phases = _phases_of(ids)
    snapshots = [
        BatchSnapshot(
            batch_id=batch_id,
            tenant_id=tenant_id,
            taken_at=now,
            state=state,
            transitions_count=transitions_count,
            phases=phases.get(batch_id, []),
            items_failed=items_failed,
        )
        for batch_id, tenant_id, state, transitions_count, items_failed in batches
    ]
    beyond = _ranked(BatchSnapshot.objects.filter(batch_id__in=ids)).filter(rank__gt=keep).values("id")
    with transaction.atomic():
        BatchSnapshot.objects.bulk_create(snapshots)
        # No signals or cascades hang on snapshots: Django deletes them in one statement.
        BatchSnapshot.objects.filter(id__in=beyond).delete()
    return len(batches)


def latest_snapshot(batch_id: Any) -> BatchSnapshot | None:
    return BatchSnapshot.objects.filter(batch_id=batch_id).order_by("-taken_at", "-id").first()


def snapshot_history(batch_id: Any, *, limit: int = KEEP) -> list[BatchSnapshot]:
    """The batch's snapshots, newest first."""
    return list(BatchSnapshot.objects.filter(batch_id=batch_id).order_by("-taken_at", "-id")[:limit])


def phase_changes(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The phases whose state or items_done differ between two lists of phase records.

    Each change is `{"name", "state": [before, after], "items_done": [before, after]}`;
    a phase missing on one side has None there.
    """
    old = {p["name"]: p for p in before}
    new = {p["name"]: p for p in after}
    changes = []
    for name in [*new, *(n for n in old if n not in new)]:
        a, b = old.get(name), new.get(name)
        was = (a["state"], a["items_done"]) if a else (None, None)
        now = (b["state"], b["items_done"]) if b else (None, None)
        if was != now:
            changes.append({"name": name, "state": [was[0], now[0]], "items_done": [was[1], now[1]]})
    return changes


def progress_since_snapshot(batch: Batch) -> dict[str, Any]:
    """What changed in `batch` (as given) since its latest snapshot.

    `{"taken_at": ISO or None, "state": [then, now] or None, "transitions": n,
    "items_failed": n, "phases": [phase changes], "changed": bool}`. Without a snapshot
    every phase is reported as new.
    """
    snapshot = latest_snapshot(batch.id)
    current = _phases_of([batch.id]).get(batch.id, [])
    if snapshot is None:
        return {
            "taken_at": None,
            "state": [None, batch.state],
            "transitions": batch.transitions_count,
            "items_failed": batch.items_failed,
            "phases": phase_changes([], current),
            "changed": True,
        }
    phases = phase_changes(snapshot.phases, current)
    state = [snapshot.state, batch.state] if snapshot.state != batch.state else None
    transitions = batch.transitions_count - snapshot.transitions_count
    items_failed = batch.items_failed - snapshot.items_failed
    return {
        "taken_at": snapshot.taken_at.isoformat(),
        "state": state,
        "transitions": transitions,
        "items_failed": items_failed,
        "phases": phases,
        "changed": bool(phases or state or transitions or items_failed),
    }


def _picture(state: str, transitions_count: int, items_failed: int, phases: list[dict[str, Any]]) -> Any:
    """What must stay the same for a batch to count as not moving."""
    return (
        state,
        transitions_count,
        items_failed,
        tuple(
            sorted((p["name"], p["state"], p["items_done"], p["chunks_done"], p["attempts"]) for p in phases)
        ),
    )


def stalled_batches(
    *, snapshots: int = STALL_SNAPSHOTS, min_span: float = STALL_MIN_SPAN_SECONDS
) -> list[UUID]:
    """Running batches whose newest `snapshots` snapshots show no change at all.

    No phase state, items done, chunks done or attempts, no transition, no failed item
    moved across them; they span at least `min_span` seconds; and the batch as it is now
    still matches the newest. Two queries: the ranked snapshots, then the live phases of
    the candidates.
    """
    if snapshots < 2:
        raise ValueError("comparing takes at least 2 snapshots")
    rows = (
        _ranked(BatchSnapshot.objects.filter(batch__state=BatchState.RUNNING))
        .annotate(
            live_transitions=F("batch__transitions_count"),
            live_items_failed=F("batch__items_failed"),
        )
        .filter(rank__lte=snapshots)
        .order_by("batch_id", "rank")
        .values_list(
            "batch_id",
            "taken_at",
            "state",
            "transitions_count",
            "items_failed",
            "phases",
            "live_transitions",
            "live_items_failed",
        )
    )
    by_batch: dict[UUID, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_batch[row[0]].append(row)
    candidates: dict[UUID, Any] = {}
    for batch_id, taken in by_batch.items():
        if len(taken) < snapshots:
            continue
        pictures = {_picture(state, tc, failed, phases) for _, _, state, tc, failed, phases, _, _ in taken}
        span = (taken[0][1] - taken[-1][1]).total_seconds()
        newest = taken[0]
        if len(pictures) == 1 and span >= min_span and (newest[6], newest[7]) == (newest[3], newest[4]):
            candidates[batch_id] = pictures.pop()
    if not candidates:
        return []
    live = _phases_of(list(candidates))
    return sorted(
        batch_id
        for batch_id, picture in candidates.items()
        if _picture(picture[0], picture[1], picture[2], live.get(batch_id, [])) == picture
    )
