"""Back-tests of the detectors on synthetic traces with known faults (seeded RNG).

Three families, each scored for precision, recall and (forecasts) lead time:

- *anomalies*: runs of one phase (log-normal durations, a few failed items); some runs
  injected slow (×2.5–5 duration) or failing (+15–40 % error rate). The detector
  (`robust.detect`) sees each run against the window before it. A hit is a flagged
  injected run; a false alarm, a flagged clean one.
- *surges*: 72 hours of one fingerprint's errors (Poisson); half the traces have a surge
  growing ×1.6–2.4 an hour from a random hour. Every 10 minutes `predict_surge` looks at
  the hours so far, as beat does; the *real* crossing is the first moment the hour's
  count reaches the rising-rate line. A hit: a prediction at most 3 hours before the
  crossing; lead time: from the first such prediction to the crossing.
- *breakers*: 10-second slots of calls with a success probability; degraded traces lose
  it linearly from a random slot. The breaker is simulated call by call (`fail_max`
  failures in a row open it). `breaker_crossing` runs at every slot over the window
  before it. A hit: a prediction at most 2 horizons before the trip.

Pure: no Django. `manage.py bos_backtest` prints the tables; docs/anomalies.md holds them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.insights.forecasting import breaker_crossing, predict_surge
from orchestrator.insights.robust import DEFAULT_K, RunMetrics, detect


@dataclass(frozen=True)
class Score:
    name: str
    traces: int
    faults: int  # injected faults (anomalous runs, surges, trips)
    hits: int  # faults caught
    alarms: int  # alerts raised
    false_alarms: int
    lead_times: tuple[float, ...] = ()  # seconds, for forecasts

    @property
    def precision(self) -> float:
        return (self.alarms - self.false_alarms) / self.alarms if self.alarms else 1.0

    @property
    def recall(self) -> float:
        return self.hits / self.faults if self.faults else 1.0

    def lead(self, q: float) -> float | None:
        if not self.lead_times:
            return None
        ordered = sorted(self.lead_times)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def backtest_anomalies(
    *,
    seed: int,
    traces: int = 20,
    runs: int = 200,
    rate: float = 0.03,
    window: int = 30,
    k: float = DEFAULT_K,
) -> Score:
    rng = random.Random(seed)
    faults = hits = alarms = false_alarms = 0
    for _ in range(traces):
        items = rng.choice((20, 100, 500))
        per_item = rng.uniform(0.01, 0.2)
        sigma = rng.uniform(0.05, 0.2)
        base_errors = rng.uniform(0.0, 0.05)
        history: list[RunMetrics] = []
        for i in range(runs):
            seconds = items * per_item * math.exp(rng.gauss(0, sigma))
            failed = sum(1 for _ in range(items) if rng.random() < base_errors)
            injected = i >= window and rng.random() < rate
            if injected:
                if rng.random() < 0.5:
                    seconds *= rng.uniform(2.5, 5.0)
                else:
                    failed = min(items, failed + round(items * rng.uniform(0.15, 0.4)))
            run = RunMetrics(seconds, (items - failed) / seconds, failed / items)
            flagged = bool(detect(run, history[-window:], k=k))
            faults += injected
            alarms += flagged
            hits += flagged and injected
            false_alarms += flagged and not injected
            history.append(run)
    return Score("anomalies (median/MAD)", traces, faults, hits, alarms, false_alarms)


SURGE_HOURS = 72
SURGE_STEP_MINUTES = 10


def _surge_trace(rng: random.Random, surging: bool) -> tuple[list[list[float]], int | None]:
    """Per hour, the minutes (0–60) of its errors; and the hour the surge starts."""
    base = rng.uniform(0.3, 4.0)
    start = rng.randint(30, 60) if surging else None
    growth = rng.uniform(1.6, 2.4)
    hours = []
    for h in range(SURGE_HOURS):
        lam = base if start is None or h < start else min(base * growth ** (h - start + 1), 2000)
        hours.append(sorted(rng.uniform(0, 60) for _ in range(_poisson(rng, lam))))
    return hours, start


def backtest_surges(
    *, seed: int, traces: int = 40, factor: float = 3.0, minimum: int = 10, baseline_hours: int = 24
) -> Score:
    from orchestrator.insights.forecasting import surge_threshold

    rng = random.Random(seed)
    faults = hits = alarms = false_alarms = 0
    leads: list[float] = []
    for t in range(traces):
        hours, _ = _surge_trace(rng, surging=t % 2 == 0)
        counts = [len(h) for h in hours]
        # The real crossing: the first moment an hour's count reaches its line.
        crossing: float | None = None
        for h in range(baseline_hours, SURGE_HOURS):
            line = surge_threshold(counts[:h], factor=factor, minimum=minimum, hours=baseline_hours)
            if counts[h] >= line:
                crossing = h * 60 + hours[h][math.ceil(line) - 1]
                break
        faults += crossing is not None
        predicted: set[int] = set()  # hours alerted (once per fingerprint and hour)
        first_hit: float | None = None
        for minute in range(baseline_hours * 60, SURGE_HOURS * 60, SURGE_STEP_MINUTES):
            if crossing is not None and minute >= crossing:
                break
            h, into = divmod(minute, 60)
            so_far = sum(1 for m in hours[h] if m < into)
            found = predict_surge(
                counts[:h],
                so_far,
                factor=factor,
                minimum=minimum,
                hours=baseline_hours,
                elapsed_fraction=into / 60,
            )
            if found is None or h + found.steps_ahead in predicted:
                continue
            predicted.add(h + found.steps_ahead)
            alarms += 1
            if crossing is not None and crossing - minute <= 180:
                first_hit = minute if first_hit is None else first_hit
            else:
                false_alarms += 1
        if crossing is not None and first_hit is not None:
            hits += 1
            leads.append((crossing - first_hit) * 60.0)
    return Score("error surges (Holt)", traces, faults, hits, alarms, false_alarms, tuple(leads))


BREAKER_SLOTS = 180


def backtest_breakers(
    *,
    seed: int,
    traces: int = 40,
    fail_max: int = 5,
    window_slots: int = 30,
    horizon_slots: float = 6,
    calls_per_slot: float = 20,
) -> Score:
    rng = random.Random(seed)
    faults = hits = alarms = false_alarms = 0
    leads: list[float] = []
    for t in range(traces):
        degrading = t % 2 == 0
        start = rng.randint(40, 120)
        decline = rng.uniform(0.01, 0.05)  # success probability lost per slot
        healthy = rng.uniform(0.95, 0.995)
        slots: list[tuple[int, int]] = []
        trip: int | None = None
        run = 0
        for s in range(BREAKER_SLOTS):
            p = healthy if not degrading or s < start else max(0.05, healthy - decline * (s - start))
            n = _poisson(rng, calls_per_slot)
            failed = 0
            for _ in range(n):
                if rng.random() < p:
                    run = 0
                else:
                    failed += 1
                    run += 1
                    if run >= fail_max and trip is None:
                        trip = s
            slots.append((n, failed))
            if trip is not None:
                break
        faults += trip is not None
        last_alert: int | None = None
        first_hit: int | None = None
        for s in range(len(slots) - (1 if trip is not None else 0)):
            if last_alert is not None and s - last_alert < window_slots:
                continue
            recent: Sequence[tuple[int, int]] = slots[max(0, s - window_slots + 1) : s + 1]
            if breaker_crossing(recent, fail_max=fail_max, horizon_slots=horizon_slots) is None:
                continue
            last_alert = s
            alarms += 1
            if trip is not None and trip - s <= 2 * horizon_slots:
                first_hit = s if first_hit is None else first_hit
            else:
                false_alarms += 1
        if trip is not None and first_hit is not None:
            hits += 1
            leads.append((trip - first_hit) * 10.0)
    return Score("breaker trips (linear trend)", traces, faults, hits, alarms, false_alarms, tuple(leads))


def run_all(seed: int = 7, scale: int = 1) -> list[Score]:
    return [
        backtest_anomalies(seed=seed, traces=20 * scale),
        backtest_surges(seed=seed, traces=40 * scale),
        backtest_breakers(seed=seed, traces=40 * scale),
    ]
