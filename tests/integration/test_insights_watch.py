"""The insights task's writers on real PostgreSQL and Redis: anomaly alerts once per
phase run, predicted error surges once per fingerprint and hour (with their `bos.alert`),
predicted breaker trips once per service and window. Time is the injected `now`."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from orchestrator.analytics import ALERT_EVENT, hour_of
from orchestrator.insights.watch import (
    ANOMALY,
    PREDICTED_SURGE,
    PREDICTED_TRIP,
    predict_breaker_trips,
    predict_error_surges,
    scan_anomalies,
    watch_insights,
)
from orchestrator.models import Alert, ErrorCount, ErrorFingerprint, OutboxEvent, PhaseRun, Tenant
from orchestrator.service_clients import health
from orchestrator.service_clients.store import client
from orchestrator.services.batches import batch_create
from orchestrator.states import PhaseState
from tests.support.factories import batch_request, publish_test_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db", "held_batches")]


@pytest.fixture
def timed_pipeline(transactional_db: None) -> None:
    publish_test_pipeline("timed", [{"name": "work", "handler": "test.echo", "mode": "per_item"}])


def finished_run(seconds: float, *, failed: int = 0, ended_ago: float) -> PhaseRun:
    """A batch of the `timed` pipeline whose phase succeeded in `seconds`, `ended_ago` s ago."""
    batch = batch_create(
        request=batch_request(pipeline="timed", items=[{"key": f"k{i}", "payload": {}} for i in range(20)]),
        actor="test",
    ).batch
    end = timezone.now() - timedelta(seconds=ended_ago)
    phase = PhaseRun.objects.get(batch=batch, name="work")
    PhaseRun.objects.filter(id=phase.id).update(
        state=PhaseState.SUCCEEDED,
        started_at=end - timedelta(seconds=seconds),
        work_started_at=end - timedelta(seconds=seconds),
        finished_at=end,
        items_done=20,
        items_failed=failed,
    )
    return phase


@pytest.mark.usefixtures("timed_pipeline")
def test_slow_phase_run_is_an_anomaly_once() -> None:
    for i in range(12):
        finished_run(10.0 + (i % 3) * 0.2, ended_ago=600 - i * 10)
    slow = finished_run(40.0, ended_ago=100)
    now = timezone.now()
    alerts = scan_anomalies(now=now, window=30, k=4.0)
    assert [(a.kind, a.details["metric"]) for a in alerts] == [(ANOMALY, "duration_seconds")]
    assert alerts[0].details["also"] == ["items_per_second"]
    details = alerts[0].details
    assert details["phase_run_id"] == slow.id and details["batch_id"] == str(slow.batch_id)
    assert details["pipeline"] == "timed" and details["phase"] == "work"
    assert details["expected_low"] < 10.2 < details["expected_high"] < details["value"] == 40.0
    assert alerts[0].tenant_id == slow.tenant_id
    # Scanned once: the next run finds nothing new.
    assert scan_anomalies(now=now + timedelta(minutes=1), window=30, k=4.0) == []
    assert Alert.objects.filter(kind=ANOMALY).count() == 1


def fingerprint_with_counts(counts: list[int], current: int) -> ErrorFingerprint:
    """A fingerprint with `counts` in the hours before this one (oldest first) and `current` now."""
    tenant, _ = Tenant.objects.get_or_create(slug="acme")
    hour = hour_of(timezone.now())
    fp = ErrorFingerprint.objects.create(
        tenant=tenant,
        fingerprint=uuid.uuid4().hex,
        error_type="TransientError",
        message="try <n> failed",
        pipeline="timed",
        phase="work",
        count=sum(counts) + current,
        first_seen=hour - timedelta(hours=len(counts)),
        last_seen=timezone.now(),
    )
    rows = [
        ErrorCount(fingerprint=fp, hour=hour - timedelta(hours=len(counts) - i), count=n)
        for i, n in enumerate(counts)
    ]
    ErrorCount.objects.bulk_create([*rows, ErrorCount(fingerprint=fp, hour=hour, count=current)])
    return fp


def test_rising_errors_are_predicted_before_they_cross_once_per_hour() -> None:
    rising = fingerprint_with_counts([1] * 20 + [3, 5, 8, 13], current=2)
    steady = fingerprint_with_counts([2] * 24, current=1)
    now = hour_of(timezone.now()) + timedelta(minutes=5)
    alerts = predict_error_surges(now=now)
    assert [(a.kind, a.fingerprint_id) for a in alerts] == [(PREDICTED_SURGE, rising.id)]
    assert (
        alerts[0].details["forecast"] >= alerts[0].details["threshold"] > alerts[0].details["count_this_hour"]
    )
    event = OutboxEvent.objects.get(event_type=ALERT_EVENT, key=rising.fingerprint)
    assert event.envelope["data"]["kind"] == PREDICTED_SURGE and event.envelope["tenant"] == "acme"
    assert predict_error_surges(now=now + timedelta(minutes=10)) == []
    assert not Alert.objects.filter(fingerprint=steady).exists()


def write_slots(service: str, ratios: list[float], *, calls: int = 20) -> None:
    """Health slots of `service` ending with the current one, at these success ratios."""
    health.record(service, "ok", 0.01)  # known to known_services()
    latest = int(time.time() // health.SLOT_SECONDS)
    pipe = client().pipeline()
    for i, ratio in enumerate(ratios):
        key = f"bos:svc:win:{service}:{latest - len(ratios) + 1 + i}"
        pipe.delete(key)
        pipe.hset(key, mapping={"count": calls, "failed": round(calls * (1 - ratio))})
        pipe.expire(key, 600)
    pipe.execute()


def test_falling_health_predicts_a_breaker_trip_once_per_window() -> None:
    falling, steady = f"falling-{uuid.uuid4().hex[:6]}", f"steady-{uuid.uuid4().hex[:6]}"
    write_slots(falling, [1.0, 0.95, 0.95, 0.9, 0.85, 0.85, 0.8, 0.75, 0.75, 0.7])
    write_slots(steady, [0.95] * 10)
    mine = (falling, steady)  # Redis may hold other tests' services
    alerts = [a for a in predict_breaker_trips(now=timezone.now()) if a.details["service"] in mine]
    assert [(a.kind, a.details["service"]) for a in alerts] == [(PREDICTED_TRIP, falling)]
    assert alerts[0].tenant_id is None
    assert 0 <= alerts[0].details["seconds_to_trip"] <= 60
    assert [a for a in predict_breaker_trips(now=timezone.now()) if a.details["service"] in mine] == []


@pytest.mark.usefixtures("timed_pipeline")
def test_insights_task_runs_every_part() -> None:
    report = watch_insights(now=timezone.now())
    assert report.errors == {}
    assert set(report.as_dict()) == {"anomalies", "surges", "trips", "errors"}
