"""Consistency checks of stored batches, and the repairs that are safe to make.

For each batch: its item counts match its items; the progress counters of its per-item
phases (items done, items failed, chunks done) match its chunk records; its transitions
number 1..n with no gap, form an allowed path and end in its state; every transition has
its outbox event; no phase is running without live work. Batches are read a page at a
time (a few queries per page, whatever the page holds), so checking a large history
stays cheap.

Repair rebuilds counters from what they count. A batch's from its items. A phase's from
its chunk records, which are written in the same statement as the counters; a phase
that has ended and whose chunk records are gone (it never runs again to write them)
takes the counters of its latest snapshot that shows it in the same state, else, if it
succeeded, what its items say. A running phase without chunk records has done nothing
that counts: its chunks are sent again.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from orchestrator.models import Batch, BatchItem, OutboxEvent, PhaseRun, StateTransition
from orchestrator.services.progress import settle_items
from orchestrator.services.snapshots import latest_snapshot
from orchestrator.services.state_migration import MIGRATION, effective_path, path_problem
from orchestrator.states import SETTLED_STATES, BatchState, ItemState, PhaseState

PAGE = 500
COUNTER_CHECKS = ("counts", "phase_counts")
# The event a transition into each state publishes (received shares batch.accepted's).
EVENT_FOR_STATE = {
    "accepted": "batch.accepted",
    "completed": "batch.completed",
    "completed_with_errors": "batch.completed_with_errors",
    "failed": "batch.failed",
    "cancelled": "batch.cancelled",
    "rolling_back": "batch.rolling_back",
    "rolled_back": "batch.rolled_back",
    "rollback_failed": "batch.rollback_failed",
}


@dataclass(frozen=True)
class Problem:
    batch_id: UUID
    check: str
    detail: str
    repairable: bool = False


@dataclass
class CheckReport:
    batches: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired: list[Problem] = field(default_factory=list)


def _pages(batch_ids: list[UUID]) -> Iterator[list[UUID]]:
    for start in range(0, len(batch_ids), PAGE):
        yield batch_ids[start : start + PAGE]


def _check_counts(page: list[UUID], batches: dict[UUID, Batch]) -> list[Problem]:
    failed = dict(
        BatchItem.objects.filter(batch_id__in=page)
        .values_list("batch_id")
        .annotate(n=Count("id", filter=Q(state=ItemState.FAILED)))
        .values_list("batch_id", "n")
    )
    problems = []
    for batch_id in page:
        batch = batches[batch_id]
        want = _batch_counts(batch, failed.get(batch_id, 0))
        if want is not None and (batch.items_succeeded, batch.items_failed) != want:
            detail = (
                f"counts {batch.items_succeeded} ok + {batch.items_failed} failed of {batch.items_total}; "
                f"items say {want[0]} ok + {want[1]} failed"
            )
            problems.append(Problem(batch_id, "counts", detail, repairable=True))
    return problems


def _batch_counts(batch: Batch, failed: int) -> tuple[int, int] | None:
    """(items_succeeded, items_failed) a batch must show, from its failed items; None
    where its state does not fix them (they are set when a batch ends)."""
    if batch.state in (BatchState.COMPLETED, BatchState.COMPLETED_WITH_ERRORS):
        return batch.items_total - failed, failed
    if batch.state == BatchState.FAILED:
        return 0, failed
    return None


Counters = tuple[int, int, int]  # items_done, items_failed, chunks_done


@dataclass(frozen=True)
class PhaseTally:
    """A per-item phase's counters beside its chunk records' totals."""

    id: int
    batch_id: UUID
    name: str
    state: str
    items_total: int
    chunks_total: int
    counters: Counters
    chunks: int
    recorded: Counters


def _phase_tallies(batch_ids: list[UUID]) -> list[PhaseTally]:
    """Per-item phases with their counters and their chunk records' totals, read in one
    statement, so a chunk recorded meanwhile is on both sides or on neither."""
    rows = (
        PhaseRun.objects.filter(batch_id__in=batch_ids, mode="per_item")
        .annotate(
            n=Count("chunks"),
            n_items=Sum(F("chunks__end") - F("chunks__start")),
            n_failed=Sum("chunks__failed"),
        )
        .order_by("batch_id", "position")
        .values_list(
            "id",
            "batch_id",
            "name",
            "state",
            "items_total",
            "chunks_total",
            "items_done",
            "items_failed",
            "chunks_done",
            "n",
            "n_items",
            "n_failed",
        )
    )
    return [
        PhaseTally(
            id_,
            batch_id,
            name,
            state,
            total,
            chunks_total,
            (done, failed, chunks_done),
            n,
            (n_items or 0, n_failed or 0, n),
        )
        for id_, batch_id, name, state, total, chunks_total, done, failed, chunks_done, n, n_items, n_failed in rows
    ]


def _phase_counts(phase: PhaseTally, failed_items: int) -> tuple[Counters, str] | None:
    """The counters a phase must show, and where they come from; None when nothing says."""
    if phase.chunks:
        return phase.recorded, "chunk records"
    if phase.state in (PhaseState.PENDING, PhaseState.RUNNING):
        return (0, 0, 0), "chunk records (none)"
    snapshot = latest_snapshot(phase.batch_id)
    then = next((p for p in snapshot.phases if p["name"] == phase.name), None) if snapshot else None
    if snapshot is not None and then is not None and then["state"] == phase.state:
        return (then["items_done"], then["items_failed"], then["chunks_done"]), f"snapshot {snapshot.id}"
    if phase.state == PhaseState.SUCCEEDED:
        return (phase.items_total, failed_items, phase.chunks_total), "items"
    return None


def _failed_by_phase(batch_ids: list[UUID]) -> dict[tuple[UUID, str], int]:
    rows = (
        BatchItem.objects.filter(batch_id__in=batch_ids, state=ItemState.FAILED)
        .values_list("batch_id", "failed_phase")
        .annotate(n=Count("id"))
        .values_list("batch_id", "failed_phase", "n")
    )
    return {(batch_id, phase): n for batch_id, phase, n in rows}


def _check_phase_counts(page: list[UUID]) -> list[Problem]:
    failed: dict[tuple[UUID, str], int] | None = None
    problems = []
    for phase in _phase_tallies(page):
        if phase.chunks and phase.counters == phase.recorded:
            continue  # the common case, without a further query
        if failed is None:
            failed = _failed_by_phase(page)
        want = _phase_counts(phase, failed.get((phase.batch_id, phase.name), 0))
        if want is None or phase.counters == want[0]:
            continue
        detail = (
            f"phase {phase.name}: done/failed/chunks {'/'.join(map(str, phase.counters))};"
            f" {want[1]} say {'/'.join(map(str, want[0]))}"
        )
        problems.append(Problem(phase.batch_id, "phase_counts", detail, repairable=True))
    return problems


# Items are settled just after the commit that completes their batch; a batch that
# finished this recently may still be settling, and is not an inconsistency yet.
SETTLE_GRACE = timedelta(seconds=60)


def _settled_by(batch: Batch, since: datetime) -> bool:
    """Whether the batch finished before `since` (a finished batch without a time: yes)."""
    return batch.finished_at is None or batch.finished_at < since


def _check_settled(page: list[UUID], batches: dict[UUID, Batch]) -> list[Problem]:
    """Completed batches whose items were not all settled (the process that finished the
    batch died between its commit and settling them; readers see them succeeded anyway).
    A batch that finished less than SETTLE_GRACE ago is left to its settling."""
    settling_since = timezone.now() - SETTLE_GRACE
    settled = [
        b for b in page if batches[b].state in SETTLED_STATES and _settled_by(batches[b], settling_since)
    ]
    if not settled:
        return []
    pending = (
        BatchItem.objects.filter(batch_id__in=settled, state=ItemState.PENDING)
        .values_list("batch_id")
        .annotate(n=Count("id"))
    )
    return [
        Problem(batch_id, "settled", f"{n} item(s) of a completed batch still pending", repairable=True)
        for batch_id, n in pending
    ]


def _check_history(page: list[UUID], batches: dict[UUID, Batch]) -> list[Problem]:
    rows: dict[UUID, list[tuple[int, str, str, str]]] = defaultdict(list)
    for batch_id, seq, from_state, to_state, actor in (
        StateTransition.objects.filter(batch_id__in=page)
        .order_by("batch_id", "seq")
        .values_list("batch_id", "seq", "from_state", "to_state", "actor")
    ):
        rows[batch_id].append((seq, from_state, to_state, actor))
    events = Counter(OutboxEvent.objects.filter(batch_id__in=page).values_list("batch_id", "event_type"))
    problems = []
    for batch_id in page:
        history, batch = rows.get(batch_id, []), batches[batch_id]
        if [seq for seq, *_ in history] != list(range(1, len(history) + 1)):
            problems.append(Problem(batch_id, "history", "transition numbers have a gap or a repeat"))
        linked = all(history[i][1] == history[i - 1][2] for i in range(1, len(history)))
        # A state-machine migration renames states in the history (bos_migrate_states).
        path, _ = effective_path([(f, t, actor) for _, f, t, actor in history])
        detail = path_problem(path, batch.state)
        if not linked:
            problems.append(Problem(batch_id, "history", "transitions do not form an allowed path"))
        elif detail is not None:
            problems.append(Problem(batch_id, "history", detail))
        wanted = Counter(
            EVENT_FOR_STATE[to] for _, _, to, actor in history if to in EVENT_FOR_STATE and actor != MIGRATION
        )
        for event_type, n in wanted.items():
            if events[(batch_id, event_type)] < n:
                problems.append(
                    Problem(
                        batch_id,
                        "outbox",
                        f"{n} transition(s) but {events[(batch_id, event_type)]} {event_type} event(s)",
                    )
                )
    return problems


def check_batches(*, repair: bool = False, progress: Callable[[int], None] | None = None) -> CheckReport:
    """Check every batch; with `repair`, fix what is safe (counters, lost work)."""
    from orchestrator.services.reconcile import reconcile, stale_phases

    report = CheckReport()
    batch_ids = list(Batch.objects.order_by("created_at").values_list("id", flat=True))
    report.batches = len(batch_ids)
    for page in _pages(batch_ids):
        batches = Batch.objects.in_bulk(page)
        problems = (
            _check_counts(page, batches)
            + _check_phase_counts(page)
            + _check_settled(page, batches)
            + _check_history(page, batches)
        )
        report.problems += problems
        if repair:
            fixable = [p for p in problems if p.repairable and p.check in COUNTER_CHECKS]
            for batch_id in dict.fromkeys(p.batch_id for p in fixable):
                repair_counters(batch_id=batch_id)
            report.repaired += fixable
            for problem in (p for p in problems if p.check == "settled"):
                settle_items(batch_id=problem.batch_id)
                report.repaired.append(problem)
        if progress:
            progress(len(page))
    for phase in stale_phases():
        problem = Problem(
            phase.batch_id,
            "live_work",
            f"phase {phase.name} has lost work (an expired lease, or nothing alive)",
            repairable=True,
        )
        report.problems.append(problem)
        if repair:
            report.repaired.append(problem)
    if repair:
        reconcile()
    return report


def repair_counters(*, batch_id: UUID) -> list[str]:
    """Rebuild a batch's counters, and its per-item phases', from what they count.

    Under the batch's lock and its phases' (a chunk being recorded waits, then adds to
    the rebuilt value). Returns what was changed, one line each.
    """
    changed: list[str] = []
    with transaction.atomic():
        batch = Batch.objects.select_for_update().get(id=batch_id)
        list(PhaseRun.objects.select_for_update().filter(batch_id=batch_id).values_list("id"))
        failed = BatchItem.objects.filter(batch_id=batch_id, state=ItemState.FAILED).count()
        want = _batch_counts(batch, failed)
        if want is not None and (batch.items_succeeded, batch.items_failed) != want:
            Batch.objects.filter(id=batch_id).update(items_succeeded=want[0], items_failed=want[1])
            changed.append(f"batch: {want[0]} ok + {want[1]} failed (from items)")
        failed_in = _failed_by_phase([batch_id])
        for phase in _phase_tallies([batch_id]):
            counts = _phase_counts(phase, failed_in.get((batch_id, phase.name), 0))
            if counts is None or phase.counters == counts[0]:
                continue
            (done, failed_n, chunks), source = counts
            PhaseRun.objects.filter(id=phase.id).update(
                items_done=done, items_failed=failed_n, chunks_done=chunks
            )
            changed.append(f"phase {phase.name}: {done}/{failed_n}/{chunks} (from {source})")
    return changed
