"""Admin logins: audited (login, login_failed with the address, never the password),
locked out after BOS_LOGIN_FAILURE_LIMIT failures of one username from one address
(django-axes, at the default limit), counted in the metrics and raised as an alert."""

from __future__ import annotations

import json

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client, override_settings

from orchestrator.models import Alert, AuditRecord
from tests.support.metrics import security_events

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

PASSWORD = "the-right-horse-battery"
WRONG = "Wr0ng-and-secret-guess"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def staff() -> str:
    user = get_user_model().objects.create(username="ops", is_staff=True)
    user.set_password(PASSWORD)
    user.save()
    return "ops"


def attempt(client: Client, username: str, password: str):  # type: ignore[no-untyped-def]
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})


def test_the_default_lockout_is_five_failures_for_fifteen_minutes() -> None:
    assert (settings.BOS_LOGIN_FAILURE_LIMIT, settings.BOS_LOGIN_COOLOFF_MINUTES) == (5, 15)
    assert settings.AXES_FAILURE_LIMIT == 5 and settings.AXES_LOCKOUT_PARAMETERS == [
        ["username", "ip_address"]
    ]


def test_a_failed_login_is_audited_with_the_address_and_never_the_password(staff: str) -> None:
    before = security_events("login_failed")
    answer = attempt(Client(REMOTE_ADDR="198.51.100.4"), staff, WRONG)
    assert answer.status_code == 200 and "_auth_user_id" not in answer.wsgi_request.session
    record = AuditRecord.objects.get(action="login_failed")
    assert (record.outcome, record.ip, record.actor) == ("denied", "198.51.100.4", "anonymous")
    assert record.detail == {"username": staff, "locked_out": False}
    assert WRONG not in json.dumps(record.detail) and WRONG not in str(record.__dict__)
    assert security_events("login_failed") == before + 1


@override_settings(BOS_TRUSTED_PROXIES=["10.0.0.0/8"])
def test_behind_a_trusted_proxy_the_forwarded_address_is_recorded_and_locked(staff: str) -> None:
    client = Client(REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="203.0.113.9")
    attempt(client, staff, WRONG)
    assert AuditRecord.objects.get(action="login_failed").ip == "203.0.113.9"
    assert AccessAttempt.objects.get(username=staff).ip_address == "203.0.113.9"


def test_a_successful_login_is_audited(staff: str) -> None:
    answer = attempt(Client(REMOTE_ADDR="198.51.100.5"), staff, PASSWORD)
    assert answer.status_code == 302
    record = AuditRecord.objects.get(action="login")
    assert (record.outcome, record.actor, record.ip) == ("ok", f"user:{staff}", "198.51.100.5")


def test_five_failures_lock_the_username_out_from_that_address(staff: str) -> None:
    lockouts = security_events("login_locked_out")
    client = Client(REMOTE_ADDR="198.51.100.6")
    for _ in range(settings.BOS_LOGIN_FAILURE_LIMIT - 1):
        assert attempt(client, staff, WRONG).status_code == 200
    locking = attempt(client, staff, WRONG)
    assert locking.status_code == 429 and int(locking["Retry-After"]) == 15 * 60
    # Now even the right password is refused, with the lockout page, and no session.
    refused = attempt(client, staff, PASSWORD)
    assert refused.status_code == 429 and b"Too many failed logins" in refused.content
    assert "_auth_user_id" not in refused.wsgi_request.session
    assert not AuditRecord.objects.filter(action="login").exists()
    # One lockout record, one alert, one count; each refused attempt is a failed login.
    lockout = AuditRecord.objects.get(action="login_locked_out")
    assert (lockout.outcome, lockout.ip, lockout.detail["username"]) == ("denied", "198.51.100.6", staff)
    assert Alert.objects.filter(kind="security.login_lockout", details__username=staff).count() == 1
    assert security_events("login_locked_out") == lockouts + 1
    failed = AuditRecord.objects.filter(action="login_failed")
    assert failed.filter(detail__locked_out=False).count() == settings.BOS_LOGIN_FAILURE_LIMIT - 1
    # The locking failure and the refusal after it: at most one record a minute while locked.
    assert failed.filter(detail__locked_out=True).count() == 1

    # The lock is for that username from that address: elsewhere the password still works.
    assert attempt(Client(REMOTE_ADDR="198.51.100.7"), staff, PASSWORD).status_code == 302


def test_an_administrator_lifts_a_lockout(staff: str) -> None:
    client = Client(REMOTE_ADDR="198.51.100.8")
    for _ in range(settings.BOS_LOGIN_FAILURE_LIMIT):
        attempt(client, staff, WRONG)
    assert attempt(client, staff, PASSWORD).status_code == 429
    call_command("axes_reset_username", staff)
    assert attempt(client, staff, PASSWORD).status_code == 302
