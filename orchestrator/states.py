"""The batch and phase state machines (CONTRACT §4), as pure code.

No Django here: the batch transition table, the terminal sets, and the functions that decide
what a batch does next from the states of its phases. Services call these and persist
what they decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum


class BatchState(StrEnum):
    RECEIVED = "received"
    ACCEPTED = "accepted"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"
    # Non-terminal: compensations running; or one failed for good (an operator may
    # start the rollback again).
    ROLLING_BACK = "rolling_back"
    ROLLBACK_FAILED = "rollback_failed"


class PhaseState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class ItemState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


BATCH_TERMINAL = frozenset(
    {
        BatchState.COMPLETED,
        BatchState.COMPLETED_WITH_ERRORS,
        BatchState.FAILED,
        BatchState.CANCELLED,
        BatchState.ROLLED_BACK,
        # Resting, not final: an operator may start the rollback again.
        BatchState.ROLLBACK_FAILED,
    }
)
PHASE_DONE = frozenset({PhaseState.SUCCEEDED, PhaseState.SKIPPED})
# A batch in these states has its pending items succeeded (settled after its commit).
SETTLED_STATES = (BatchState.COMPLETED, BatchState.COMPLETED_WITH_ERRORS)


def reported_item_state(item_state: str, batch_state: str) -> str:
    """An item's state for readers: a pending item of a completed batch has succeeded (its
    row is settled right after the batch's commit, outside the batch lock)."""
    if item_state == ItemState.PENDING and batch_state in SETTLED_STATES:
        return ItemState.SUCCEEDED.value
    return item_state


BATCH_TRANSITIONS: Mapping[BatchState | None, frozenset[BatchState]] = {
    None: frozenset({BatchState.RECEIVED}),
    BatchState.RECEIVED: frozenset({BatchState.ACCEPTED, BatchState.FAILED, BatchState.CANCELLED}),
    BatchState.ACCEPTED: frozenset({BatchState.RUNNING, BatchState.FAILED, BatchState.CANCELLED}),
    BatchState.RUNNING: frozenset(
        {
            BatchState.COMPLETED,
            BatchState.COMPLETED_WITH_ERRORS,
            BatchState.FAILED,
            BatchState.CANCELLED,
        }
    ),
    # A failed batch may be retried (its failed phases run again) or rolled back.
    BatchState.FAILED: frozenset({BatchState.RUNNING, BatchState.ROLLING_BACK}),
    BatchState.COMPLETED: frozenset({BatchState.ROLLING_BACK}),
    # An operator may retry the failed items of a batch that completed with errors.
    BatchState.COMPLETED_WITH_ERRORS: frozenset({BatchState.ROLLING_BACK, BatchState.RUNNING}),
    BatchState.CANCELLED: frozenset({BatchState.ROLLING_BACK}),
    BatchState.ROLLING_BACK: frozenset({BatchState.ROLLED_BACK, BatchState.ROLLBACK_FAILED}),
    BatchState.ROLLBACK_FAILED: frozenset({BatchState.ROLLING_BACK}),
    BatchState.ROLLED_BACK: frozenset(),
}


class TransitionNotAllowed(Exception):
    """A state change that the state machine does not allow."""

    def __init__(self, current: str | None, target: str) -> None:
        super().__init__(f"cannot go from {current or 'nothing'} to {target}")
        self.current = current
        self.target = target


def can_transition(current: BatchState | None, target: BatchState) -> bool:
    return target in BATCH_TRANSITIONS[current]


def check_transition(current: BatchState | None, target: BatchState) -> None:
    if not can_transition(current, target):
        raise TransitionNotAllowed(current, target)


def is_valid_path(states: Iterable[BatchState | None]) -> bool:
    """True when each consecutive pair of states is an allowed transition."""
    seq = list(states)
    return all(b is not None and can_transition(a, b) for a, b in zip(seq, seq[1:], strict=False))


def ready_phases(
    dependencies: Mapping[str, Iterable[str]], phase_states: Mapping[str, PhaseState]
) -> list[str]:
    """The pending phases whose every dependency is done, in definition order."""
    return [
        name
        for name, after in dependencies.items()
        if phase_states[name] == PhaseState.PENDING and all(phase_states[dep] in PHASE_DONE for dep in after)
    ]


def next_phases(
    dependencies: Mapping[str, Iterable[str]],
    triggers: Mapping[str, str],
    phase_states: Mapping[str, PhaseState],
) -> tuple[list[str], dict[str, str]]:
    """What to do next: (phases to start, {phase to skip: why}).

    A pending phase whose dependencies are all done starts, unless one of them was
    skipped and its trigger is `all_succeeded` (the default): then it is skipped too,
    and so, in turn, may be the phases after it. With trigger `none_failed` a skipped
    dependency counts as done. Nothing starts or skips once a phase has failed.
    """
    states = dict(phase_states)
    if PhaseState.FAILED in states.values():
        return [], {}
    skip: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for name, after in dependencies.items():
            deps = list(after)
            if states[name] != PhaseState.PENDING or not all(states[d] in PHASE_DONE for d in deps):
                continue
            skipped = [d for d in deps if states[d] == PhaseState.SKIPPED]
            if skipped and triggers.get(name, "all_succeeded") == "all_succeeded":
                skip[name] = f"runs after skipped {', '.join(skipped)}"
                states[name] = PhaseState.SKIPPED
                changed = True
    return ready_phases(dependencies, states), skip


def batch_outcome(phase_states: Mapping[str, PhaseState], items_failed: int) -> BatchState | None:
    """The terminal state a running batch reaches, or None while work remains.

    A failed phase fails the batch once nothing else is running (so no work is left
    orphaned); when every phase is done the batch is completed, with errors if any
    item failed.
    """
    states = set(phase_states.values())
    if PhaseState.RUNNING in states:
        return None
    if PhaseState.FAILED in states:
        return BatchState.FAILED
    if states <= PHASE_DONE:
        return BatchState.COMPLETED_WITH_ERRORS if items_failed else BatchState.COMPLETED
    return None
