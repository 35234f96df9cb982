"""Robust baselines and the anomaly detector for finished phases. No Django here.

A baseline is the median and the median absolute deviation (MAD) of a metric over a
window of recent runs of the same pipeline and phase. The median and MAD ignore the odd
outlier in the window (a previous anomaly does not widen the range the way it would
widen a mean and standard deviation), and need no regular spacing in time, which batch
runs do not have. A value is anomalous when it lies more than `k` scaled MADs from the
median on the bad side of its metric (a longer duration, a lower throughput, a higher
error rate); a floor on the spread keeps a window of near-identical runs from flagging
every small wobble. See docs/anomalies.md.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

# The MAD of a normal sample times this estimates its standard deviation.
MAD_SCALE = 1.4826
DEFAULT_K = 4.0
MIN_RUNS = 8  # fewer runs in the window: no baseline, no verdict


class Metric(StrEnum):
    DURATION = "duration_seconds"
    THROUGHPUT = "items_per_second"
    ERROR_RATE = "error_rate"


# Which side is bad, and the least spread allowed: a share of the median and an absolute amount.
HIGH_IS_BAD = {Metric.DURATION: True, Metric.THROUGHPUT: False, Metric.ERROR_RATE: True}
RELATIVE_FLOOR = {Metric.DURATION: 0.1, Metric.THROUGHPUT: 0.1, Metric.ERROR_RATE: 0.0}
ABSOLUTE_FLOOR = {Metric.DURATION: 0.05, Metric.THROUGHPUT: 0.0, Metric.ERROR_RATE: 0.05}


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("the median of no values")
    return float(statistics.median(values))


def mad(values: Sequence[float]) -> float:
    """The median absolute deviation from the median (unscaled)."""
    centre = median(values)
    return median([abs(v - centre) for v in values])


@dataclass(frozen=True)
class Baseline:
    median: float
    mad: float
    runs: int

    def spread(self, metric: Metric) -> float:
        """The scaled MAD, at least the metric's floor."""
        floor = max(RELATIVE_FLOOR[metric] * abs(self.median), ABSOLUTE_FLOOR[metric])
        return max(MAD_SCALE * self.mad, floor)

    def expected_range(self, metric: Metric, k: float = DEFAULT_K) -> tuple[float, float]:
        width = k * self.spread(metric)
        return max(self.median - width, 0.0), self.median + width


def baseline(values: Sequence[float], *, min_runs: int = MIN_RUNS) -> Baseline | None:
    """The median/MAD baseline of `values`; None with fewer than `min_runs` of them."""
    if len(values) < min_runs:
        return None
    return Baseline(median(values), mad(values), len(values))


@dataclass(frozen=True)
class Anomaly:
    metric: Metric
    value: float
    low: float
    high: float
    median: float

    @property
    def severity(self) -> float:
        """How far out it lies: its distance from the median over the range's half-width."""
        half = self.high - self.median
        return abs(self.value - self.median) / half if half > 0 else float("inf")


def check_value(
    metric: Metric, value: float, history: Sequence[float], *, k: float = DEFAULT_K, min_runs: int = MIN_RUNS
) -> Anomaly | None:
    """An anomaly when `value` lies outside the expected range of `history`, on the bad side."""
    base = baseline(history, min_runs=min_runs)
    if base is None:
        return None
    low, high = base.expected_range(metric, k)
    bad = value > high if HIGH_IS_BAD[metric] else value < low
    return Anomaly(metric, value, round(low, 6), round(high, 6), base.median) if bad else None


@dataclass(frozen=True)
class RunMetrics:
    """The metrics of one finished phase run (None: not measured for this run)."""

    duration_seconds: float | None
    items_per_second: float | None
    error_rate: float | None

    def value(self, metric: Metric) -> float | None:
        return {
            Metric.DURATION: self.duration_seconds,
            Metric.THROUGHPUT: self.items_per_second,
            Metric.ERROR_RATE: self.error_rate,
        }[metric]


def detect(
    run: RunMetrics, history: Sequence[RunMetrics], *, k: float = DEFAULT_K, min_runs: int = MIN_RUNS
) -> list[Anomaly]:
    """The anomalies of one run against the runs before it (same pipeline and phase)."""
    found = []
    for metric in Metric:
        value = run.value(metric)
        if value is None:
            continue
        past = [v for h in history if (v := h.value(metric)) is not None]
        anomaly = check_value(metric, value, past, k=k, min_runs=min_runs)
        if anomaly is not None:
            found.append(anomaly)
    return found
