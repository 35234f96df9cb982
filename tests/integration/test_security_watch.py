"""Security monitoring: refusals, failed logins from one address, cross-tenant attempts,
throttling and unusual payload-read volume raise alerts from the audit log, once per actor
and window, at the default thresholds (docs/security.md#monitoring)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from orchestrator.models import Alert, AuditRecord, Tenant
from orchestrator.security import watch
from tasks.security import security_watch_task
from tests.support.factories import BatchFactory, MembershipFactory, TenantFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def member(role: str, username: str, tenant: Tenant) -> Any:
    account = UserFactory(username=username)
    MembershipFactory(user=account, tenant=tenant, role=role)
    return account


def api_as(account: Any) -> APIClient:
    client = APIClient(REMOTE_ADDR="198.51.100.20")
    client.force_authenticate(account)
    return client


def alerts(kind: str) -> list[Alert]:
    return list(Alert.objects.filter(kind=kind).order_by("id"))


def past_record(action: str, *, actor: str, at: datetime, **fields: Any) -> None:
    """An audit record written at `at` (the log is append-only: created, never changed)."""
    AuditRecord.objects.create(
        action=action, actor=actor, at=at, outcome=fields.pop("outcome", "ok"), **fields
    )


def test_the_thresholds_default_to_twenty_refusals_three_cross_tenant_five_throttled_minutes() -> None:
    assert (
        settings.BOS_SECURITY_REFUSALS_ALERT,
        settings.BOS_SECURITY_CROSS_TENANT_ALERT,
        settings.BOS_SECURITY_THROTTLED_ALERT,
        settings.BOS_PAYLOAD_READ_ALERT_ITEMS,
    ) == (20, 3, 5, 10_000)
    assert settings.CELERY_BEAT_SCHEDULE["security-watch"]["schedule"] == 60.0


def test_twenty_refusals_of_one_actor_raise_one_alert_and_nineteen_none() -> None:
    acme = TenantFactory(slug="acme")
    batch = BatchFactory(tenant=acme)
    vic, val = member("viewer", "vic", acme), member("viewer", "val", acme)
    for _ in range(20):
        assert api_as(vic).post(f"/api/v1/batches/{batch.id}/cancel/", {}, format="json").status_code == 403
    for _ in range(19):
        assert api_as(val).post(f"/api/v1/batches/{batch.id}/cancel/", {}, format="json").status_code == 403

    assert security_watch_task()["raised"] == 1
    [alert] = alerts(watch.REFUSALS)
    assert (alert.tenant_id, alert.details["who"], alert.details["count"]) == (None, "user:vic", 20)
    assert "user:vic was refused 20 times in 15 minutes" in alert.message
    # Once per actor and window: the next minute's run raises nothing new.
    assert watch.security_watch().raised == []
    # Past the window, with the refusals going on, it is raised again.
    later = timezone.now() + watch.WINDOW + timedelta(minutes=1)
    for _ in range(20):
        past_record("batch.cancel", actor="user:vic", at=later - timedelta(minutes=1), outcome="denied")
    assert [a["who"] for a in watch.security_watch(now=later).raised] == ["user:vic"]
    assert len(alerts(watch.REFUSALS)) == 2


def test_failed_logins_from_one_address_trying_many_usernames_raise_an_alert() -> None:
    client = Client(REMOTE_ADDR="203.0.113.50")
    for n in range(20):  # one try per username: no username and address pair is locked out
        answer = client.post("/admin/login/?next=/admin/", {"username": f"guess{n}", "password": "x"})
        assert answer.status_code == 200

    watch.security_watch()

    [alert] = alerts(watch.LOGIN_FAILURES)
    assert (alert.details["who"], alert.details["count"]) == ("203.0.113.50", 20)
    assert alerts(watch.REFUSALS) == []  # anonymous login failures are counted by address only


def test_a_token_used_across_tenants_raises_a_cross_tenant_alert() -> None:
    acme, globex = TenantFactory(slug="acme"), TenantFactory(slug="globex")
    theirs = [BatchFactory(tenant=globex) for _ in range(3)]
    mallory = member("admin", "mallory", acme)
    for batch in theirs:
        assert api_as(mallory).get(f"/api/v1/batches/{batch.id}/").status_code == 404

    watch.security_watch()

    [alert] = alerts(watch.CROSS_TENANT)
    assert (alert.details["who"], alert.details["count"]) == ("user:mallory", 3)
    assert alerts(watch.REFUSALS) == []  # a cross-tenant attempt is counted as that, not twice


def test_five_throttled_minutes_within_fifteen_raise_an_alert_and_four_do_not() -> None:
    now = timezone.now()
    for minute in range(5):
        past_record("api.throttled", actor="user:flood", at=now - timedelta(minutes=minute), outcome="denied")
    for minute in range(4):
        past_record("api.throttled", actor="user:burst", at=now - timedelta(minutes=minute), outcome="denied")
    past_record("api.throttled", actor="user:burst", at=now - timedelta(minutes=20), outcome="denied")

    watch.security_watch(now=now)

    assert [(a.details["who"], a.details["count"]) for a in alerts(watch.THROTTLED)] == [("user:flood", 5)]


def test_payload_reads_far_above_what_an_actor_usually_reads_raise_an_alert() -> None:
    now = timezone.now()
    for hours_ago in (5, 30, 80):  # ann reads a few hundred items an hour, now and then
        past_record(
            "payload_read", actor="user:ann", at=now - timedelta(hours=hours_ago), detail={"items": 500}
        )
    for hours_ago in (3, 50):  # the exporter reads 20,000 an hour: that is its job
        past_record(
            "payload_read",
            actor="system:export",
            at=now - timedelta(hours=hours_ago),
            detail={"items": 20_000},
        )
    for _ in range(3):
        past_record("payload_read", actor="user:ann", at=now - timedelta(minutes=10), detail={"items": 4_000})
        past_record(
            "payload_read", actor="system:export", at=now - timedelta(minutes=10), detail={"items": 7_000}
        )
    past_record("payload_read", actor="user:bob", at=now - timedelta(minutes=5), detail={"items": 9_000})

    watch.security_watch(now=now)

    [alert] = alerts(watch.PAYLOAD_READS)
    assert (alert.details["who"], alert.details["count"], alert.details["most_in_an_hour_before"]) == (
        "user:ann",
        12_000,
        500,
    )
    # Bob's 9,000 are under the 10,000 floor; the exporter's 21,000 are not 3× its 20,000.
    assert watch.security_watch(now=now).raised == []
