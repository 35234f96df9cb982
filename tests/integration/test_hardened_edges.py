"""The edges: `/metrics` behind BOS_METRICS_TOKEN, `/readyz` without detail for anonymous
callers, security headers and the admin's CSP, `check --deploy` clean in production, and
Django's DEBUG off unless asked for (and refused in production).

No debug page on API paths even with DEBUG on: tests/integration/test_api_hostile.py
`TestWithDebugOn` (an exception in a view under DEBUG=True is a JSON 500).
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings

from orchestrator.observability.exporter import serve_machine_metrics
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

TOKEN = "metrics-" + "x" * 24


@override_settings(BOS_METRICS_TOKEN=TOKEN)
def test_metrics_need_the_bearer_token_when_one_is_set() -> None:
    for header in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": f"Token {TOKEN}"}):
        refused = Client().get("/metrics", **header)
        assert refused.status_code == 401 and refused.json()["code"] == "not_authenticated"
        assert refused["WWW-Authenticate"].startswith("Bearer")
    allowed = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert allowed.status_code == 200 and b"bos_http_requests" in allowed.content


def test_metrics_need_no_token_when_none_is_set() -> None:
    assert settings.BOS_METRICS_TOKEN is None
    assert Client().get("/metrics").status_code == 200


@override_settings(BOS_METRICS_TOKEN=TOKEN)
def test_the_metrics_port_asks_for_the_same_token() -> None:
    port = free_port()
    assert serve_machine_metrics("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/metrics"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)  # noqa: S310
    assert refused.value.code == 401
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        assert answer.status == 200 and b"bos_http_requests_total" in answer.read()


def test_readyz_tells_anonymous_callers_only_whether_each_check_passed(admin_client: Any) -> None:
    anonymous = Client().get("/readyz")
    body = anonymous.json()
    assert set(body) == {"ready", "checks"}
    assert set(body["checks"]) == {"database", "redis", "broker", "kafka", "consumers"}
    assert all(set(check) == {"ok"} for check in body["checks"].values())
    detailed = admin_client.get("/readyz").json()
    assert {"services", "config"} <= set(detailed) and "ms" in detailed["checks"]["database"]
    assert anonymous.status_code == admin_client.get("/readyz").status_code


@override_settings(BOS_METRICS_TOKEN=TOKEN)
def test_readyz_detail_for_the_metrics_token() -> None:
    assert "services" in Client().get("/readyz", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").json()
    assert "services" not in Client().get("/readyz").json()


def test_pages_and_api_answers_carry_the_security_headers() -> None:
    for path in ("/admin/login/", "/api/v1/batches/", "/healthz"):
        answer = Client().get(path)
        assert answer["X-Content-Type-Options"] == "nosniff", path
        assert answer["X-Frame-Options"] == "DENY", path
        assert answer["Referrer-Policy"] == "same-origin", path
        assert answer["Cross-Origin-Opener-Policy"] == "same-origin", path
    page = Client().get("/admin/login/")
    csp = page["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert "Content-Security-Policy" in Client().get("/dashboard/")  # its redirect to the login
    assert "Content-Security-Policy" not in Client().get("/api/v1/batches/")


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("BOS_DEBUG", "BOS_ENV", "BOS_METRICS_TOKEN")}
    environ.update(DJANGO_SETTINGS_MODULE="bos_project.settings", **env)
    return subprocess.run(  # noqa: S603 - our own manage.py
        [sys.executable, "manage.py", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=settings.BASE_DIR,
        check=False,
    )


PRODUCTION = {
    "BOS_ENV": "production",
    "BOS_SECRET_KEY": secrets.token_urlsafe(60),
    "BOS_ENCRYPTION_KEYS": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    "BOS_FLOWER_PASSWORD": secrets.token_urlsafe(16),
    "BOS_METRICS_TOKEN": secrets.token_urlsafe(24),
}


def test_check_deploy_is_clean_in_production() -> None:
    done = _manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert done.returncode == 0, done.stdout + done.stderr
    # One check is silenced, with its reason in bos_project/settings/security_settings.py.
    assert "System check identified no issues (1 silenced)." in done.stdout


def test_check_deploy_warns_without_a_metrics_token_in_production() -> None:
    production = {k: v for k, v in PRODUCTION.items() if k != "BOS_METRICS_TOKEN"}
    done = _manage("check", "--deploy", "--fail-level", "WARNING", **production)
    assert done.returncode != 0 and "bos.W101" in done.stderr


def test_debug_is_off_unless_asked_for_and_refused_in_production() -> None:
    show = "from django.conf import settings; print(settings.DEBUG)"
    assert _manage("shell", "-c", show, BOS_ENV="development").stdout.strip().endswith("False")
    assert _manage("shell", "-c", show, BOS_ENV="development", BOS_DEBUG="1").stdout.strip().endswith("True")
    refused = _manage("check", **PRODUCTION, BOS_DEBUG="1")
    assert refused.returncode != 0 and "BOS_DEBUG must not be on when BOS_ENV=production" in refused.stderr
