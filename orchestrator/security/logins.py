"""Admin logins in the audit log and the metrics; django-axes' lockout as BOS configures it.

Django's `user_logged_in` / `user_login_failed` and axes' `user_locked_out` signals, connected
in `OrchestratorConfig.ready()`:

- a login: `login`, outcome `ok`, actor `user:<name>`;
- a failed login: `login_failed`, outcome `denied`, actor `anonymous`, detail the username
  tried (never the password: Django's credentials are already cleansed, and only the
  username is read) and whether axes refused it as locked out. Refusals during a lockout
  are audited at most once a minute per username and address; every one is counted in
  `bos_security_events_total{kind="login_failed"}`;
- a lockout (BOS_LOGIN_FAILURE_LIMIT failures of one username from one address): one
  `login_locked_out` record (denied), `bos_security_events_total{kind="login_locked_out"}` and an `Alert` of kind
  `security.login_lockout`, once per lockout.

All of them carry the client address as `client_address` sees it (BOS_TRUSTED_PROXIES);
axes locks by the same address (`AXES_CLIENT_IP_CALLABLE = client_ip`).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from orchestrator import audit
from orchestrator.audit import who as actors
from orchestrator.audit.addresses import client_address
from orchestrator.audit.who import ANONYMOUS, Who
from orchestrator.models import Alert
from orchestrator.observability import context, metrics

logger = logging.getLogger(__name__)

LOCKOUT_ALERT = "security.login_lockout"
REFUSED_AUDIT_SECONDS = 60


def client_ip(request: HttpRequest) -> str | None:
    """axes' AXES_CLIENT_IP_CALLABLE: the same client address the audit log records."""
    return client_address(request.META, settings.BOS_TRUSTED_PROXIES)


def _who(request: HttpRequest | None, actor: str) -> Who:
    ip = client_ip(request) if request is not None else None
    return Who(actor=actor, ip=ip, correlation_id=context.correlation_id() or "")


def _first(key: str, seconds: int) -> bool:
    try:
        return bool(cache.add(key, 1, timeout=seconds))
    except Exception:  # noqa: BLE001 - Redis trouble: record rather than lose the event
        logger.warning("login audit de-duplication unavailable", exc_info=True)
        return True


def _username(credentials: dict[str, Any] | None) -> str:
    value = (credentials or {}).get("username")
    return str(value)[:150] if value is not None else ""


def logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    name = user.get_username()
    audit.record(
        "login",
        object_type="user",
        object_id=name,
        detail={"username": name},
        who=_who(request, actors.user(name)),
    )


def login_failed(
    sender: Any, credentials: dict[str, Any] | None = None, request: HttpRequest | None = None, **kwargs: Any
) -> None:
    metrics.security_event("login_failed")
    username = _username(credentials)
    locked_out = bool(getattr(request, "axes_locked_out", False))
    who = _who(request, ANONYMOUS)
    if locked_out and not _first(f"login-refused:{username}:{who.ip}", REFUSED_AUDIT_SECONDS):
        return
    audit.record(
        "login_failed",
        outcome=audit.Outcome.DENIED,
        object_type="user",
        object_id=username,
        detail={"username": username, "locked_out": locked_out},
        who=who,
    )


def locked_out(
    sender: Any, request: HttpRequest | None = None, username: str | None = None, **kwargs: Any
) -> None:
    """axes sends this at the failure that locks out and again at each refused attempt."""
    who = _who(request, ANONYMOUS)
    name = str(username or "")[:150]
    if not _first(f"lockout:{name}:{who.ip}", settings.BOS_LOGIN_COOLOFF_MINUTES * 60):
        return
    metrics.security_event("login_locked_out")
    detail = {
        "username": name,
        "failures": settings.AXES_FAILURE_LIMIT,
        "cooloff_minutes": settings.BOS_LOGIN_COOLOFF_MINUTES,
    }
    audit.record(
        "login_locked_out",
        outcome=audit.Outcome.DENIED,
        object_type="user",
        object_id=name,
        detail=detail,
        who=who,
    )
    Alert.objects.create(
        tenant=None,
        kind=LOCKOUT_ALERT,
        message=f"admin login of {name!r} from {who.ip or 'an unknown address'} locked out "
        f"after {settings.AXES_FAILURE_LIMIT} failures",
        details={**detail, "ip": who.ip},
    )


def lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """axes' AXES_LOCKOUT_CALLABLE: a page saying so, 429 with Retry-After (the cool-off)."""
    from django.contrib import admin

    minutes = settings.BOS_LOGIN_COOLOFF_MINUTES
    page = {**admin.site.each_context(request), "title": "Locked out", "cooloff_minutes": minutes}
    response = render(request, "security/lockout.html", page, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response


def connect() -> None:
    """Connect the receivers (OrchestratorConfig.ready)."""
    from axes.signals import user_locked_out
    from django.contrib.auth.signals import user_logged_in, user_login_failed

    user_logged_in.connect(logged_in, dispatch_uid="bos.security.logged_in")
    user_login_failed.connect(login_failed, dispatch_uid="bos.security.login_failed")
    user_locked_out.connect(locked_out, dispatch_uid="bos.security.locked_out")
