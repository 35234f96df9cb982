"""The pure insights: SLA projection, median/MAD baselines, Holt, the breaker trend, back-tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.insights.backtest import backtest_anomalies, backtest_breakers, backtest_surges
from orchestrator.insights.forecasting import (
    breaker_crossing,
    holt,
    linear_trend,
    predict_surge,
    surge_threshold,
    trip_ratio,
)
from orchestrator.insights.projection import (
    Basis,
    PhaseHistory,
    PhaseProgress,
    SlaState,
    effective_deadline,
    project_finish,
    sla_state,
)
from orchestrator.insights.robust import Metric, RunMetrics, baseline, check_value, detect, mad, median

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def s(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


# --- projection ---


def test_running_phase_is_projected_from_its_measured_rate() -> None:
    phase = PhaseProgress("score", "running", "per_item", items_total=100, items_done=25, started_at=s(-50))
    projection = project_finish([phase], {}, now=NOW)
    # 25 items in 50 s: 75 left take 150 s.
    assert projection.finish_at == s(150)
    assert projection.slowest_phase == "score"
    assert projection.phases[0].basis == Basis.MEASURED


def test_pending_phases_follow_the_critical_path_with_history() -> None:
    phases = [
        PhaseProgress("a", "running", "per_item", items_total=10, items_done=5, started_at=s(-10)),
        PhaseProgress("b", "pending", "per_item", after=("a",), items_total=10),
        PhaseProgress("c", "pending", "per_batch", after=("a",)),
        PhaseProgress("d", "pending", "per_batch", after=("b", "c")),
    ]
    history = {
        "b": PhaseHistory(seconds_per_item=3.0),  # 30 s
        "c": PhaseHistory(seconds=5.0),
        "d": PhaseHistory(seconds=2.0),
    }
    projection = project_finish(phases, history, now=NOW)
    # a: 10 s left; then b (30 s) and c (5 s) in parallel; then d (2 s).
    assert projection.finish_at == s(42)
    assert projection.slowest_phase == "b"
    assert projection.complete


def test_finished_batch_projects_its_real_finish_and_unknown_phases_are_flagged() -> None:
    done = [PhaseProgress("a", "succeeded", "per_batch", started_at=s(-9), finished_at=s(-3))]
    assert project_finish(done, {}, now=NOW).finish_at == s(-3)
    fresh = project_finish([PhaseProgress("a", "pending", "per_batch")], {}, now=NOW)
    assert fresh.finish_at == NOW and not fresh.complete


def test_running_phase_without_progress_uses_history_minus_elapsed() -> None:
    phase = PhaseProgress("a", "running", "per_batch", started_at=s(-4))
    assert project_finish([phase], {"a": PhaseHistory(seconds=10)}, now=NOW).finish_at == s(6)


def test_sla_states_and_effective_deadline() -> None:
    assert effective_deadline(None, NOW, 60) == s(60)
    assert effective_deadline(s(5), NOW, 60) == s(5)
    assert effective_deadline(None, NOW, None) is None
    kw = {"deadline": s(10), "finished_at": None, "at_risk_at": None, "breached_at": None}
    assert sla_state(terminal=False, **kw) == SlaState.OK
    assert sla_state(terminal=False, **{**kw, "at_risk_at": NOW}) == SlaState.AT_RISK
    assert sla_state(terminal=False, **{**kw, "breached_at": s(11)}) == SlaState.BREACHED
    assert sla_state(terminal=True, **{**kw, "finished_at": s(9)}) == SlaState.MET
    assert sla_state(terminal=True, **{**kw, "finished_at": s(12)}) == SlaState.MISSED
    assert sla_state(terminal=False, **{**kw, "deadline": None}) is None


# --- median / MAD ---


def test_median_and_mad_ignore_an_outlier() -> None:
    values = [10.0, 11.0, 9.0, 10.0, 1000.0]
    assert median(values) == 10.0
    assert mad(values) == 1.0
    assert baseline(values, min_runs=5) is not None
    assert baseline(values, min_runs=6) is None


def test_detector_flags_only_the_bad_side() -> None:
    history = [10.0 + (i % 3) * 0.5 for i in range(20)]
    slow = check_value(Metric.DURATION, 30.0, history)
    assert slow is not None and slow.high < 30.0
    assert check_value(Metric.DURATION, 2.0, history) is None  # faster is fine
    assert check_value(Metric.THROUGHPUT, 2.0, history) is not None  # slower throughput is not


def test_detect_checks_every_metric_of_a_run() -> None:
    history = [RunMetrics(10.0 + i % 2, 5.0, 0.01) for i in range(20)]
    found = detect(RunMetrics(10.5, 5.0, 0.4), history)
    assert [a.metric for a in found] == [Metric.ERROR_RATE]
    assert detect(RunMetrics(10.5, 5.0, 0.01), history) == []


# --- Holt and the surge rule ---


def test_holt_follows_a_linear_trend() -> None:
    fit = holt([2.0, 4.0, 6.0, 8.0, 10.0])
    assert fit.forecast(1) == pytest.approx(12.0)
    assert holt([5.0] * 10).forecast(3) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="at least one"):
        holt([])


def test_surge_is_predicted_before_the_count_crosses() -> None:
    quiet = [1.0] * 20 + [2.0, 4.0, 8.0, 12.0]
    assert surge_threshold(quiet, factor=3, minimum=10, hours=24) == 10.0
    found = predict_surge(quiet, 3, factor=3, minimum=10, hours=24)
    assert found is not None and found.forecast >= found.threshold
    # Already over: the rising-rate alert's job, not a prediction.
    assert predict_surge(quiet, 30, factor=3, minimum=10, hours=24) is None
    assert predict_surge([1.0] * 24, 1, factor=3, minimum=10, hours=24) is None


# --- breaker trend ---


def test_trip_ratio_falls_with_fewer_failures_allowed_in_a_row() -> None:
    assert 0 < trip_ratio(5, 20) < trip_ratio(2, 20) < 1


def test_breaker_trend_predicts_a_falling_ratio_and_not_a_steady_one() -> None:
    falling = [(20, f) for f in (0, 1, 1, 2, 3, 4, 5, 6, 7)]
    forecast = breaker_crossing(falling, fail_max=5, horizon_slots=6)
    assert forecast is not None and 0 <= forecast.steps_to_trip <= 6
    assert breaker_crossing([(20, 1)] * 12, fail_max=5, horizon_slots=6) is None
    assert breaker_crossing([(0, 0)] * 12, fail_max=5, horizon_slots=6) is None
    trend = linear_trend([(0, 1.0), (1, 0.9), (2, 0.8)])
    assert trend is not None and trend.slope == pytest.approx(-0.1)


# --- back-tests: the detectors stay above their stated floors (docs/anomalies.md) ---


def test_backtests_score_above_their_floors() -> None:
    anomalies = backtest_anomalies(seed=3, traces=10)
    surges = backtest_surges(seed=3, traces=40)
    breakers = backtest_breakers(seed=3, traces=40)
    assert anomalies.faults > 0 and surges.faults > 0 and breakers.faults > 0
    assert anomalies.precision >= 0.8 and anomalies.recall >= 0.75
    assert surges.precision >= 0.7 and surges.recall >= 0.5
    assert breakers.precision >= 0.7 and breakers.recall >= 0.6
    assert surges.lead(0.5) is not None and surges.lead(0.5) > 0


def test_severity_ranks_the_farthest_anomaly_first() -> None:
    history = [RunMetrics(10.0 + i % 2, 5.0 + (i % 2) * 0.1, 0.01) for i in range(20)]
    found = detect(RunMetrics(100.0, 1.0, 0.9), history)
    assert {a.metric for a in found} == {Metric.DURATION, Metric.THROUGHPUT, Metric.ERROR_RATE}
    assert max(found, key=lambda a: a.severity).metric == Metric.DURATION
