"""What the API writes to the audit log beside the services' own records: refusals
(denied, error) that no service saw, and every read of payloads or results.

An operation's name is `<object>.<verb>` (CONTRACT §5): from the URL's name and the
method — `batch-cancel` POST is `batch.cancel`, a GET of anything of a batch
`batch.read`. A 404 for a batch that exists in a tenant the caller is not a member of is
recorded too, as a denied cross-tenant read: the API answers 404 (it does not say the
batch exists), the audit log says what happened. Reads of payloads: `audit.reads`.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator import audit
from orchestrator.audit.middleware import RECORDED
from orchestrator.audit.operations import is_recorded
from orchestrator.models import Batch
from orchestrator.observability import metrics

# Writes whose name is not `<first part of the URL name>.<verb from the method>`.
ACTIONS = {
    ("batch-list", "POST"): "batch.create",
    ("batch-retry-items", "POST"): "batch.retry_items",
    ("config-set", "PUT"): "config.set",
    ("config-rollback", "POST"): "config.rollback",
    ("flag-set", "PUT"): "flag.set",
}


def action_of(request: HttpRequest) -> str:
    match = request.resolver_match
    name = (match.url_name if match else "") or "unknown"
    if (name, request.method) in ACTIONS:
        return ACTIONS[(name, request.method or "")]
    resource = name.split("-")[0]
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return f"{resource}.read"
    verb = name.split("-", 1)[1].replace("-", "_") if "-" in name else (request.method or "").lower()
    return f"{resource}.{verb}"


def mark(request: HttpRequest) -> None:
    setattr(request, RECORDED, True)


def is_marked(request: HttpRequest) -> bool:
    return bool(getattr(request, RECORDED, False))


def _batch_of(request: HttpRequest) -> tuple[str, int | None] | None:
    """The batch a URL names (its id and tenant), if it exists at all."""
    match = request.resolver_match
    try:
        pk = uuid.UUID(str((match.kwargs.get("pk") if match else None) or ""))
    except ValueError:
        return None  # not an id at all
    tenant = Batch.objects.filter(pk=pk).values_list("tenant_id", flat=True).first()
    return (str(pk), tenant) if tenant is not None else None


def refusal(exc: Exception, context: dict[str, Any], response: Response) -> None:
    """Record a refused request (403, 401 with credentials, a cross-tenant 404, a refused
    write) unless a service recorded it already."""
    drf_request: Request | None = context.get("request")
    if drf_request is None or is_recorded(exc):
        return
    request = drf_request._request
    code = response.data.get("code", "") if isinstance(response.data, dict) else ""
    detail = {"code": code, "path": request.path, "method": request.method}
    found = None
    if response.status_code == status.HTTP_403_FORBIDDEN:
        outcome = audit.Outcome.DENIED
        found = _batch_of(request)
    elif response.status_code == status.HTTP_401_UNAUTHORIZED:
        if "HTTP_AUTHORIZATION" not in request.META:
            return  # no credentials at all: the throttle's business, not the audit log's
        outcome = audit.Outcome.DENIED
    elif response.status_code == status.HTTP_404_NOT_FOUND and (found := _batch_of(request)):
        outcome = audit.Outcome.DENIED
        detail["cross_tenant"] = True
        metrics.security_event("cross_tenant")
    elif request.method not in ("GET", "HEAD", "OPTIONS") and 400 <= response.status_code < 500:
        outcome = audit.Outcome.ERROR
    else:
        return
    if outcome is audit.Outcome.DENIED:
        metrics.security_event("denied")
    object_id, tenant = found or ("", None)
    audit.record(
        action_of(request),
        outcome=outcome,
        object_type="batch" if found else "",
        object_id=object_id,
        tenant=tenant,
        detail=detail,
    )
    mark(request)
