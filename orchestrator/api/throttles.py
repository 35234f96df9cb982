"""API rate limits (CONTRACT §5: over the limit, a 429 with `Retry-After` and code `throttled`).

Three DRF throttles, each a fixed-window counter in the shared Redis of the cache
(`CACHES["default"]`, key prefix `bos`), so every web process counts against one budget:

- `UserRateThrottle`: `BOS_API_RATE_USER` per user; an anonymous caller by its client
  address (`orchestrator.audit.addresses.client_address`, honouring `BOS_TRUSTED_PROXIES`).
- `TenantRateThrottle`: `BOS_API_RATE_TENANT` per tenant, shared by all its users. The tenant
  a request acts on: the batch's for `/batches/{id}/…`, the body's `tenant` for a POST, else
  each of the caller's tenants. Only a tenant the caller belongs to is charged (a superuser:
  any), so nobody can spend another tenant's budget by naming its batches.
- `WriteRateThrottle`: `BOS_API_RATE_WRITE` per user, for POST, PUT, PATCH and DELETE only.

A window's counter is one pipelined `SET NX EX` + `INCR` (atomic, one round trip) rather than
DRF's list of timestamps, whose read-modify-write loses counts under concurrency and grows
with the limit. Fixed windows allow up to twice the rate across a window's edge; the rates
are budgets against floods, not exact quotas. `Retry-After` is the rest of the window.

The rate is read from Django's settings on every request (tests override it with
`override_settings`). Each refusal is counted (`bos_security_events_total{kind="throttled.<scope>"}`) and audited as
`api.throttled` (outcome `denied`), at most once per throttle, caller and window, so a flood
cannot flood the audit table (orchestrator/security/throttling.py). Redis unreachable: the
limits are not applied (fail open, logged), the API keeps answering.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from orchestrator import access
from orchestrator.audit.addresses import client_address
from orchestrator.models import Batch, Tenant
from orchestrator.security import shared_redis
from orchestrator.security.rates import parse_rate

logger = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The clock of the windows (tests put it at a window's start).
clock = time.time


def hit(key: str, period: int) -> int:
    """Count one request in `key`'s window; return the window's count so far."""
    pipe = shared_redis.client().pipeline(transaction=False)
    # The window's key lives a little past its end, then Redis forgets it.
    pipe.set(key, 0, ex=period + 5, nx=True)
    pipe.incr(key)
    return int(pipe.execute()[1])


class WindowThrottle(BaseThrottle):
    scope = ""
    setting = ""

    def __init__(self) -> None:
        self._wait = 0.0

    def idents(self, request: Request, view: Any) -> list[tuple[str, int | None]]:
        """What this request is counted against: (identity, tenant id or None) pairs."""
        raise NotImplementedError

    def allow_request(self, request: Request, view: Any) -> bool:
        idents = self.idents(request, view)
        if not idents:
            return True
        rate = str(getattr(settings, self.setting))
        limit, period = parse_rate(rate)
        now = clock()
        window = int(now // period)
        self._wait = period - (now % period)
        for ident, tenant_id in idents:
            key = cache.make_key(f"throttle:{self.scope}:{ident}:{period}:{window}")
            try:
                count = hit(key, period)
            except redis.RedisError as exc:
                # Fail open: Redis down must not take the API down (/readyz reports it).
                logger.warning("rate limit %s not checked: %s", self.scope, exc)
                return True
            if count > limit:
                from orchestrator.security.throttling import throttled

                throttled(
                    request,
                    scope=self.scope,
                    ident=ident,
                    rate=rate,
                    tenant_id=tenant_id,
                    window=f"{period}:{window}",
                    period=period,
                )
                return False
        return True

    def wait(self) -> float:
        return float(max(1, math.ceil(self._wait)))


def _user_ident(request: Request) -> str:
    user = request.user
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{client_address(request.META, settings.BOS_TRUSTED_PROXIES) or 'unknown'}"


class UserRateThrottle(WindowThrottle):
    scope = "user"
    setting = "BOS_API_RATE_USER"

    def idents(self, request: Request, view: Any) -> list[tuple[str, int | None]]:
        return [(_user_ident(request), None)]


class WriteRateThrottle(WindowThrottle):
    scope = "write"
    setting = "BOS_API_RATE_WRITE"

    def idents(self, request: Request, view: Any) -> list[tuple[str, int | None]]:
        if request.method not in WRITE_METHODS:
            return []
        return [(_user_ident(request), None)]


def acting_tenants(request: Request, view: Any) -> list[int]:
    """The tenants a request acts on, among those the caller may act on (module docstring)."""
    user = request.user
    if user is None or not user.is_authenticated:
        return []
    mine = set(access.roles(user))
    superuser = access.is_superuser(user)
    named: int | None = None
    batch_id = getattr(view, "kwargs", {}).get("pk") if getattr(view, "basename", "") == "batch" else None
    if batch_id is not None:
        try:
            named = (
                Batch.objects.filter(pk=uuid.UUID(str(batch_id))).values_list("tenant_id", flat=True).first()
            )
        except ValueError:  # not a UUID: the view answers 404
            named = None
    elif request.method == "POST":
        data = request.data
        slug = data.get("tenant") if isinstance(data, dict) else None
        if isinstance(slug, str) and slug:
            named = Tenant.objects.filter(slug=slug).values_list("id", flat=True).first()
    if named is not None and (superuser or named in mine):
        return [named]
    return sorted(mine)


class TenantRateThrottle(WindowThrottle):
    scope = "tenant"
    setting = "BOS_API_RATE_TENANT"

    def idents(self, request: Request, view: Any) -> list[tuple[str, int | None]]:
        return [(f"tenant:{t}", t) for t in acting_tenants(request, view)]
