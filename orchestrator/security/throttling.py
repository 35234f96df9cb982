"""What happens when a rate limit refuses a request: a metric, and an audit record that is
itself rate-limited.

Every refusal counts in `bos_security_events_total{kind="throttled.<scope>"}`. The audit record `api.throttled`
(outcome `denied`) is written once per throttle scope, caller and window: the first refusal
of a window is recorded (with the rate, method and path), the rest of that window's refusals
only counted. `cache.add` (Redis `SET NX`) decides which request is first, across processes.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import cache

from orchestrator import audit
from orchestrator.observability import metrics

logger = logging.getLogger(__name__)


def throttled(
    request: Any, *, scope: str, ident: str, rate: str, tenant_id: int | None, window: str, period: int
) -> None:
    metrics.security_event(f"throttled.{scope}")
    try:
        first = cache.add(f"throttle-audit:{scope}:{ident}:{window}", 1, timeout=period + 5)
    except Exception:  # noqa: BLE001 - Redis trouble: record rather than lose the refusal
        logger.warning("throttle audit de-duplication unavailable", exc_info=True)
        first = True
    if not first:
        return
    audit.record(
        "api.throttled",
        outcome=audit.Outcome.DENIED,
        object_type="rate_limit",
        object_id=scope,
        tenant=tenant_id,
        detail={
            "scope": scope,
            "rate": rate,
            "method": request.method,
            "path": request.path[:500],
            "note": 'first refusal of this window; later ones are counted in bos_security_events_total{kind="throttled.<scope>"}',
        },
    )
