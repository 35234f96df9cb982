"""The batch state machine and phase scheduling, as pure code."""

from __future__ import annotations

import pytest

from orchestrator.states import (
    BatchState,
    PhaseState,
    TransitionNotAllowed,
    batch_outcome,
    can_transition,
    check_transition,
    is_valid_path,
    next_phases,
    ready_phases,
)

pytestmark = pytest.mark.unit
B, P = BatchState, PhaseState
DEPS = {
    "validate": (),
    "spellcheck": ("validate",),
    "stats": ("validate",),
    "aggregate": ("spellcheck", "stats"),
}


def test_happy_path_is_a_valid_path() -> None:
    assert is_valid_path([None, B.RECEIVED, B.ACCEPTED, B.RUNNING, B.COMPLETED])


@pytest.mark.parametrize("terminal", [B.COMPLETED, B.CANCELLED])
def test_an_ended_batch_can_only_be_rolled_back(terminal: BatchState) -> None:
    assert [t for t in BatchState if can_transition(terminal, t)] == [B.ROLLING_BACK]


def test_a_batch_with_failed_items_can_run_them_again_or_roll_back() -> None:
    assert {t for t in BatchState if can_transition(B.COMPLETED_WITH_ERRORS, t)} == {
        B.RUNNING,
        B.ROLLING_BACK,
    }


def test_rolled_back_is_final() -> None:
    assert not [t for t in BatchState if can_transition(B.ROLLED_BACK, t)]


def test_a_failed_rollback_can_be_started_again() -> None:
    assert is_valid_path([B.COMPLETED, B.ROLLING_BACK, B.ROLLBACK_FAILED, B.ROLLING_BACK, B.ROLLED_BACK])


def test_skipping_acceptance_is_refused() -> None:
    with pytest.raises(TransitionNotAllowed, match="received to running"):
        check_transition(B.RECEIVED, B.RUNNING)


def test_failed_batch_may_be_retried() -> None:
    assert can_transition(B.FAILED, B.RUNNING)


def test_first_phase_is_ready_at_start() -> None:
    states = dict.fromkeys(DEPS, P.PENDING)
    assert ready_phases(DEPS, states) == ["validate"]


def test_independent_phases_become_ready_together() -> None:
    states = {**dict.fromkeys(DEPS, P.PENDING), "validate": P.SUCCEEDED}
    assert ready_phases(DEPS, states) == ["spellcheck", "stats"]


def test_join_waits_for_every_dependency() -> None:
    states = {"validate": P.SUCCEEDED, "spellcheck": P.SUCCEEDED, "stats": P.RUNNING, "aggregate": P.PENDING}
    assert ready_phases(DEPS, states) == []
    states["stats"] = P.SUCCEEDED
    assert ready_phases(DEPS, states) == ["aggregate"]


def test_outcome_waits_while_a_phase_runs() -> None:
    assert batch_outcome({"a": P.FAILED, "b": P.RUNNING}, 0) is None


def test_failed_phase_fails_the_batch_once_nothing_runs() -> None:
    assert batch_outcome({"a": P.FAILED, "b": P.SUCCEEDED, "c": P.PENDING}, 0) == B.FAILED


def test_failed_items_give_completed_with_errors() -> None:
    done = dict.fromkeys(DEPS, P.SUCCEEDED)
    assert batch_outcome(done, 0) == B.COMPLETED
    assert batch_outcome(done, 3) == B.COMPLETED_WITH_ERRORS


def test_a_phase_after_a_skipped_one_is_skipped_and_so_on() -> None:
    deps = {"a": (), "grading": ("a",), "report": ("grading",), "final": ("report",)}
    states = {"a": P.SUCCEEDED, "grading": P.SKIPPED, "report": P.PENDING, "final": P.PENDING}
    start, skip = next_phases(deps, {}, states)
    assert start == []
    assert skip == {"report": "runs after skipped grading", "final": "runs after skipped report"}


def test_a_none_failed_trigger_runs_after_a_skipped_branch() -> None:
    deps = {"a": (), "grading": ("a",), "stats": ("a",), "aggregate": ("grading", "stats")}
    states = {"a": P.SUCCEEDED, "grading": P.SKIPPED, "stats": P.SUCCEEDED, "aggregate": P.PENDING}
    assert next_phases(deps, {"aggregate": "none_failed"}, states) == (["aggregate"], {})
    assert next_phases(deps, {}, states) == ([], {"aggregate": "runs after skipped grading"})


def test_nothing_starts_or_skips_after_a_failure() -> None:
    states = {"validate": P.FAILED, "spellcheck": P.PENDING, "stats": P.PENDING, "aggregate": P.PENDING}
    assert next_phases(DEPS, {}, states) == ([], {})
