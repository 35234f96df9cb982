"""Decide: what happens next to a batch, as pure code (no Django, no Celery).

The engine runs in three parts. *Decide* (here) takes a view of a batch and returns
effects; *record* (`orchestrator.services.progress` and the phase services) applies them
under the batch lock — rows, history, outbox; *send* (`orchestrator.workflows`) maps what
must run to Celery tasks, by name, after the commit.

Here live the three transition tables — phases, batches, compensations — each complete
over its states × events (a unit test enumerates every pair), and the decisions built on
them: which phases start or are skipped, when a batch ends and how, whether a failed batch
rolls back or tells its parent, and whether a retry waits as a broker countdown or is
stored for beat.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.conditions import ConditionError, evaluate
from orchestrator.states import BatchState, PhaseState, batch_outcome, next_phases

P, B = PhaseState, BatchState


# --- Phases -------------------------------------------------------------------------


class PhaseEvent(StrEnum):
    START = "start"  # its dependencies are done and its condition holds
    SKIP = "skip"  # its condition is false, or it runs after a skipped phase
    COMPLETE = "complete"  # its work is all recorded (or its handler returned)
    FAIL = "fail"  # its work failed for good, or its condition could not be evaluated
    CANCEL = "cancel"  # its batch was cancelled
    REOPEN = "reopen"  # it runs again: a retry of the batch, of failed items, a rewind


PHASE_TRANSITIONS: Mapping[tuple[PhaseState, PhaseEvent], PhaseState] = {
    (P.PENDING, PhaseEvent.START): P.RUNNING,
    (P.PENDING, PhaseEvent.SKIP): P.SKIPPED,
    (P.PENDING, PhaseEvent.FAIL): P.FAILED,
    (P.PENDING, PhaseEvent.CANCEL): P.CANCELLED,
    (P.RUNNING, PhaseEvent.COMPLETE): P.SUCCEEDED,
    (P.RUNNING, PhaseEvent.FAIL): P.FAILED,
    (P.RUNNING, PhaseEvent.CANCEL): P.CANCELLED,
    (P.SUCCEEDED, PhaseEvent.REOPEN): P.PENDING,
    (P.SKIPPED, PhaseEvent.REOPEN): P.PENDING,
    (P.FAILED, PhaseEvent.REOPEN): P.PENDING,
    (P.CANCELLED, PhaseEvent.REOPEN): P.PENDING,
}


def phase_after(state: PhaseState | str, event: PhaseEvent) -> PhaseState | None:
    """The phase's state after `event`, or None when the event does not apply to it (a
    late or duplicate event, which then changes nothing)."""
    return PHASE_TRANSITIONS.get((PhaseState(state), event))


def phase_sources(event: PhaseEvent) -> list[PhaseState]:
    """The states a phase may be in for `event` to apply (for a conditional update)."""
    return [state for state, e in PHASE_TRANSITIONS if e == event]


def phase_target(state: PhaseState | str, event: PhaseEvent) -> PhaseState:
    """The state after `event`, for a caller that has checked the event applies."""
    target = phase_after(state, event)
    if target is None:
        raise ValueError(f"a {state} phase cannot {event}")
    return target


# --- Batches ------------------------------------------------------------------------


class BatchEvent(StrEnum):
    ACCEPT = "accept"
    START = "start"
    COMPLETE = "complete"
    COMPLETE_WITH_ERRORS = "complete_with_errors"
    FAIL = "fail"
    CANCEL = "cancel"
    RETRY = "retry"  # its failed phases run again
    RETRY_ITEMS = "retry_items"  # its failed items run again
    ROLLBACK = "rollback"
    ROLLBACK_DONE = "rollback_done"
    ROLLBACK_FAILED = "rollback_failed"


_ACTIVE = (B.RECEIVED, B.ACCEPTED, B.RUNNING)
BATCH_EVENTS: Mapping[tuple[BatchState | None, BatchEvent], BatchState] = {
    (None, BatchEvent.ACCEPT): B.RECEIVED,
    (B.RECEIVED, BatchEvent.ACCEPT): B.ACCEPTED,
    (B.ACCEPTED, BatchEvent.START): B.RUNNING,
    (B.RUNNING, BatchEvent.COMPLETE): B.COMPLETED,
    (B.RUNNING, BatchEvent.COMPLETE_WITH_ERRORS): B.COMPLETED_WITH_ERRORS,
    **{(s, BatchEvent.FAIL): B.FAILED for s in _ACTIVE},
    **{(s, BatchEvent.CANCEL): B.CANCELLED for s in _ACTIVE},
    (B.FAILED, BatchEvent.RETRY): B.RUNNING,
    (B.COMPLETED_WITH_ERRORS, BatchEvent.RETRY_ITEMS): B.RUNNING,
    **{
        (s, BatchEvent.ROLLBACK): B.ROLLING_BACK
        for s in (B.FAILED, B.COMPLETED, B.COMPLETED_WITH_ERRORS, B.CANCELLED, B.ROLLBACK_FAILED)
    },
    (B.ROLLING_BACK, BatchEvent.ROLLBACK_DONE): B.ROLLED_BACK,
    (B.ROLLING_BACK, BatchEvent.ROLLBACK_FAILED): B.ROLLBACK_FAILED,
}


def batch_after(state: BatchState | str | None, event: BatchEvent) -> BatchState | None:
    """The batch's state after `event`, or None when the event is refused in its state."""
    return BATCH_EVENTS.get((BatchState(state) if state else None, event))


# --- Compensations (rollback) -------------------------------------------------------


class Compensation(StrEnum):
    NONE = ""
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class CompensationEvent(StrEnum):
    BEGIN = "begin"  # the batch starts rolling back
    RUN = "run"  # its compensation handler is called
    SUCCEED = "succeed"
    RETRY = "retry"  # it failed and will be tried again
    GIVE_UP = "give_up"  # it failed its last attempt


C = Compensation
COMPENSATION_TRANSITIONS: Mapping[tuple[Compensation, CompensationEvent], Compensation] = {
    (C.NONE, CompensationEvent.BEGIN): C.PENDING,
    (C.FAILED, CompensationEvent.BEGIN): C.PENDING,
    (C.PENDING, CompensationEvent.BEGIN): C.PENDING,
    (C.RUNNING, CompensationEvent.BEGIN): C.PENDING,  # a rollback started again
    (C.PENDING, CompensationEvent.RUN): C.RUNNING,
    (C.RUNNING, CompensationEvent.SUCCEED): C.SUCCEEDED,
    (C.RUNNING, CompensationEvent.RETRY): C.PENDING,
    (C.RUNNING, CompensationEvent.GIVE_UP): C.FAILED,
}


def compensation_after(state: str, event: CompensationEvent) -> Compensation | None:
    return COMPENSATION_TRANSITIONS.get((Compensation(state), event))


# --- What happens next to a running batch ---------------------------------------------


@dataclass(frozen=True)
class PhaseView:
    name: str
    state: PhaseState
    mode: str
    items_failed: int = 0
    output: Any = None


@dataclass(frozen=True)
class BatchView:
    """What deciding needs to know of a running batch: its phases in definition order,
    the plan's dependencies, triggers and conditions, and the names conditions read."""

    phases: tuple[PhaseView, ...]
    dependencies: Mapping[str, tuple[str, ...]]
    triggers: Mapping[str, str]
    conditions: Mapping[str, str | None]
    condition_names: Callable[[Mapping[str, PhaseView]], Mapping[str, Any]]
    on_failure: str = "stop"
    has_parent: bool = False

    def by_name(self) -> dict[str, PhaseView]:
        return {p.name: p for p in self.phases}


@dataclass(frozen=True)
class SkipPhase:
    phase: str
    reason: str


@dataclass(frozen=True)
class FailPhase:
    phase: str
    error: str


@dataclass(frozen=True)
class StartPhases:
    phases: tuple[str, ...]


@dataclass(frozen=True)
class FinishBatch:
    outcome: BatchState
    items_failed: int
    reason: str
    failed_phase: str = ""


@dataclass(frozen=True)
class BeginRollback:
    reason: str


@dataclass(frozen=True)
class NotifyParent:
    pass


Effect = SkipPhase | FailPhase | StartPhases | FinishBatch | BeginRollback | NotifyParent


@dataclass
class Decision:
    effects: list[Effect] = field(default_factory=list)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]


def _with(view: BatchView, name: str, state: PhaseState) -> BatchView:
    phases = tuple(
        PhaseView(p.name, state, p.mode, p.items_failed, p.output) if p.name == name else p
        for p in view.phases
    )
    return BatchView(
        phases,
        view.dependencies,
        view.triggers,
        view.conditions,
        view.condition_names,
        view.on_failure,
        view.has_parent,
    )


def decide_next(view: BatchView) -> Decision:
    """From the phases' states: skip what must be skipped, fail a phase whose condition
    cannot be evaluated, start what is ready — or, when nothing is left to run, finish
    the batch (and roll it back, or tell its parent).

    Skipping may make other phases ready or skipped, so this settles before it returns.
    Phases it starts are reported once; run it again after they end.
    """
    decision = Decision()
    while True:
        states = {p.name: p.state for p in view.phases}
        ready, skip = next_phases(view.dependencies, view.triggers, states)
        by_name = view.by_name()
        for name in ready:
            when = view.conditions.get(name)
            if not when:
                continue
            try:
                if not evaluate(when, view.condition_names(by_name)):
                    skip[name] = f"when: {when} is false"
            except ConditionError as exc:
                error = f"when: {when} could not be evaluated: {exc}"
                decision.effects.append(FailPhase(name, error))
                view = _with(view, name, P.FAILED)
                return _finish_if_done(view, decision)
        if not skip:
            break
        for name, reason in skip.items():
            decision.effects.append(SkipPhase(name, reason[:500]))
            view = _with(view, name, P.SKIPPED)
    if ready:
        decision.effects.append(StartPhases(tuple(ready)))
        return decision
    return _finish_if_done(view, decision)


def _finish_if_done(view: BatchView, decision: Decision) -> Decision:
    # An item fails in at most one phase (later phases skip it), so the phases' counts add
    # up to the batch's: no scan of the items on every transition.
    items_failed = sum(p.items_failed for p in view.phases if p.mode == "per_item")
    outcome = batch_outcome({p.name: p.state for p in view.phases}, items_failed)
    if outcome is None:
        return decision
    failed = [p for p in view.phases if p.state == P.FAILED]
    reason = f"phase {failed[0].name} failed" if failed else "all phases done"
    decision.effects.append(FinishBatch(outcome, items_failed, reason, failed[0].name if failed else ""))
    if outcome == B.FAILED and view.on_failure == "rollback":
        decision.effects.append(BeginRollback("automatic rollback: the batch failed"))
    elif view.has_parent:
        decision.effects.append(NotifyParent())
    return decision


# --- Retrying later -----------------------------------------------------------------


class RetryMode(StrEnum):
    COUNTDOWN = "countdown"  # the broker holds the task and delivers it when due
    DEFER = "defer"  # stored in the database and sent by beat when due


def retry_mode(delay: float, *, max_countdown: float) -> RetryMode:
    """A broker countdown longer than the broker's redelivery window would be delivered
    twice (Redis hands unacknowledged work to another worker after its visibility
    timeout): such a wait is stored for beat instead."""
    return RetryMode.DEFER if delay > max_countdown else RetryMode.COUNTDOWN
