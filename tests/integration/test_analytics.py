"""Error analytics on real failures: fingerprints, hourly counts, alerts and their events."""

from __future__ import annotations

import io
import json
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orchestrator.analytics import (
    ALERT_EVENT,
    ITEM_RESULTS,
    NEW_ERROR_PATTERN,
    RISING_ERROR_RATE,
    analyze_errors,
    hour_of,
    recent_alerts,
    top_errors,
)
from orchestrator.models import (
    Alert,
    AnalysisWatermark,
    Batch,
    ErrorCount,
    ErrorFingerprint,
    OutboxEvent,
    PhaseRun,
    Tenant,
)
from orchestrator.services.batches import batch_create
from orchestrator.services.events import event_envelope
from orchestrator.services.phases import phase_chunk_run, phase_fail
from orchestrator.states import PhaseState
from tasks.analytics import analyze_errors_task
from tests.support.factories import batch_request, essay_items

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline", "held_batches")]

TOO_SHORT = "text has <n> words; at least <n> are needed"
NO_TEXT = "payload.text is missing or not a string"


@pytest.fixture(autouse=True)
def _clear_of_the_hour() -> None:
    """Counts are bucketed by hour: do not start a test seconds before the hour turns."""
    now = timezone.now()
    if now.minute == 59 and now.second >= 30:
        time.sleep(61 - now.second)


def running_phase(batch: Batch, name: str) -> PhaseRun:
    """Mark a phase running by hand, as the dispatcher would (no worker here)."""
    phase = PhaseRun.objects.get(batch=batch, name=name)
    PhaseRun.objects.filter(id=phase.id).update(state=PhaseState.RUNNING, started_at=timezone.now())
    Batch.objects.filter(id=batch.id).update(state="running")
    return phase


def failed_batch(
    n: int, *, bad: set[int] | None = None, tenant: str = "acme", items: list[dict[str, Any]] | None = None
) -> Batch:
    """A batch whose `validate` phase ran over its `n` items; those in `bad` (all by
    default) failed validation."""
    items = items or essay_items(n, bad=set(range(n)) if bad is None else bad)
    batch = batch_create(request=batch_request(tenant=tenant, items=items), actor="test").batch
    phase = running_phase(batch, "validate")
    phase_chunk_run(phase_run_id=phase.id, start=0, end=len(items))
    return batch


def other_connection() -> psycopg.Connection[Any]:
    """A second session on the test database, as another process would have."""
    db = connection.settings_dict
    return psycopg.connect(
        dbname=db["NAME"],
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        password=db["PASSWORD"] or None,
    )


def no_text_items(n: int) -> list[dict[str, Any]]:
    return [{"key": f"blank-{i}", "payload": {"title": "no text"}} for i in range(n)]


def by_message(tenant: str = "acme") -> dict[str, ErrorFingerprint]:
    return {f.message: f for f in ErrorFingerprint.objects.filter(tenant__slug=tenant)}


def hourly_total(fp: ErrorFingerprint) -> int:
    return sum(ErrorCount.objects.filter(fingerprint=fp).values_list("count", flat=True))


def test_failures_are_counted_per_fingerprint() -> None:
    first = failed_batch(5, bad={1, 3})
    failed_batch(4)
    failed_batch(2, items=no_text_items(2))
    failed_batch(3, tenant="zeta")

    report = analyze_errors()

    assert (report.item_failures, report.phase_failures) == (2 + 4 + 2 + 3, 0)
    assert report.fingerprints == report.new_fingerprints == 3
    acme = by_message()
    assert set(acme) == {TOO_SHORT, NO_TEXT}
    short = acme[TOO_SHORT]
    assert (short.count, hourly_total(short)) == (6, 6)
    assert (short.error_type, short.error_class) == ("ItemFailed", "bad_input")
    assert (short.pipeline, short.phase) == ("essay-analysis", "validate")
    assert short.sample == "text has 2 words; at least 3 are needed"
    assert short.sample_batch_id is not None and short.first_seen <= short.last_seen
    assert (acme[NO_TEXT].count, hourly_total(acme[NO_TEXT])) == (2, 2)
    # The same failure in another tenant is another tenant's fingerprint.
    zeta = by_message("zeta")[TOO_SHORT]
    assert zeta.count == 3 and zeta.fingerprint == short.fingerprint
    assert ErrorCount.objects.filter(fingerprint=short).get().hour == hour_of(short.last_seen)
    assert first.items.filter(state="failed").count() == 2


def test_a_second_run_counts_nothing_twice() -> None:
    failed_batch(5)
    analyze_errors()
    again = analyze_errors()

    assert (again.item_failures, again.fingerprints, again.alerts) == (0, 0, ())
    short = by_message()[TOO_SHORT]
    assert (short.count, hourly_total(short)) == (5, 5)

    failed_batch(3)
    third = analyze_errors()
    assert third.item_failures == 3
    short.refresh_from_db()
    assert (short.count, hourly_total(short)) == (8, 8)


def test_a_new_pattern_raises_exactly_one_alert_and_one_event() -> None:
    batch = failed_batch(12)
    report = analyze_errors()

    alert = Alert.objects.get()
    fp = by_message()[TOO_SHORT]
    assert [(a.kind, a.fingerprint) for a in report.alerts] == [(NEW_ERROR_PATTERN, fp.fingerprint)]
    assert (alert.kind, alert.fingerprint_id, alert.tenant_id) == (NEW_ERROR_PATTERN, fp.id, fp.tenant_id)
    assert alert.details["count"] == 12 and alert.details["phase"] == "validate"

    event = OutboxEvent.objects.get(event_type=ALERT_EVENT)
    assert (event.batch_id, event.key, event.tenant_id, event.published_at) == (
        None,
        fp.fingerprint,
        fp.tenant_id,
        None,
    )
    batch_shape = event_envelope(batch=batch, event_type="x", at=timezone.now())
    assert set(event.envelope) == set(batch_shape)
    assert event.envelope["event_type"] == ALERT_EVENT
    assert event.envelope["event_id"] == str(event.event_id)
    assert event.envelope["tenant"] == "acme"
    assert event.envelope["data"]["alert_id"] == alert.id
    assert event.envelope["data"]["kind"] == NEW_ERROR_PATTERN
    assert event.envelope["data"]["fingerprint"] == fp.fingerprint

    # More of the same pattern (even many, in the hour it appeared) raises nothing more.
    failed_batch(20)
    assert analyze_errors().alerts == ()
    assert Alert.objects.count() == 1
    assert OutboxEvent.objects.filter(event_type=ALERT_EVENT).count() == 1


def age(fp: ErrorFingerprint, *, per_hour: int) -> None:
    """Give a fingerprint a history: first seen two days ago, `per_hour` occurrences in
    each of the 24 hours before this one."""
    hour = hour_of(timezone.now())
    ErrorFingerprint.objects.filter(id=fp.id).update(first_seen=hour - timedelta(days=2))
    ErrorCount.objects.bulk_create(
        [ErrorCount(fingerprint=fp, hour=hour - timedelta(hours=k), count=per_hour) for k in range(1, 25)]
    )


def test_a_rising_rate_raises_one_rising_alert_per_hour() -> None:
    failed_batch(1)
    analyze_errors()
    fp = by_message()[TOO_SHORT]
    age(fp, per_hour=1)

    failed_batch(30)
    report = analyze_errors()

    assert [a.kind for a in report.alerts] == [RISING_ERROR_RATE]
    alert = Alert.objects.get(kind=RISING_ERROR_RATE)
    assert alert.fingerprint_id == fp.id
    assert alert.details["count_this_hour"] == 31
    assert alert.details["average_per_hour"] == 1.0
    assert alert.details["hour"] == hour_of(timezone.now()).isoformat()
    assert OutboxEvent.objects.filter(event_type=ALERT_EVENT, key=fp.fingerprint).count() == 2

    # Still rising in the same hour: no second alert.
    failed_batch(15)
    assert analyze_errors().alerts == ()
    assert Alert.objects.filter(kind=RISING_ERROR_RATE).count() == 1


def test_a_steady_rate_raises_no_rising_alert() -> None:
    failed_batch(1)
    analyze_errors()
    age(by_message()[TOO_SHORT], per_hour=20)

    failed_batch(30)  # 31 this hour: less than 3 × 20
    assert analyze_errors().alerts == ()
    assert not Alert.objects.filter(kind=RISING_ERROR_RATE).exists()


def test_a_rate_under_the_minimum_raises_no_rising_alert() -> None:
    failed_batch(1)
    analyze_errors()
    age(by_message()[TOO_SHORT], per_hour=0)

    failed_batch(5)  # 6 this hour, from nothing: but fewer than 10
    assert analyze_errors().alerts == ()


def test_phase_failures_are_counted_once_they_settled() -> None:
    batch = batch_create(request=batch_request(), actor="test").batch
    phase = running_phase(batch, "aggregate")
    phase_fail(
        phase_run_id=phase.id,
        error="RuntimeError: the per-batch handler blew up after 3 s\nTraceback (most recent call last):\n  x",
    )

    assert analyze_errors().phase_failures == 0  # younger than PHASE_SETTLE: not yet
    report = analyze_errors(phase_settle=timedelta(0))
    assert report.phase_failures == 1
    fp = ErrorFingerprint.objects.get()
    assert (fp.error_type, fp.message, fp.phase, fp.count) == (
        "RuntimeError",
        "the per-batch handler blew up after <n> s",
        "aggregate",
        1,
    )
    assert fp.sample.startswith("RuntimeError: the per-batch handler blew up after 3 s\nTraceback")
    assert fp.sample_batch_id == batch.id
    assert analyze_errors(phase_settle=timedelta(0)).phase_failures == 0


def test_item_results_of_transactions_still_open_are_not_skipped() -> None:
    """A result whose id is lower than ones already committed, in a transaction still
    open, is counted once that transaction commits: the watermark never passes it."""
    waiting = batch_create(request=batch_request(items=essay_items(2)), actor="test").batch
    phase = PhaseRun.objects.get(batch=waiting, name="spellcheck")
    item = waiting.items.get(seq=0)
    other = other_connection()
    try:
        other.execute(
            "INSERT INTO orchestrator_itemresult (item_id, phase_run_id, ok, error, error_class, created_at)"
            " VALUES (%s, %s, false, %s, 'transient', now())",
            [item.id, phase.id, "TransientError: try 3 failed"],
        )
        failed_batch(4)  # higher ids, committed

        held = analyze_errors(settle_timeout=0.2)
        assert held.deferred == (ITEM_RESULTS,) and held.item_failures == 0
        assert AnalysisWatermark.objects.get(name=ITEM_RESULTS).position == 0

        other.commit()
        report = analyze_errors()
        assert (report.deferred, report.item_failures) == ((), 5)
        assert {f.error_type: f.count for f in ErrorFingerprint.objects.all()} == {
            "ItemFailed": 4,
            "TransientError": 1,
        }
    finally:
        other.close()


def test_analysis_queries_do_not_grow_with_errors() -> None:
    counts = []
    for n, tenant in ((10, "small"), (300, "large")):
        failed_batch(n, tenant=tenant)  # a new pattern each time (a new tenant)
        with CaptureQueriesContext(connection) as ctx:
            report = analyze_errors()
        assert report.item_failures == n and len(report.alerts) == 1
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]
    assert counts[1] <= 16


def test_top_errors_with_trends_and_recent_alerts() -> None:
    failed_batch(6)
    failed_batch(2, items=no_text_items(2))
    failed_batch(3, tenant="zeta")
    analyze_errors()
    acme = Tenant.objects.get(slug="acme").id
    fp = by_message()[TOO_SHORT]
    hour = hour_of(timezone.now())
    ErrorCount.objects.create(fingerprint=fp, hour=hour - timedelta(hours=5), count=4)
    ErrorCount.objects.create(fingerprint=fp, hour=hour - timedelta(hours=30), count=9)  # out of the trend

    errors = top_errors([acme])

    assert [(e["message"], e["count"]) for e in errors] == [(TOO_SHORT, 6), (NO_TEXT, 2)]
    top = errors[0]
    assert len(top["trend"]) == 24 and all(isinstance(v, int) for v in top["trend"])
    assert top["trend"][-1] == 6 and top["trend"][-6] == 4 and sum(top["trend"]) == 10
    assert top["tenant"] == "acme" and top["fingerprint"] == fp.fingerprint
    assert (top["error_type"], top["error_class"], top["pipeline"], top["phase"]) == (
        "ItemFailed",
        "bad_input",
        "essay-analysis",
        "validate",
    )
    assert top["first_seen"] <= top["last_seen"] and top["sample_batch"]
    assert len(top_errors([acme], limit=1)) == 1

    # Since some hours ago: counted from that hour on.
    since = top_errors([acme], since=timezone.now() - timedelta(hours=6))
    assert since[0]["count"] == 10
    assert top_errors([acme], since=timezone.now() + timedelta(minutes=1)) == []

    alerts = recent_alerts([acme])
    assert {a["kind"] for a in alerts} == {NEW_ERROR_PATTERN}
    assert {a["fingerprint"] for a in alerts} == {e["fingerprint"] for e in errors}
    assert all(a["tenant"] == "acme" for a in alerts)
    assert len(recent_alerts([acme], limit=1)) == 1
    assert top_errors([]) == [] and recent_alerts([]) == []


def test_the_report_command_prints_tables_and_json() -> None:
    failed_batch(4)
    failed_batch(2, tenant="zeta")

    out = io.StringIO()
    call_command("error_report", stdout=out)
    text = out.getvalue()
    assert "analyzed: 6 item" in text
    assert "Top errors" in text and "Recent alerts" in text
    assert "ItemFailed" in text and "new_error_pattern" in text
    assert "█" in text  # the sparkline of this hour

    out = io.StringIO()
    call_command("error_report", "--json", "--no-analyze", "--tenant", "zeta", stdout=out)
    data = json.loads(out.getvalue())
    assert data["analysis"] is None
    assert [(e["tenant"], e["count"], len(e["trend"])) for e in data["errors"]] == [("zeta", 2, 24)]
    assert [a["kind"] for a in data["alerts"]] == [NEW_ERROR_PATTERN]

    out = io.StringIO()
    call_command("error_report", "--json", "--since", "2000-01-01T00:00:00Z", stdout=out)
    assert json.loads(out.getvalue())["analysis"]["item_failures"] == 0

    with pytest.raises(CommandError, match="unknown tenant"):
        call_command("error_report", "--tenant", "nobody", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--since"):
        call_command("error_report", "--since", "yesterday", stdout=io.StringIO())


def test_the_task_runs_the_analysis() -> None:
    failed_batch(3)
    result = analyze_errors_task()
    assert result["item_failures"] == 3 and result["new_fingerprints"] == 1
    assert [a["kind"] for a in result["alerts"]] == [NEW_ERROR_PATTERN]


def test_a_run_reads_at_most_batch_limit_and_the_next_goes_on() -> None:
    failed_batch(7)
    assert [analyze_errors(batch_limit=3).item_failures for _ in range(4)] == [3, 3, 1, 0]
    assert by_message()[TOO_SHORT].count == 7


def failed_phases(n: int) -> list[PhaseRun]:
    phases = []
    for _ in range(n):
        batch = batch_create(request=batch_request(items=essay_items(2)), actor="test").batch
        phase = running_phase(batch, "aggregate")
        phase_fail(phase_run_id=phase.id, error="RuntimeError: boom")
        phases.append(phase)
    return phases


def test_phase_failures_sharing_a_timestamp_are_not_split_by_the_limit() -> None:
    phases = failed_phases(4)
    at = timezone.now() - timedelta(minutes=5)
    PhaseRun.objects.filter(id__in=[p.id for p in phases[:3]]).update(finished_at=at)

    assert analyze_errors(batch_limit=2).phase_failures == 3  # the 3 at the same instant
    assert analyze_errors(batch_limit=2, phase_settle=timedelta(0)).phase_failures == 1
    assert analyze_errors(phase_settle=timedelta(0)).phase_failures == 0
    assert ErrorFingerprint.objects.get().count == 4


def test_a_run_while_another_holds_the_watermarks_does_nothing() -> None:
    analyze_errors()
    failed_batch(3)
    with other_connection() as other:
        other.execute("SELECT * FROM orchestrator_analysiswatermark FOR UPDATE")
        assert analyze_errors().skipped
        assert not ErrorFingerprint.objects.exists()
    assert analyze_errors().item_failures == 3
