"""Alerts from the pure detectors: anomalous phase runs, predicted error surges and
predicted breaker trips. Run by beat (`tasks.insights.insights_task`).

- `anomaly`: a phase run that finished since the last scan (watermark
  `anomaly_phase_runs`) whose duration, throughput or error rate lies outside the
  median/MAD range of the `BOS_ANOMALY_WINDOW_RUNS` runs of the same pipeline and phase
  before it (`robust.detect`). Once per phase run: its most anomalous metric, naming
  the others flagged (`also`).
- `predicted_error_surge`: an error fingerprint whose Holt forecast for the current or
  next hour reaches the rising-error-rate line (`analytics._rising_alerts`' rule) before
  its real count does (`forecasting.predict_surge`). Once per fingerprint and hour, with
  its `bos.alert` event, as the error analytics' alerts.
- `predicted_breaker_trip`: a service whose success-ratio trend over the health window's
  10-second slots reaches the ratio where `BOS_BREAKER_FAIL_MAX` failures in a row are
  expected, within `BOS_BREAKER_FORECAST_SECONDS` (`forecasting.breaker_crossing`). Once
  per service per health window. An alert of no tenant.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orchestrator.analytics import (
    BASELINE_HOURS,
    RISING_FACTOR,
    RISING_MIN,
    _from_micros,
    _to_micros,
    alert_event,
    hour_of,
)
from orchestrator.config import runtime
from orchestrator.insights.forecasting import breaker_crossing, predict_surge
from orchestrator.insights.robust import RunMetrics, detect
from orchestrator.models import Alert, AnalysisWatermark, ErrorCount, ErrorFingerprint, PhaseRun
from orchestrator.services.events import emit
from orchestrator.states import PhaseState

logger = logging.getLogger(__name__)

ANOMALY = "anomaly"
PREDICTED_SURGE = "predicted_error_surge"
PREDICTED_TRIP = "predicted_breaker_trip"
ANOMALY_RUNS = "anomaly_phase_runs"  # watermark: finished_at (epoch µs) of the last run scanned
# Runs are scanned once they are this old: a run finishing now may still commit behind a later one.
SETTLE = timedelta(seconds=30)
SCAN_LIMIT = 500


@dataclass(frozen=True)
class InsightsReport:
    anomalies: tuple[int, ...] = ()  # alert ids
    surges: tuple[int, ...] = ()
    trips: tuple[int, ...] = ()
    errors: dict[str, str] = field(default_factory=dict)  # a part that could not run, and why

    def as_dict(self) -> dict[str, Any]:
        return {
            "anomalies": list(self.anomalies),
            "surges": list(self.surges),
            "trips": list(self.trips),
            "errors": self.errors,
        }


def run_metrics(
    *, mode: str, items_total: int, items_done: int, items_failed: int, seconds: float
) -> RunMetrics:
    """A finished phase run's metrics: throughput and error rate for per-item phases only."""
    per_item = mode == "per_item" and items_total > 0
    return RunMetrics(
        duration_seconds=seconds,
        items_per_second=items_done / seconds if per_item and seconds > 0 else None,
        error_rate=items_failed / items_total if per_item else None,
    )


_RUN_FIELDS = (
    "id",
    "tenant_id",
    "batch_id",
    "name",
    "mode",
    "items_total",
    "items_done",
    "items_failed",
    "started_at",
    "work_started_at",
    "finished_at",
    "batch__pipeline_version__pipeline_id",
    "batch__pipeline_version__pipeline__name",
)


def _metrics_of(row: dict[str, Any]) -> RunMetrics:
    began = row["work_started_at"] or row["started_at"]
    return run_metrics(
        mode=row["mode"],
        items_total=row["items_total"],
        items_done=row["items_done"],
        items_failed=row["items_failed"],
        seconds=max(0.0, (row["finished_at"] - began).total_seconds()),
    )


def _finished_runs() -> Any:
    return PhaseRun.objects.filter(
        state=PhaseState.SUCCEEDED, started_at__isnull=False, finished_at__isnull=False
    )


@transaction.atomic
def scan_anomalies(*, now: datetime, window: int, k: float) -> list[Alert]:
    """Check the phase runs finished since the watermark; store an alert per anomaly."""
    AnalysisWatermark.objects.get_or_create(name=ANOMALY_RUNS)
    mark = AnalysisWatermark.objects.select_for_update(skip_locked=True).filter(name=ANOMALY_RUNS).first()
    if mark is None:
        return []  # another scan holds it
    upto = now - SETTLE
    new = list(
        _finished_runs()
        .filter(finished_at__gt=_from_micros(mark.position), finished_at__lte=upto)
        .order_by("finished_at", "id")
        .values(*_RUN_FIELDS)[:SCAN_LIMIT]
    )
    if not new:
        return []
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in new:
        groups[(row["batch__pipeline_version__pipeline_id"], row["name"])].append(row)
    already = set(
        Alert.objects.filter(kind=ANOMALY, details__phase_run_id__in=[r["id"] for r in new]).values_list(
            "details__phase_run_id", flat=True
        )
    )
    alerts: list[Alert] = []
    for (pipeline_id, name), rows in groups.items():
        # The window before the oldest new run, and the new runs themselves: one query.
        before = list(
            _finished_runs()
            .filter(
                batch__pipeline_version__pipeline_id=pipeline_id,
                name=name,
                finished_at__lte=rows[-1]["finished_at"],
            )
            .order_by("-finished_at", "-id")
            .values(*_RUN_FIELDS)[: window + len(rows)]
        )
        before.reverse()
        position = {r["id"]: i for i, r in enumerate(before)}
        for row in rows:
            i = position.get(row["id"])
            if i is None:
                continue
            history = [_metrics_of(r) for r in before[max(0, i - window) : i]]
            found = detect(_metrics_of(row), history, k=k)
            if not found or row["id"] in already:
                continue
            # One alert per run: its most anomalous metric, naming the others.
            anomaly = max(found, key=lambda a: a.severity)
            pipeline = row["batch__pipeline_version__pipeline__name"]
            alerts.append(
                Alert(
                    tenant_id=row["tenant_id"],
                    kind=ANOMALY,
                    message=(
                        f"Anomalous {anomaly.metric.value} in {pipeline}/{name}: {anomaly.value:.3g}, "
                        f"expected {anomaly.low:.3g}–{anomaly.high:.3g}"
                    ),
                    details={
                        "pipeline": pipeline,
                        "phase": name,
                        "metric": anomaly.metric.value,
                        "value": round(anomaly.value, 6),
                        "expected_low": anomaly.low,
                        "expected_high": anomaly.high,
                        "median": round(anomaly.median, 6),
                        "also": [a.metric.value for a in found if a is not anomaly],
                        "runs": len(history),
                        "batch_id": str(row["batch_id"]),
                        "phase_run_id": row["id"],
                    },
                )
            )
    Alert.objects.bulk_create(alerts)
    mark.position = max(mark.position, _to_micros(new[-1]["finished_at"]))
    mark.save(update_fields=["position", "updated_at"])
    return alerts


@transaction.atomic
def predict_error_surges(
    *, now: datetime, factor: float = RISING_FACTOR, minimum: int = RISING_MIN
) -> list[Alert]:
    """Raise `predicted_error_surge` for fingerprints seen in the last day whose forecast
    crosses the rising-rate line first. Two reads, whatever the number of fingerprints."""
    hour = hour_of(now)
    start = hour - timedelta(hours=BASELINE_HOURS)
    fingerprints = {
        f.id: f
        for f in ErrorFingerprint.objects.filter(last_seen__gte=start, first_seen__lt=hour).select_related(
            "tenant"
        )
    }
    if not fingerprints:
        return []
    series: dict[int, list[int]] = {fid: [0] * (BASELINE_HOURS + 1) for fid in fingerprints}
    for fid, at, count in ErrorCount.objects.filter(
        fingerprint_id__in=list(fingerprints), hour__gte=start, hour__lte=hour
    ).values_list("fingerprint_id", "hour", "count"):
        series[fid][int((at - start) // timedelta(hours=1))] += count
    elapsed = (now - hour) / timedelta(hours=1)
    pending: list[tuple[Alert, ErrorFingerprint]] = []
    for fid, counts in series.items():
        found = predict_surge(
            counts[:-1],
            counts[-1],
            factor=factor,
            minimum=minimum,
            hours=BASELINE_HOURS,
            elapsed_fraction=elapsed,
        )
        if found is None:
            continue
        fp = fingerprints[fid]
        target = (hour + timedelta(hours=found.steps_ahead)).isoformat()
        alert = Alert(
            tenant_id=fp.tenant_id,
            kind=PREDICTED_SURGE,
            fingerprint_id=fid,
            message=(
                f"Predicted error surge in {fp.pipeline}/{fp.phase} for the hour of {target}: "
                f"{found.forecast:.1f} forecast, threshold {found.threshold:.1f}: {fp.error_type}: {fp.message}"
            ),
            details={
                "fingerprint": fp.fingerprint,
                "error_type": fp.error_type,
                "message": fp.message,
                "pipeline": fp.pipeline,
                "phase": fp.phase,
                "hour": target,
                "forecast": round(found.forecast, 3),
                "threshold": round(found.threshold, 3),
                "count_this_hour": counts[-1],
                "factor": factor,
                "minimum": minimum,
            },
        )
        pending.append((alert, fp))
    if not pending:
        return []
    already = set(
        Alert.objects.filter(
            kind=PREDICTED_SURGE,
            fingerprint_id__in=[fp.id for _, fp in pending],
            details__hour__in=list({a.details["hour"] for a, _ in pending}),
        ).values_list("fingerprint_id", "details__hour")
    )
    fresh = [(a, fp) for a, fp in pending if (fp.id, a.details["hour"]) not in already]
    Alert.objects.bulk_create([a for a, _ in fresh])
    emit(
        alert_event(a, tenant_id=fp.tenant_id, tenant=fp.tenant.slug, fingerprint_hex=fp.fingerprint)
        for a, fp in fresh
    )
    for a, _ in fresh:
        logger.warning("alert %s: %s", a.kind, a.message)
    return [a for a, _ in fresh]


@transaction.atomic
def predict_breaker_trips(*, now: datetime) -> list[Alert]:
    """Raise `predicted_breaker_trip` for services whose health trend reaches their trip
    ratio within the horizon (and whose breaker is not open already)."""
    from orchestrator.breakers import breaker
    from orchestrator.service_clients.health import SLOT_SECONDS, known_services, slot_series

    window = int(settings.BOS_SERVICE_HEALTH_WINDOW_SECONDS)
    slots = max(window // SLOT_SECONDS, 1)
    horizon = runtime("breaker_forecast_seconds") / SLOT_SECONDS
    fail_max = runtime("breaker_fail_max")
    found = []
    for service in known_services():
        forecast = breaker_crossing(
            slot_series(service, slots=slots, now=now.timestamp()), fail_max=fail_max, horizon_slots=horizon
        )
        if forecast is None or breaker(service).current_state == "open":
            continue
        recent = Alert.objects.filter(
            kind=PREDICTED_TRIP, details__service=service, created_at__gte=now - timedelta(seconds=window)
        )
        if recent.exists():
            continue
        seconds = round(forecast.steps_to_trip * SLOT_SECONDS, 1)
        found.append(
            Alert(
                tenant=None,
                kind=PREDICTED_TRIP,
                message=(
                    f"Service {service}'s success ratio ({forecast.ratio_now:.2f}) is falling towards "
                    f"{forecast.trip_ratio:.2f}, where its breaker trips: in about {seconds:.0f} s"
                ),
                details={
                    "service": service,
                    "success_ratio": round(forecast.ratio_now, 4),
                    "trip_ratio": round(forecast.trip_ratio, 4),
                    "seconds_to_trip": seconds,
                    "fail_max": fail_max,
                    "window_seconds": window,
                },
            )
        )
    Alert.objects.bulk_create(found)
    for a in found:
        logger.warning("alert %s: %s", a.kind, a.message)
    return found


def watch_insights(*, now: datetime | None = None) -> InsightsReport:
    """One beat run: each part in its own transaction (Redis down skips the breaker part
    only)."""
    now = now or timezone.now()
    ids: dict[str, tuple[int, ...]] = {}
    errors: dict[str, str] = {}
    parts: dict[str, Callable[[], list[Alert]]] = {
        "anomalies": lambda: scan_anomalies(
            now=now, window=runtime("anomaly_window_runs"), k=runtime("anomaly_mads")
        ),
        "surges": lambda: predict_error_surges(now=now),
        "trips": lambda: predict_breaker_trips(now=now),
    }
    for name, part in parts.items():
        try:
            ids[name] = tuple(a.id for a in part())
        except (redis.RedisError, OSError) as exc:
            logger.warning("insights: %s skipped: %s", name, exc)
            errors[name] = f"{type(exc).__name__}: {exc}"[:300]
    return InsightsReport(
        anomalies=ids.get("anomalies", ()),
        surges=ids.get("surges", ()),
        trips=ids.get("trips", ()),
        errors=errors,
    )
