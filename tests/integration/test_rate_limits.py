"""API rate limits (CONTRACT §5): past the limit a 429 with `Retry-After` and code `throttled`,
per user, per tenant (shared by its users) and stricter on writes; each refusal counted and
audited, the audit record at most once per caller and window.

The limits are set small through their settings (a limit is data, not a timeout); the
windows' clock is put at the start of a window so no test straddles two windows.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from orchestrator.api import throttles
from orchestrator.config.registry import SETTINGS
from orchestrator.models import AuditRecord, Tenant
from orchestrator.services.users import api_user_grant
from tests.support.factories import BatchFactory
from tests.support.metrics import security_events

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

WINDOW_START = 1_900_000_020.0  # a multiple of 60 (and of 1): every window starts here


@pytest.fixture(autouse=True)
def frozen_windows(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [WINDOW_START + 1.0]
    monkeypatch.setattr(throttles, "clock", lambda: now[0])
    return now


def client_of(username: str, tenant: str = "acme", role: str = "operator", ip: str = "10.9.0.1") -> APIClient:
    client = APIClient(REMOTE_ADDR=ip)
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {api_user_grant(username=username, tenant=tenant, role=role).key}"
    )
    return client


def assert_throttled(response: Any, retry_after_at_most: int = 60) -> None:
    assert response.status_code == 429, response.content[:500]
    body = response.json()
    assert body["code"] == "throttled" and body["message"]
    assert 1 <= int(response["Retry-After"]) <= retry_after_at_most


def test_the_default_rates_are_the_contracts() -> None:
    assert (settings.BOS_API_RATE_USER, settings.BOS_API_RATE_TENANT) == ("1200/min", "6000/min")
    assert settings.BOS_API_RATE_WRITE == "300/min"
    declared = {s.env: s.default for s in SETTINGS}
    assert declared["BOS_API_RATE_USER"] == "1200/min" and declared["BOS_API_RATE_TENANT"] == "6000/min"
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] == [
        "orchestrator.api.throttles.UserRateThrottle",
        "orchestrator.api.throttles.TenantRateThrottle",
        "orchestrator.api.throttles.WriteRateThrottle",
    ]
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"


def test_past_the_user_limit_a_429_with_retry_after_and_code_throttled(frozen_windows: list[float]) -> None:
    alice = client_of("alice")
    before = security_events("throttled.user")
    with override_settings(BOS_API_RATE_USER="3/min"):
        for _ in range(3):
            assert alice.get("/api/v1/batches/").status_code == 200
        frozen_windows[0] = WINDOW_START + 45.2
        refused = alice.get("/api/v1/batches/")
        assert_throttled(refused)
        assert refused["Retry-After"] == "15"  # the rest of the window, rounded up
        # Another user has a budget of their own.
        assert client_of("bob").get("/api/v1/batches/").status_code == 200
        # The next window starts afresh.
        frozen_windows[0] = WINDOW_START + 60.5
        assert alice.get("/api/v1/batches/").status_code == 200
    assert security_events("throttled.user") == before + 1


def test_two_users_of_one_tenant_share_the_tenants_budget() -> None:
    alice, bob = client_of("alice"), client_of("bob")
    outsider = client_of("carol", tenant="globex")
    with override_settings(BOS_API_RATE_TENANT="4/min"):
        for client in (alice, alice, bob, bob):
            assert client.get("/api/v1/batches/").status_code == 200
        assert_throttled(bob.get("/api/v1/batches/"))
        assert_throttled(alice.get("/api/v1/alerts/"))
        assert outsider.get("/api/v1/batches/").status_code == 200
    denied = AuditRecord.objects.filter(action="api.throttled", object_id="tenant")
    assert denied.count() == 1
    record = denied.get()
    assert record.outcome == "denied" and record.tenant_id == Tenant.objects.get(slug="acme").id


def test_a_batch_of_another_tenant_never_spends_that_tenants_budget() -> None:
    theirs = BatchFactory(tenant=Tenant.objects.create(slug="globex"))
    prober, owner = client_of("mallory"), client_of("gina", tenant="globex")
    with override_settings(BOS_API_RATE_TENANT="3/min"):
        for _ in range(3):
            assert prober.get(f"/api/v1/batches/{theirs.id}/").status_code == 404
        assert_throttled(prober.get(f"/api/v1/batches/{theirs.id}/"))  # acme's budget is spent
        assert owner.get(f"/api/v1/batches/{theirs.id}/").status_code == 200


def test_writes_have_a_stricter_limit_than_reads() -> None:
    alice = client_of("alice")
    with override_settings(BOS_API_RATE_WRITE="2/min"):
        for _ in range(2):
            answer = alice.post("/api/v1/batches/", {"tenant": "acme"}, format="json")
            assert answer.status_code == 400, answer.content  # counted though refused as invalid
        assert_throttled(alice.post("/api/v1/batches/", {"tenant": "acme"}, format="json"))
        assert alice.get("/api/v1/batches/").status_code == 200  # reads go on
    assert (
        AuditRecord.objects.filter(action="api.throttled", object_id="write", actor="user:alice").count() == 1
    )


def test_anonymous_callers_are_limited_by_their_address() -> None:
    with override_settings(BOS_API_RATE_USER="2/min"):
        # The schema (JSON) is the API's one page anonymous callers may read.
        one = APIClient(REMOTE_ADDR="192.0.2.7", HTTP_ACCEPT="application/json")
        other = APIClient(REMOTE_ADDR="192.0.2.8", HTTP_ACCEPT="application/json")
        for _ in range(2):
            assert one.get("/api/schema/").status_code == 200
        assert_throttled(one.get("/api/schema/"))
        assert other.get("/api/schema/").status_code == 200
    assert AuditRecord.objects.filter(action="api.throttled", ip="192.0.2.7").count() == 1


def test_a_flood_past_the_limit_writes_one_audit_record_per_window(frozen_windows: list[float]) -> None:
    alice = client_of("alice")
    before = security_events("throttled.user")
    with override_settings(BOS_API_RATE_USER="1/min"):
        assert alice.get("/api/v1/batches/").status_code == 200
        for _ in range(20):
            assert_throttled(alice.get("/api/v1/batches/"))
        frozen_windows[0] = WINDOW_START + 61.0
        assert alice.get("/api/v1/batches/").status_code == 200
        assert_throttled(alice.get("/api/v1/batches/"))
    records = AuditRecord.objects.filter(action="api.throttled", actor="user:alice")
    assert records.count() == 2  # one per window
    detail = records.first().detail  # type: ignore[union-attr]
    assert detail["rate"] == "1/min" and detail["path"] == "/api/v1/batches/" and detail["method"] == "GET"
    assert security_events("throttled.user") == before + 21
