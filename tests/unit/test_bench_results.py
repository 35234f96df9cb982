"""`make bench-check`'s comparison: ratios, a 25 % tolerance, both directions."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import check
from benchmarks.results import Ratio, compare, read_results, record

pytestmark = pytest.mark.unit


def results(**ratios: tuple[float, str]) -> dict[str, object]:
    return {"bench": {"ratios": {n: {"value": v, "better": b} for n, (v, b) in ratios.items()}}}


def test_a_lower_is_better_ratio_worse_by_more_than_25_percent_regresses() -> None:
    [verdict] = compare(results(r=(1.20, "lower")), results(r=(1.51, "lower")))
    assert verdict.regressed
    assert verdict.note == "worse by 26%"


def test_a_lower_is_better_ratio_within_25_percent_passes() -> None:
    [verdict] = compare(results(r=(1.20, "lower")), results(r=(1.49, "lower")))
    assert not verdict.regressed


def test_a_higher_is_better_ratio_regresses_when_it_falls_by_more_than_the_tolerance() -> None:
    [fell] = compare(results(r=(1.0, "higher")), results(r=(0.79, "higher")))
    [held] = compare(results(r=(1.0, "higher")), results(r=(0.81, "higher")))
    assert fell.regressed and not held.regressed


def test_an_improvement_is_reported_not_failed() -> None:
    [verdict] = compare(results(r=(1.5, "lower")), results(r=(1.0, "lower")))
    assert not verdict.regressed
    assert verdict.note == "better by 33%"


def test_a_ratio_missing_from_the_run_or_the_baseline_is_reported_not_failed() -> None:
    verdicts = {v.name: v for v in compare(results(old=(1.0, "lower")), results(new=(1.0, "lower")))}
    assert verdicts["bench/old"].note == "not measured in this run"
    assert verdicts["bench/new"].note == "new: not in the baseline"
    assert not any(v.regressed for v in verdicts.values())


def test_record_keeps_the_other_benchmarks_entries(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    record("bench", [Ratio("a", 1.25, "lower", "x")], path=path)
    record("ingest", [Ratio("b", 0.5, "higher", "y")], path=path)
    data = read_results(path)
    assert data["bench"]["ratios"]["a"]["value"] == 1.25
    assert data["ingest"]["ratios"]["b"]["better"] == "higher"


def test_the_check_command_fails_on_a_regression_and_passes_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOS_HOME", str(tmp_path))
    baseline = tmp_path / "baseline.json"
    record("bench", [Ratio("bos_over_chunked", 1.2, "lower", "x")], path=baseline)
    monkeypatch.setattr(check, "BASELINE", baseline)
    monkeypatch.setattr(check, "read_baseline", lambda: read_results(baseline))

    record("bench", [Ratio("bos_over_chunked", 1.3, "lower", "x")])
    assert check.main([]) == 0
    record("bench", [Ratio("bos_over_chunked", 1.6, "lower", "x")])
    assert check.main([]) == 1


def test_the_committed_baseline_holds_every_ratio_the_benchmarks_write() -> None:
    from benchmarks.results import flatten, read_baseline

    names = set(flatten(read_baseline()))
    assert {
        "bench/bos_over_chunked",
        "bench/latency_p50_over_kafka_round_trip",
        "ingest/consumer_over_plain_loop",
    } <= names
