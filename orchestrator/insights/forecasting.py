"""Forecasts: Holt's linear trend for error counts, a linear trend for a service's health.

`holt` smooths a series into a level and a trend (Holt's double exponential smoothing)
and forecasts `h` steps ahead as level + h × trend. `surge_threshold` is the rule of the
rising-error-rate alert (≥ factor × the average of the hours before, and ≥ a minimum), so
a forecast can be held against the same line the real count will later cross.

A breaker opens after `fail_max` failures in a row. Among `n` attempts with success
ratio `s`, about n·(1 − s)^fail_max windows are runs of `fail_max` failures; the
*trip ratio* 1 − (r/n)^(1/fail_max) is where that reaches r (0.1) per slot: below it,
a trip is a matter of a few slots. `breaker_crossing` fits a least-squares line to the success
ratios of the last slots and says when it reaches the trip ratio. No Django here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HOLT_ALPHA = 0.5
HOLT_BETA = 0.4
PACE_FROM = 0.25  # the share of an hour after which its own pace counts
PACE_Z = 0.5  # standard deviations taken off the pace's count


@dataclass(frozen=True)
class Holt:
    level: float
    trend: float

    def forecast(self, steps: float = 1) -> float:
        return self.level + steps * self.trend


def holt(series: Sequence[float], *, alpha: float = HOLT_ALPHA, beta: float = HOLT_BETA) -> Holt:
    """Holt's linear trend fitted to `series` (oldest first); at least one value."""
    if not series:
        raise ValueError("Holt's method needs at least one value")
    if not (0 < alpha <= 1 and 0 < beta <= 1):
        raise ValueError("alpha and beta must be in (0, 1]")
    level = float(series[0])
    trend = float(series[1] - series[0]) if len(series) > 1 else 0.0
    for value in series[1:]:
        previous = level
        level = alpha * value + (1 - alpha) * (level + trend)
        trend = beta * (level - previous) + (1 - beta) * trend
    return Holt(level, trend)


def surge_threshold(previous_hours: Sequence[float], *, factor: float, minimum: int, hours: int) -> float:
    """The count an hour must reach to be a rising error rate: ≥ factor × the average of
    the `hours` before it (missing hours count as zero), and ≥ minimum."""
    average = sum(previous_hours[-hours:]) / hours
    return max(float(minimum), factor * average)


TRIP_EXPECTED_RUNS = 0.1  # expected runs of fail_max failures per slot that count as tripping


def trip_ratio(fail_max: int, attempts_per_slot: float, expected_runs: float = TRIP_EXPECTED_RUNS) -> float:
    """The success ratio under which `expected_runs` runs of `fail_max` failures in a row
    are expected per slot of `attempts_per_slot` calls: 1 − (expected_runs / n)^(1/fail_max)."""
    if fail_max < 1:
        raise ValueError("fail_max must be at least 1")
    n = max(attempts_per_slot, 1.0)
    share: float = min(1.0, expected_runs / n) ** (1.0 / fail_max)
    return max(0.0, 1.0 - share)


@dataclass(frozen=True)
class Trend:
    intercept: float  # the fitted ratio at step 0 (the oldest slot)
    slope: float  # per step

    def at(self, step: float) -> float:
        return self.intercept + self.slope * step


def linear_trend(points: Sequence[tuple[float, float]]) -> Trend | None:
    """Least squares through (step, value) points; None with fewer than two distinct steps."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    return Trend(mean_y - slope * mean_x, slope)


@dataclass(frozen=True)
class BreakerForecast:
    ratio_now: float  # the fitted success ratio of the latest slot
    trip_ratio: float
    steps_to_trip: float  # slots from the latest one until the fit reaches the trip ratio


MIN_SLOTS = 4  # slots with attempts needed for a trend
FIT_SLOTS = 12  # the trend is fitted to the latest slots (2 minutes): older ones dilute a decline


def breaker_crossing(
    slots: Sequence[tuple[int, int]],
    *,
    fail_max: int,
    horizon_slots: float,
    min_slots: int = MIN_SLOTS,
    fit_slots: int = FIT_SLOTS,
) -> BreakerForecast | None:
    """When the success ratio of `slots` ((attempts, failed) per slot, oldest first, the
    latest last) will cross the trip ratio, if within `horizon_slots`; else None. The
    trend is fitted to the last `fit_slots` of them."""
    slots = slots[-fit_slots:]
    points = [(float(i), (n - f) / n) for i, (n, f) in enumerate(slots) if n > 0]
    if len(points) < min_slots:
        return None
    attempts = [n for n, _ in slots if n > 0]
    level = trip_ratio(fail_max, sum(attempts) / len(attempts))
    trend = linear_trend(points)
    if trend is None:
        return None
    last = float(len(slots) - 1)
    now = min(1.0, max(0.0, trend.at(last)))
    if now <= level:
        return BreakerForecast(now, level, 0.0)
    if trend.slope >= 0:
        return None
    steps = (level - trend.at(last)) / trend.slope
    return BreakerForecast(now, level, steps) if steps <= horizon_slots else None


@dataclass(frozen=True)
class SurgeForecast:
    steps_ahead: int  # 0: the current hour, 1: the next one
    forecast: float
    threshold: float


def predict_surge(
    completed_hours: Sequence[float],
    current_so_far: float,
    *,
    factor: float,
    minimum: int,
    hours: int,
    elapsed_fraction: float = 0.0,
    alpha: float = HOLT_ALPHA,
    beta: float = HOLT_BETA,
) -> SurgeForecast | None:
    """Will the current or the next hour cross the rising-rate threshold before the real
    count does? `completed_hours`: the counts of the hours before the current one (oldest
    first, at least `hours` of them, zeros included); `current_so_far`: the current
    hour's count until now, `elapsed_fraction` of it gone. The forecast of an hour is
    Holt's on the completed hours; for the current hour, once a quarter of it has gone,
    at least its pace so far (so_far / elapsed_fraction)."""
    if len(completed_hours) < hours or current_so_far < 0:
        return None
    fit = holt(completed_hours[-hours:], alpha=alpha, beta=beta)
    current_line = surge_threshold(completed_hours, factor=factor, minimum=minimum, hours=hours)
    if current_so_far >= current_line:
        return None  # it crossed already: the rising-rate alert's turn
    forecast = fit.forecast(1)
    if elapsed_fraction >= PACE_FROM:
        # Counts are Poisson: the pace's lower bound, so a chance cluster is no surge.
        low = max(0.0, current_so_far - PACE_Z * math.sqrt(current_so_far))
        forecast = max(forecast, low / min(elapsed_fraction, 1.0))
    if forecast >= current_line:
        return SurgeForecast(0, forecast, current_line)
    next_line = surge_threshold(
        [*completed_hours, current_so_far], factor=factor, minimum=minimum, hours=hours
    )
    forecast = fit.forecast(2)
    if forecast >= next_line:
        return SurgeForecast(1, forecast, next_line)
    return None
