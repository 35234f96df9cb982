"""Profiling's pure helpers: the critical path, the bottleneck, formatting."""

from __future__ import annotations

import pytest

from orchestrator.profiling import PercentileCont, choose_bottleneck, critical_path, format_seconds

pytestmark = pytest.mark.unit

ESSAYS = {
    "validate": (),
    "spellcheck": ("validate",),
    "text_stats": ("validate",),
    "aggregate": ("spellcheck", "text_stats"),
}


def test_critical_path_is_the_heaviest_path() -> None:
    weights = {"validate": 0.6, "spellcheck": 3.1, "text_stats": 1.1, "aggregate": 0.3}
    assert critical_path(ESSAYS, weights) == ("validate", "spellcheck", "aggregate")
    weights["text_stats"] = 6.0
    assert critical_path(ESSAYS, weights) == ("validate", "text_stats", "aggregate")


def test_critical_path_may_end_before_the_last_phase_or_start_anywhere() -> None:
    deps = {"a": (), "b": (), "c": ("a",), "d": ("b",)}
    assert critical_path(deps, {"a": 1, "b": 5, "c": 1, "d": 1}) == ("b", "d")
    assert critical_path(deps, {"a": 1, "b": 0.5, "c": 1, "d": 0}) == ("a", "c")


def test_critical_path_ties_and_missing_weights_still_run_source_to_sink() -> None:
    # Unweighted: the first predecessor in definition order, the last sink.
    assert critical_path(ESSAYS, {}) == ("validate", "spellcheck", "aggregate")
    assert critical_path(ESSAYS, {"validate": 1.0}) == ("validate", "spellcheck", "aggregate")


def test_critical_path_of_nothing() -> None:
    assert critical_path({}, {}) == ()
    assert critical_path({"only": ()}, {"only": 2.0}) == ("only",)


def test_bottleneck_is_the_longest_run_on_the_critical_path() -> None:
    path = ("validate", "spellcheck", "aggregate")
    run = {"validate": 0.5, "spellcheck": 3.0, "text_stats": 9.0, "aggregate": 0.2}
    wait = {"validate": 0.1, "spellcheck": 0.1, "text_stats": 0.1, "aggregate": 0.1}

    bottleneck = choose_bottleneck(path, run, wait, path_seconds=4.0)

    assert bottleneck is not None
    assert (bottleneck.phase, bottleneck.cause) == ("spellcheck", "run_time")  # text_stats is off the path
    assert bottleneck.reason == (
        "spellcheck has the longest mean run time on the critical path: 3.00 s of 4.00 s end to end."
    )


def test_a_starved_phase_wins_the_longest_wait_first() -> None:
    path = ("validate", "spellcheck", "aggregate")
    run = {"validate": 0.5, "spellcheck": 3.0, "text_stats": 1.0, "aggregate": 0.2}
    wait = {"validate": 0.1, "spellcheck": 0.1, "text_stats": 5.0, "aggregate": 0.3}

    bottleneck = choose_bottleneck(path, run, wait, path_seconds=4.2)

    assert bottleneck is not None
    assert (bottleneck.phase, bottleneck.cause) == ("text_stats", "queue_wait")
    assert "mean queue wait 5.00 s" in bottleneck.reason and "1.00 s" in bottleneck.reason


def test_unknown_figures_choose_nothing_or_are_skipped() -> None:
    assert choose_bottleneck((), {}, {}, 0.0) is None
    assert choose_bottleneck(("a",), {"a": None}, {"a": None}, 0.0) is None
    bottleneck = choose_bottleneck(("a", "b"), {"a": None, "b": 1.0}, {"a": 9.0, "b": None}, 1.0)
    assert bottleneck is not None and bottleneck.phase == "b"


def test_format_seconds() -> None:
    assert format_seconds(None) == "—"
    assert format_seconds(0.2) == "0.20 s"
    assert format_seconds(125) == "2 min 05 s"
    assert format_seconds(5400) == "1.5 h"


def test_percentile_fraction_is_checked() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        PercentileCont(1.5, "finished_at")
