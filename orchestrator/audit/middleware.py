"""Every HTTP request acts as its user, from its client's address (the audit context), and
a refusal that no view recorded (the admin's or the dashboard's 403) is recorded here."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

from orchestrator.audit.addresses import client_address
from orchestrator.audit.records import Outcome, record
from orchestrator.audit.who import ANONYMOUS, Who, acting_as, user
from orchestrator.observability import context, metrics

RECORDED = "_bos_audit_recorded"
# The admin's URL names: `<app>_<model>_<view>`.
ADMIN_URL = re.compile(r"^[a-z_]+?_(?P<model>[a-z]+)_(?P<view>changelist|change|add|delete|history)$")


def request_who(request: HttpRequest) -> Who:
    """The request's actor and address; the user as authenticated by now (DRF: in the view)."""
    account = getattr(request, "user", None)
    actor = user(account.get_username()) if account is not None and account.is_authenticated else ANONYMOUS
    return Who(
        actor=actor,
        ip=client_address(request.META, settings.BOS_TRUSTED_PROXIES),
        correlation_id=context.correlation_id() or "",
    )


def page_action(request: HttpRequest) -> tuple[str, str]:
    """(`<object>.<verb>`, object type) of a page request: `batch.change` for the admin's
    batch page, `page.read` / `page.write` for others."""
    match = request.resolver_match
    if match is not None and match.namespace == "admin":
        found = ADMIN_URL.match(match.url_name or "")
        if found:
            return f"{found['model']}.{found['view']}", found["model"]
    verb = "read" if request.method in ("GET", "HEAD", "OPTIONS") else "write"
    return f"page.{verb}", "page"


class AuditContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        with acting_as(lambda: request_who(request)):
            response = self.get_response(request)
            if response.status_code == 403 and not getattr(request, RECORDED, False):
                action, object_type = page_action(request)
                record(
                    action,
                    outcome=Outcome.DENIED,
                    object_type=object_type,
                    object_id=request.path[:200],
                    detail={"path": request.path, "method": request.method},
                )
                metrics.security_event("denied")
        return response
