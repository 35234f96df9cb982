"""Consistency checks of stored batches, and the repairs that are safe to make.

For each batch: its item counts match its items; its transitions number 1..n with no gap,
form an allowed path and end in its state; every transition has its outbox event; no
phase is running without live work. Batches are read a page at a time (a few queries
per page, whatever the page holds), so checking a large history stays cheap.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from uuid import UUID

from django.db.models import Count, Q

from orchestrator.models import Batch, BatchItem, OutboxEvent, StateTransition
from orchestrator.services.state_migration import MIGRATION, effective_path, path_problem
from orchestrator.states import BatchState, ItemState

PAGE = 500
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
        if batch.state not in (BatchState.COMPLETED, BatchState.COMPLETED_WITH_ERRORS):
            continue
        want = failed.get(batch_id, 0)
        if batch.items_failed != want or batch.items_succeeded + batch.items_failed != batch.items_total:
            detail = (
                f"counts {batch.items_succeeded} ok + {batch.items_failed} failed of {batch.items_total}; "
                f"items say {want} failed"
            )
            problems.append(Problem(batch_id, "counts", detail, repairable=True))
    return problems


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
    """Check every batch; with `repair`, fix what is safe (counts, lost work)."""
    from orchestrator.services.reconcile import reconcile, stale_phases

    report = CheckReport()
    batch_ids = list(Batch.objects.order_by("created_at").values_list("id", flat=True))
    report.batches = len(batch_ids)
    for page in _pages(batch_ids):
        batches = Batch.objects.in_bulk(page)
        problems = _check_counts(page, batches) + _check_history(page, batches)
        report.problems += problems
        if repair:
            for problem in (p for p in problems if p.repairable and p.check == "counts"):
                _repair_counts(problem.batch_id)
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


def _repair_counts(batch_id: UUID) -> None:
    failed = BatchItem.objects.filter(batch_id=batch_id, state=ItemState.FAILED).count()
    batch = Batch.objects.get(id=batch_id)
    Batch.objects.filter(id=batch_id).update(items_failed=failed, items_succeeded=batch.items_total - failed)
