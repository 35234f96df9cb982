"""Every HTTP request acts as its user, from its client's address (the audit context)."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

from orchestrator.audit.addresses import client_address
from orchestrator.audit.who import ANONYMOUS, Who, acting_as, user
from orchestrator.observability import context


def request_who(request: HttpRequest) -> Who:
    """The request's actor and address; the user as authenticated by now (DRF: in the view)."""
    account = getattr(request, "user", None)
    actor = user(account.get_username()) if account is not None and account.is_authenticated else ANONYMOUS
    return Who(
        actor=actor,
        ip=client_address(request.META, settings.BOS_TRUSTED_PROXIES),
        correlation_id=context.correlation_id() or "",
    )


class AuditContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        with acting_as(lambda: request_who(request)):
            return self.get_response(request)
