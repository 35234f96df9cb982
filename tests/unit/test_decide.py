"""The pure engine: every (state, event) pair of the transition tables, and decisions."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from orchestrator.decide import (
    BATCH_EVENTS,
    COMPENSATION_TRANSITIONS,
    PHASE_TRANSITIONS,
    BatchEvent,
    BatchView,
    BeginRollback,
    Compensation,
    CompensationEvent,
    FailPhase,
    FinishBatch,
    NotifyParent,
    PhaseEvent,
    PhaseView,
    RetryMode,
    SkipPhase,
    StartPhases,
    batch_after,
    compensation_after,
    decide_next,
    phase_after,
    retry_mode,
)
from orchestrator.states import BATCH_TRANSITIONS, BatchState, PhaseState

pytestmark = pytest.mark.unit
P, B, E = PhaseState, BatchState, PhaseEvent

# The whole phase table, written out: (state, event) → state, or None (refused: changes nothing).
PHASE_EXPECTED: dict[tuple[PhaseState, PhaseEvent], PhaseState | None] = {
    (P.PENDING, E.START): P.RUNNING,
    (P.PENDING, E.SKIP): P.SKIPPED,
    (P.PENDING, E.COMPLETE): None,
    (P.PENDING, E.FAIL): P.FAILED,
    (P.PENDING, E.CANCEL): P.CANCELLED,
    (P.PENDING, E.REOPEN): None,
    (P.RUNNING, E.START): None,
    (P.RUNNING, E.SKIP): None,
    (P.RUNNING, E.COMPLETE): P.SUCCEEDED,
    (P.RUNNING, E.FAIL): P.FAILED,
    (P.RUNNING, E.CANCEL): P.CANCELLED,
    (P.RUNNING, E.REOPEN): None,
    **{
        (s, e): None
        for s in (P.SUCCEEDED, P.SKIPPED, P.FAILED, P.CANCELLED)
        for e in PhaseEvent
        if e != E.REOPEN
    },
    **{(s, E.REOPEN): P.PENDING for s in (P.SUCCEEDED, P.SKIPPED, P.FAILED, P.CANCELLED)},
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(PhaseState, PhaseEvent)))
def test_every_phase_state_and_event(state: PhaseState, event: PhaseEvent) -> None:
    assert phase_after(state, event) == PHASE_EXPECTED[(state, event)]


def test_the_phase_table_has_no_entry_the_enumeration_does_not_expect() -> None:
    assert {k for k, v in PHASE_EXPECTED.items() if v is not None} == set(PHASE_TRANSITIONS)


BE = BatchEvent
BATCH_EXPECTED: dict[tuple[BatchState | None, BatchEvent], BatchState] = {
    (None, BE.ACCEPT): B.RECEIVED,
    (B.RECEIVED, BE.ACCEPT): B.ACCEPTED,
    (B.ACCEPTED, BE.START): B.RUNNING,
    (B.RUNNING, BE.COMPLETE): B.COMPLETED,
    (B.RUNNING, BE.COMPLETE_WITH_ERRORS): B.COMPLETED_WITH_ERRORS,
    (B.RECEIVED, BE.FAIL): B.FAILED,
    (B.ACCEPTED, BE.FAIL): B.FAILED,
    (B.RUNNING, BE.FAIL): B.FAILED,
    (B.RECEIVED, BE.CANCEL): B.CANCELLED,
    (B.ACCEPTED, BE.CANCEL): B.CANCELLED,
    (B.RUNNING, BE.CANCEL): B.CANCELLED,
    (B.FAILED, BE.RETRY): B.RUNNING,
    (B.COMPLETED_WITH_ERRORS, BE.RETRY_ITEMS): B.RUNNING,
    (B.FAILED, BE.ROLLBACK): B.ROLLING_BACK,
    (B.COMPLETED, BE.ROLLBACK): B.ROLLING_BACK,
    (B.COMPLETED_WITH_ERRORS, BE.ROLLBACK): B.ROLLING_BACK,
    (B.CANCELLED, BE.ROLLBACK): B.ROLLING_BACK,
    (B.ROLLBACK_FAILED, BE.ROLLBACK): B.ROLLING_BACK,
    (B.ROLLING_BACK, BE.ROLLBACK_DONE): B.ROLLED_BACK,
    (B.ROLLING_BACK, BE.ROLLBACK_FAILED): B.ROLLBACK_FAILED,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product([None, *BatchState], BatchEvent)))
def test_every_batch_state_and_event(state: BatchState | None, event: BatchEvent) -> None:
    assert batch_after(state, event) == BATCH_EXPECTED.get((state, event))


def test_batch_events_make_exactly_the_allowed_transitions() -> None:
    assert set(BATCH_EVENTS) == set(BATCH_EXPECTED)
    edges = {(s, t) for (s, _), t in BATCH_EVENTS.items()}
    allowed = {(s, t) for s, targets in BATCH_TRANSITIONS.items() for t in targets}
    assert edges == allowed


C, CE = Compensation, CompensationEvent
COMPENSATION_EXPECTED = {
    (C.NONE, CE.BEGIN): C.PENDING,
    (C.PENDING, CE.BEGIN): C.PENDING,
    (C.RUNNING, CE.BEGIN): C.PENDING,
    (C.FAILED, CE.BEGIN): C.PENDING,
    (C.PENDING, CE.RUN): C.RUNNING,
    (C.RUNNING, CE.SUCCEED): C.SUCCEEDED,
    (C.RUNNING, CE.RETRY): C.PENDING,
    (C.RUNNING, CE.GIVE_UP): C.FAILED,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(Compensation, CompensationEvent)))
def test_every_compensation_state_and_event(state: Compensation, event: CompensationEvent) -> None:
    assert compensation_after(state.value, event) == COMPENSATION_EXPECTED.get((state, event))
    assert set(COMPENSATION_TRANSITIONS) == set(COMPENSATION_EXPECTED)


def view(states: dict[str, PhaseState], **kw: Any) -> BatchView:
    deps = kw.pop("deps", {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")})
    conditions = kw.pop("conditions", {})
    failed = kw.pop("items_failed", {})
    return BatchView(
        phases=tuple(PhaseView(n, s, "per_item", failed.get(n, 0)) for n, s in states.items()),
        dependencies=deps,
        triggers=kw.pop("triggers", {}),
        conditions=conditions,
        condition_names=lambda phases: {"metadata": kw.get("metadata", {})},
        on_failure=kw.pop("on_failure", "stop"),
        has_parent=kw.pop("has_parent", False),
    )


def test_a_new_batch_starts_its_first_phase() -> None:
    decision = decide_next(view(dict.fromkeys("abcd", P.PENDING)))
    assert decision.effects == [StartPhases(("a",))]


def test_independent_phases_start_together() -> None:
    states = {"a": P.SUCCEEDED, "b": P.PENDING, "c": P.PENDING, "d": P.PENDING}
    assert decide_next(view(states)).effects == [StartPhases(("b", "c"))]


def test_a_false_condition_skips_the_phase_and_what_needs_it() -> None:
    states = {"a": P.SUCCEEDED, "b": P.PENDING, "c": P.SUCCEEDED, "d": P.PENDING}
    decision = decide_next(view(states, conditions={"b": "metadata.get('x')"}))
    assert decision.of(SkipPhase) == [
        SkipPhase("b", "when: metadata.get('x') is false"),
        SkipPhase("d", "runs after skipped b"),
    ]
    assert decision.of(FinishBatch) == [FinishBatch(B.COMPLETED, 0, "all phases done")]


def test_a_condition_that_cannot_be_evaluated_fails_the_phase_and_the_batch() -> None:
    states = {"a": P.SUCCEEDED, "b": P.PENDING, "c": P.SUCCEEDED, "d": P.PENDING}
    decision = decide_next(view(states, conditions={"b": "nosuchname > 1"}))
    assert [type(e) for e in decision.effects] == [FailPhase, FinishBatch]
    assert decision.of(FinishBatch)[0].outcome == B.FAILED


def test_nothing_finishes_while_a_phase_runs() -> None:
    states = {"a": P.SUCCEEDED, "b": P.FAILED, "c": P.RUNNING, "d": P.PENDING}
    assert decide_next(view(states)).effects == []


@pytest.mark.parametrize(
    ("on_failure", "has_parent", "after"),
    [("rollback", False, [BeginRollback]), ("stop", True, [NotifyParent]), ("stop", False, [])],
)
def test_a_failed_batch_rolls_back_or_tells_its_parent(
    on_failure: str, has_parent: bool, after: list[type]
) -> None:
    states = {"a": P.SUCCEEDED, "b": P.FAILED, "c": P.SUCCEEDED, "d": P.PENDING}
    decision = decide_next(view(states, on_failure=on_failure, has_parent=has_parent))
    assert [type(e) for e in decision.effects] == [FinishBatch, *after]
    assert decision.effects[0] == FinishBatch(B.FAILED, 0, "phase b failed", "b")


def test_failed_items_make_the_batch_complete_with_errors() -> None:
    states = dict.fromkeys("abcd", P.SUCCEEDED)
    decision = decide_next(view(states, items_failed={"a": 2, "c": 1}, has_parent=True))
    assert decision.effects == [FinishBatch(B.COMPLETED_WITH_ERRORS, 3, "all phases done"), NotifyParent()]


def test_a_long_wait_is_stored_for_beat_and_a_short_one_is_a_countdown() -> None:
    assert retry_mode(5, max_countdown=600) == RetryMode.COUNTDOWN
    assert retry_mode(600, max_countdown=600) == RetryMode.COUNTDOWN
    assert retry_mode(601, max_countdown=600) == RetryMode.DEFER
