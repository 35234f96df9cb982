"""Moving stored batches and phases from states that changed (renamed, split, retired).

When the state machine changes, rows still carry the old names. This moves them, as
`manage.py bos_migrate_states` does:

- `plan_migration()` counts what would change (per old state, with a sample of ids);
  nothing is written.
- `execute_migration()` applies it. Batches: a page at a time, in one transaction per
  page, the rows are locked (`SELECT … FOR UPDATE`), moved to the new state, and a
  `StateTransition` is appended to each (actor `migration`, from old to new). It is written
  directly, not through `events.transition()`: the point is to move batches the current
  transition table may not allow. No outbox event is written either — a rename is not
  news for the consumers of batch events. Phases: `PhaseRun.state` is updated (phases
  keep no history), under the lock of their batches, as services take it.
- `validate_histories()` reports the batches whose history does not form an allowed path
  under the current table (read through the migrations, see there).

Only the targets are checked (they must be states of the current machine); a source may
be any name, since it usually is one the code no longer knows. Running a migration again
changes nothing: no row is in an old state any more.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from django.db import transaction
from django.db.models import Count, DateTimeField, F, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from orchestrator.models import Batch, PhaseRun, StateTransition
from orchestrator.states import BATCH_TERMINAL, BatchState, PhaseState, can_transition, is_valid_path

MIGRATION = "migration"  # the actor of the transitions a migration appends
PAGE = 500
StateField = Literal["batch", "phase"]
# Batches in these states are being worked on: moving them while workers run is risky.
LIVE_BATCH_STATES = frozenset(
    {BatchState.RECEIVED, BatchState.ACCEPTED, BatchState.RUNNING, BatchState.ROLLING_BACK}
)
LIVE_PHASE_STATES = frozenset({PhaseState.RUNNING})


class StateMigrationError(ValueError):
    """A mapping that cannot be applied (unknown target, chained or contradictory)."""


def _known(state_field: StateField) -> list[str]:
    enum: Iterable[BatchState | PhaseState] = BatchState if state_field == "batch" else PhaseState
    return [s.value for s in enum]


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """`["old=new", ...]` → `{old: new}`."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = (part.strip() for part in pair.partition("="))
        if not sep or not old or not new:
            raise StateMigrationError(f"--map {pair!r}: expected OLD=NEW, e.g. queued=accepted")
        if mapping.get(old, new) != new:
            raise StateMigrationError(f"{old} is mapped twice: to {mapping[old]} and to {new}")
        mapping[old] = new
    return mapping


def check_mapping(mapping: Mapping[str, str], state_field: StateField = "batch") -> None:
    """Refuse targets that are not states of the current machine, no-ops and chains."""
    if state_field not in ("batch", "phase"):
        raise StateMigrationError(f"unknown state field {state_field!r}: batch or phase")
    if not mapping:
        raise StateMigrationError("nothing to migrate: give at least one OLD=NEW")
    known = _known(state_field)
    for old, new in mapping.items():
        if new not in known:
            raise StateMigrationError(
                f"unknown {state_field} state {new!r} (in {old}={new}): "
                f"the {state_field} states are {', '.join(known)}"
            )
        if old == new:
            raise StateMigrationError(f"{old}={new} maps a state to itself")
    chained = sorted(set(mapping) & set(mapping.values()))
    if chained:
        raise StateMigrationError(
            f"{', '.join(chained)} is both a source and a target: run those as separate migrations"
        )


def _queryset(mapping: Mapping[str, str], state_field: StateField, pipeline: str | None) -> QuerySet[Any]:
    olds = list(mapping)
    if state_field == "batch":
        batches = Batch.objects.filter(state__in=olds)
        return batches.filter(pipeline_version__pipeline__name=pipeline) if pipeline else batches
    phases = PhaseRun.objects.filter(state__in=olds)
    return phases.filter(batch__pipeline_version__pipeline__name=pipeline) if pipeline else phases


@dataclass
class MigrationPlan:
    state_field: StateField
    mapping: dict[str, str]
    counts: dict[str, int]  # rows in each old state
    samples: dict[str, list[str]]  # a few ids per old state (batch id, or batch id/phase)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def live(self) -> list[str]:
        """Old states with rows that workers may be moving right now."""
        live = LIVE_BATCH_STATES if self.state_field == "batch" else LIVE_PHASE_STATES
        return [old for old, n in self.counts.items() if n and old in live]


def plan_migration(
    mapping: Mapping[str, str],
    *,
    state_field: StateField = "batch",
    pipeline: str | None = None,
    sample: int = 5,
) -> MigrationPlan:
    """What `execute_migration` would change; writes nothing."""
    check_mapping(mapping, state_field)
    rows = _queryset(mapping, state_field, pipeline)
    found = dict(rows.order_by().values_list("state").annotate(n=Count("id")).values_list("state", "n"))
    counts = {old: found.get(old, 0) for old in mapping}
    samples: dict[str, list[str]] = {}
    for old, n in counts.items():
        if not n or sample <= 0:
            samples[old] = []
        elif state_field == "batch":
            ids = rows.filter(state=old).order_by("created_at", "id").values_list("id", flat=True)[:sample]
            samples[old] = [str(i) for i in ids]
        else:
            pairs = rows.filter(state=old).order_by("id").values_list("batch_id", "name")[:sample]
            samples[old] = [f"{batch_id}/{name}" for batch_id, name in pairs]
    return MigrationPlan(state_field, dict(mapping), counts, samples)


@dataclass
class MigrationResult:
    state_field: StateField
    moved: Counter[str] = field(default_factory=Counter)  # rows moved, per old state
    transitions: int = 0

    @property
    def total(self) -> int:
        return sum(self.moved.values())


def _pages(rows: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def execute_migration(
    mapping: Mapping[str, str],
    *,
    state_field: StateField = "batch",
    reason: str = "",
    pipeline: str | None = None,
    page: int = PAGE,
    progress: Callable[[int], None] | None = None,
    now: datetime | None = None,
) -> MigrationResult:
    """Move every row in an old state to its new state, a page per transaction.

    `progress` is called with the number of rows each page looked at. Rows that left the
    old state between the listing and their page's lock are left alone.
    """
    check_mapping(mapping, state_field)
    now = now or timezone.now()
    result = MigrationResult(state_field)
    if state_field == "batch":
        ids = list(
            _queryset(mapping, state_field, pipeline)
            .order_by("created_at", "id")
            .values_list("id", flat=True)
        )
        for chunk in _pages(ids, page):
            _move_batches(chunk, mapping, reason=reason, now=now, result=result)
            if progress:
                progress(len(chunk))
    else:
        pairs = list(_queryset(mapping, state_field, pipeline).order_by("id").values_list("id", "batch_id"))
        for chunk in _pages(pairs, page):
            _move_phases(chunk, mapping, result=result)
            if progress:
                progress(len(chunk))
    return result


def _move_batches(
    ids: list[UUID], mapping: Mapping[str, str], *, reason: str, now: datetime, result: MigrationResult
) -> None:
    with transaction.atomic():
        locked = list(
            Batch.objects.select_for_update()
            .filter(id__in=ids, state__in=list(mapping))
            .order_by("id")
            .values_list("id", "tenant_id", "state", "transitions_count")
        )
        by_old: dict[str, list[UUID]] = defaultdict(list)
        audit = []
        for batch_id, tenant_id, old, transitions_count in locked:
            new = mapping[old]
            by_old[old].append(batch_id)
            audit.append(
                StateTransition(
                    batch_id=batch_id,
                    tenant_id=tenant_id,
                    seq=transitions_count + 1,
                    from_state=old,
                    to_state=new,
                    reason=(reason or f"state migration: {old} → {new}")[:500],
                    actor=MIGRATION,
                    at=now,
                )
            )
        for old, batch_ids in by_old.items():
            new = mapping[old]
            # Like transition(): a terminal state has a finish time (kept if it had one),
            # any other has none.
            finished: Any = (
                Coalesce(F("finished_at"), Value(now, output_field=DateTimeField()))
                if new in BATCH_TERMINAL
                else None
            )
            Batch.objects.filter(id__in=batch_ids).update(
                state=new,
                transitions_count=F("transitions_count") + 1,
                finished_at=finished,
                updated_at=now,
            )
            result.moved[old] += len(batch_ids)
        StateTransition.objects.bulk_create(audit)
        result.transitions += len(audit)


def _move_phases(
    pairs: list[tuple[int, UUID]], mapping: Mapping[str, str], *, result: MigrationResult
) -> None:
    with transaction.atomic():
        # The services change phases under their batch's lock: take it too, in id order.
        list(
            Batch.objects.select_for_update()
            .filter(id__in={batch_id for _, batch_id in pairs})
            .order_by("id")
            .values_list("id", flat=True)
        )
        ids = [phase_id for phase_id, _ in pairs]
        for old, new in mapping.items():
            result.moved[old] += PhaseRun.objects.filter(id__in=ids, state=old).update(state=new)


@dataclass(frozen=True)
class HistoryProblem:
    batch_id: UUID
    state: str
    detail: str
    path: tuple[str, ...]  # the history as read (see `effective_path`)


@dataclass
class ValidationReport:
    batches: int = 0
    migrated: int = 0  # batches with at least one migration transition
    problems: list[HistoryProblem] = field(default_factory=list)


def effective_path(
    history: Iterable[tuple[str, str, str]], mapping: Mapping[str, str] | None = None
) -> tuple[list[str], int]:
    """The states a batch went through, read as if its migrations had always been in place.

    `history` is (from_state, to_state, actor) in seq order. A migration transition
    renames: the old state, wherever it appears earlier in the path, becomes the new one,
    and it is not a step of its own. `mapping` (a migration not yet executed) renames
    states the same way throughout. Returns the path and the number of migration rows.
    """
    path: list[str] = []
    migrations = 0
    for from_state, to_state, actor in history:
        if actor == MIGRATION:
            migrations += 1
            path = [to_state if s == from_state else s for s in path]
        else:
            path.append(to_state)
    if mapping:
        path = [mapping.get(s, s) for s in path]
    return path, migrations


def path_problem(path: list[str], state: str) -> str | None:
    """Why `path` is not a valid history of a batch now in `state` (None if it is)."""
    if not path:
        return "no transitions"
    known = set(_known("batch"))
    unknown = sorted({s for s in path if s not in known})
    if unknown:
        return f"not a state of the current machine: {', '.join(unknown)}"
    chain: list[BatchState | None] = [None, *(BatchState(s) for s in path)]
    if not is_valid_path(chain):
        a, b = next(
            (a, b) for a, b in zip(chain, chain[1:], strict=False) if b is None or not can_transition(a, b)
        )
        return f"{a or '∅'} → {b} is not an allowed transition"
    if path[-1] != state:
        return f"history ends in {path[-1]}, the batch is {state}"
    return None


def validate_histories(
    *,
    mapping: Mapping[str, str] | None = None,
    page: int = PAGE,
    progress: Callable[[int], None] | None = None,
) -> ValidationReport:
    """Every batch whose history is not an allowed path under the current table.

    Each history is read through `effective_path()` (migrations as renames; `mapping`, a
    migration still to execute, applied throughout) and checked with
    `states.is_valid_path` semantics: every state known, every step allowed, ending in the
    batch's state. Two queries per page of batches.
    """
    report = ValidationReport()
    batch_ids = list(Batch.objects.order_by("created_at", "id").values_list("id", flat=True))
    report.batches = len(batch_ids)
    for chunk in _pages(batch_ids, page):
        states = dict(Batch.objects.filter(id__in=chunk).values_list("id", "state"))
        histories: dict[UUID, list[tuple[str, str, str]]] = defaultdict(list)
        for batch_id, from_state, to_state, actor in (
            StateTransition.objects.filter(batch_id__in=chunk)
            .order_by("batch_id", "seq")
            .values_list("batch_id", "from_state", "to_state", "actor")
        ):
            histories[batch_id].append((from_state, to_state, actor))
        for batch_id in chunk:
            state = states.get(batch_id)
            if state is None:  # deleted meanwhile
                continue
            path, migrations = effective_path(histories.get(batch_id, []), mapping)
            report.migrated += migrations > 0
            detail = path_problem(path, mapping.get(state, state) if mapping else state)
            if detail is not None:
                report.problems.append(HistoryProblem(batch_id, state, detail, tuple(path)))
        if progress:
            progress(len(chunk))
    return report
