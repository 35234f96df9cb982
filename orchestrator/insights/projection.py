"""When will a running batch finish? A pure projection from its phases' progress.

Each unfinished phase gets an estimated duration: a running per-item phase from its own
measured rate (items done over the time it has worked, applied to the items left), one
with nothing done yet, a per-batch phase, or a phase not started, from the pipeline's
history (the median seconds per item, or the median duration, of that phase in recent
finished batches). Phases not started begin when the last phase they run after ends
(the DAG), so the projected finish is the end of the critical path. The slowest phase
is the phase on that path with the most time left. No Django here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

FINISHED_STATES = frozenset({"succeeded", "failed", "skipped", "cancelled"})


class Basis(StrEnum):
    FINISHED = "finished"  # the phase ended: its real finish
    MEASURED = "measured"  # its own rate so far
    HISTORY = "history"  # the pipeline's recent batches
    UNKNOWN = "unknown"  # no rate and no history: counted as taking no more time


@dataclass(frozen=True)
class PhaseProgress:
    """What is known of one phase of the batch now."""

    name: str
    state: str
    mode: str  # per_item, per_batch, sub_pipeline
    after: tuple[str, ...] = ()
    items_total: int = 0
    items_done: int = 0
    started_at: datetime | None = None  # when work on it started (or it was dispatched)
    finished_at: datetime | None = None


@dataclass(frozen=True)
class PhaseHistory:
    """A phase's typical cost in recent finished batches of the same pipeline."""

    seconds_per_item: float | None = None  # per-item phases
    seconds: float | None = None  # the whole phase (per-batch phases, and the fallback)


@dataclass(frozen=True)
class PhaseForecast:
    name: str
    start_at: datetime
    finish_at: datetime
    remaining_seconds: float
    basis: Basis


@dataclass(frozen=True)
class Projection:
    finish_at: datetime
    slowest_phase: str | None  # on the critical path, with the most time left
    phases: tuple[PhaseForecast, ...]

    @property
    def complete(self) -> bool:
        """Every unfinished phase had a rate or a history to go by."""
        return all(p.basis != Basis.UNKNOWN for p in self.phases)


def _history_seconds(phase: PhaseProgress, history: PhaseHistory | None) -> float | None:
    if history is None:
        return None
    if phase.mode == "per_item" and history.seconds_per_item is not None and phase.items_total > 0:
        return history.seconds_per_item * phase.items_total
    return history.seconds


def _remaining(phase: PhaseProgress, history: PhaseHistory | None, now: datetime) -> tuple[float, Basis]:
    """Seconds left for one unfinished phase, and what the estimate rests on."""
    if phase.state == "running":
        elapsed = max(0.0, (now - phase.started_at).total_seconds()) if phase.started_at else 0.0
        if phase.mode == "per_item" and phase.items_done > 0 and elapsed > 0:
            left = max(0, phase.items_total - phase.items_done)
            return left * elapsed / phase.items_done, Basis.MEASURED
        typical = _history_seconds(phase, history)
        if typical is not None:
            # It has already worked `elapsed`; at least as long as that again is no guess.
            return max(0.0, typical - elapsed), Basis.HISTORY
        return 0.0, Basis.UNKNOWN
    typical = _history_seconds(phase, history)
    if typical is not None:
        return typical, Basis.HISTORY
    return 0.0, Basis.UNKNOWN


def project_finish(
    phases: Sequence[PhaseProgress],
    history: Mapping[str, PhaseHistory],
    *,
    now: datetime,
) -> Projection:
    """The projected finish of a batch whose phases are `phases` (any order)."""
    by_name = {p.name: p for p in phases}
    finish: dict[str, datetime] = {}
    forecasts: dict[str, PhaseForecast] = {}
    # The path back from each phase: which dependency made it start when it did.
    gate: dict[str, str | None] = {}

    def visit(name: str, trail: frozenset[str] = frozenset()) -> datetime:
        if name in finish:
            return finish[name]
        if name in trail:
            raise ValueError(f"dependency cycle through {name!r}")
        phase = by_name[name]
        if phase.state in FINISHED_STATES:
            at = phase.finished_at or now
            finish[name], gate[name] = at, None
            forecasts[name] = PhaseForecast(name, phase.started_at or at, at, 0.0, Basis.FINISHED)
            return at
        seconds, basis = _remaining(phase, history.get(name), now)
        if phase.state == "running":
            start, gate[name] = now, None
        else:
            deps = [(visit(d, trail | {name}), d) for d in phase.after if d in by_name]
            latest = max(deps, default=(now, None))
            start, gate[name] = max(latest[0], now), latest[1] if latest[0] > now else None
        at = start + timedelta(seconds=seconds)
        finish[name] = at
        forecasts[name] = PhaseForecast(name, start, at, seconds, basis)
        return at

    for p in phases:
        visit(p.name)
    if not phases:
        return Projection(now, None, ())
    last = max(finish, key=lambda n: finish[n])
    end = max(finish[last], now) if any(p.state not in FINISHED_STATES for p in phases) else finish[last]
    path: list[str] = []
    cursor: str | None = last
    while cursor is not None:
        path.append(cursor)
        cursor = gate.get(cursor)
    on_path = [forecasts[n] for n in path if forecasts[n].basis != Basis.FINISHED]
    slowest = max(on_path, key=lambda f: f.remaining_seconds).name if on_path else None
    ordered = tuple(forecasts[p.name] for p in phases if forecasts[p.name].basis != Basis.FINISHED)
    return Projection(end, slowest, ordered)


class SlaState(StrEnum):
    OK = "ok"
    AT_RISK = "at_risk"
    BREACHED = "breached"
    MET = "met"
    MISSED = "missed"


def sla_state(
    *,
    deadline: datetime | None,
    terminal: bool,
    finished_at: datetime | None,
    at_risk_at: datetime | None,
    breached_at: datetime | None,
) -> SlaState | None:
    """The SLA state a reader sees; None for a batch with no (effective) deadline."""
    if deadline is None:
        return None
    if terminal:
        late = breached_at is not None or (finished_at is not None and finished_at > deadline)
        return SlaState.MISSED if late else SlaState.MET
    if breached_at is not None:
        return SlaState.BREACHED
    return SlaState.AT_RISK if at_risk_at is not None else SlaState.OK


def effective_deadline(
    deadline: datetime | None, created_at: datetime, target_seconds: float | None
) -> datetime | None:
    """The batch's own deadline, else its pipeline's target after its creation, else None."""
    if deadline is not None:
        return deadline
    if target_seconds is not None:
        return created_at + timedelta(seconds=target_seconds)
    return None
