"""API tokens: stored hashed (django-rest-knox), expiring after BOS_API_TOKEN_TTL_DAYS,
revocable (`revoke_api_tokens`), issued and revoked with audit records, and watched for
use from a new address (an alert, a metric, an audit record)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from orchestrator.models import Alert, AuditRecord
from orchestrator.services.users import api_user_grant
from tests.support.metrics import security_events

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def client(key: str, ip: str = "10.20.0.1") -> APIClient:
    api = APIClient(REMOTE_ADDR=ip)
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return api


def test_a_token_is_stored_only_as_its_digest() -> None:
    key = api_user_grant(username="alice", tenant="acme", role="viewer").key
    with connection.cursor() as cursor:
        cursor.execute("SELECT digest, token_key FROM knox_authtoken")
        rows = cursor.fetchall()
    assert len(rows) == 1 and rows[0][0] != key and key not in rows[0][0]
    assert len(key) == 64 and rows[0][1] == key[:15]  # knox's lookup prefix, not enough to use
    assert client(key).get("/api/v1/batches/").status_code == 200


def test_a_token_expires_after_the_ttl_and_is_then_refused() -> None:
    assert settings.BOS_API_TOKEN_TTL_DAYS == 90
    key = api_user_grant(username="alice", tenant="acme", role="viewer").key
    token = AuthToken.objects.get()
    assert token.expiry is not None
    assert abs(token.expiry - (token.created + timedelta(days=90))) < timedelta(seconds=5)
    # The token's own expiry is the clock it is judged by: move it to just past.
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    answer = client(key).get("/api/v1/batches/")
    assert answer.status_code == 401 and answer.json()["code"] == "authentication_failed"
    assert not AuthToken.objects.exists()  # knox deletes an expired token when it is shown


def test_revoking_a_users_tokens_refuses_them_and_is_audited(capsys: pytest.CaptureFixture[str]) -> None:
    first = api_user_grant(username="alice", tenant="acme", role="viewer").key
    second = api_user_grant(username="alice", tenant="globex", role="viewer").key
    assert client(first).get("/api/v1/batches/").status_code == 200
    call_command("revoke_api_tokens", "alice")
    assert "revoked 2 token(s) of alice" in capsys.readouterr().out
    for key in (first, second):
        assert client(key).get("/api/v1/batches/").status_code == 401
    record = AuditRecord.objects.get(action="token.revoke")
    assert (record.actor, record.object_id, record.detail["revoked"]) == (
        "system:revoke_api_tokens",
        "alice",
        2,
    )


def test_create_api_user_audits_the_user_membership_and_token(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("create_api_user", "dora", "--tenant", "acme", "--role", "operator")
    call_command("create_api_user", "dora", "--tenant", "acme", "--role", "admin")
    records = AuditRecord.objects.filter(actor="system:create_api_user").order_by("id")
    assert [r.action for r in records] == [
        "user.create",
        "membership.create",
        "token.create",
        "membership.update",
        "token.create",
    ]
    assert records[3].detail == {"username": "dora", "role": "admin", "previous_role": "operator"}
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed not in str([r.detail for r in records])  # the secret is never recorded


def test_a_token_used_from_a_new_address_raises_an_alert() -> None:
    key = api_user_grant(username="alice", tenant="acme", role="viewer").key
    before = security_events("token_new_address")
    for _ in range(3):
        assert client(key, ip="10.20.0.5").get("/api/v1/batches/").status_code == 200
    assert not AuditRecord.objects.filter(action="token.new_address").exists()  # its first address
    assert client(key, ip="172.16.5.5").get("/api/v1/batches/").status_code == 200
    assert client(key, ip="10.20.0.5").get("/api/v1/batches/").status_code == 200  # known again
    record = AuditRecord.objects.get(action="token.new_address")
    assert (record.actor, record.ip, record.detail["addresses_seen"]) == ("user:alice", "172.16.5.5", 2)
    alert = Alert.objects.get(kind="security.token_new_address")
    assert "172.16.5.5" in alert.message and alert.details["username"] == "alice"
    assert security_events("token_new_address") == before + 1
    # A third address: audited and counted, but one alert an hour per token is enough.
    assert client(key, ip="172.16.5.6").get("/api/v1/batches/").status_code == 200
    assert AuditRecord.objects.filter(action="token.new_address").count() == 2
    assert Alert.objects.filter(kind="security.token_new_address").count() == 1


def test_a_token_that_is_not_text_is_a_json_401() -> None:
    answer = APIClient().get("/api/v1/batches/", HTTP_AUTHORIZATION="Token caf\xe9\xff")
    assert answer.status_code == 401 and answer.json()["code"] == "authentication_failed"


def test_an_inactive_users_token_is_refused() -> None:
    key = api_user_grant(username="alice", tenant="acme", role="viewer").key
    get_user_model().objects.filter(username="alice").update(is_active=False)
    assert client(key).get("/api/v1/batches/").status_code == 401
