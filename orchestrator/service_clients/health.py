"""Per-service health, kept in Redis so every process sees the same figures.

Handlers call services from Celery workers; `/metrics` and `/readyz` answer from the web
process. So each request attempt is counted in Redis, in one round trip: totals since
the start (monotonic counters and a latency histogram, for Prometheus) and the same in
10-second slots, of which the last `BOS_SERVICE_HEALTH_WINDOW_SECONDS` make the rolling
window behind `success_ratio` and the `/readyz` detail.

Outcomes: `ok` (2xx/3xx), `client_error` (another 4xx: the service is fine, the request
was not), `server_error` (5xx, 408, 425), `rate_limited` (429), `timeout`, `unreachable`
— each an attempt that reached for the network — and `cache_hit` and `circuit_open`,
answered without one (counted in totals only). The success ratio is the share of
attempts in the window that the service answered properly: `ok` and `client_error`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import redis
from django.conf import settings

from orchestrator.config import runtime
from orchestrator.service_clients.config import configured_services
from orchestrator.service_clients.store import PREFIX, client

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ANSWERED = ("ok", "client_error")
FAILED = ("server_error", "rate_limited", "timeout", "unreachable")
OUTCOMES = (*ANSWERED, *FAILED, "cache_hit", "circuit_open")
SLOT_SECONDS = 10
# A service not configured (a client made with a name of its own) is listed for this long
# after its last call; its counters are dropped after a week without calls.
SEEN_FOR_SECONDS = 24 * 3600
TOTALS_TTL_SECONDS = 7 * 24 * 3600


def _bucket(seconds: float) -> int:
    return next((i for i, bound in enumerate(LATENCY_BUCKETS) if seconds <= bound), len(LATENCY_BUCKETS))


def _slot_key(service: str, slot: int) -> str:
    return f"{PREFIX}:win:{service}:{slot}"


def record(service: str, outcome: str, seconds: float | None = None, *, error: str = "") -> None:
    """Count one outcome (`seconds`: the attempt's latency; None when nothing was sent)."""
    window = settings.BOS_SERVICE_HEALTH_WINDOW_SECONDS
    totals = f"{PREFIX}:totals:{service}"
    now = time.time()
    slot = _slot_key(service, int(now // SLOT_SECONDS))
    try:
        pipe = client().pipeline(transaction=False)
        pipe.zadd(f"{PREFIX}:known", {service: now})
        pipe.zremrangebyscore(f"{PREFIX}:known", 0, now - SEEN_FOR_SECONDS)
        pipe.hincrby(totals, f"outcome:{outcome}", 1)
        pipe.expire(totals, TOTALS_TTL_SECONDS)
        if seconds is not None:
            bucket = f"b{_bucket(seconds)}"
            for key in (totals, slot):
                pipe.hincrby(key, "count", 1)
                pipe.hincrbyfloat(key, "sum", seconds)
                pipe.hincrby(key, bucket, 1)
            pipe.hincrby(slot, "failed" if outcome in FAILED else "answered", 1)
            pipe.expire(slot, int(window) + 2 * SLOT_SECONDS)
        if error:
            pipe.hset(totals, mapping={"last_error": error[:300], "last_error_at": now})
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("service health not recorded (%s %s): %s", service, outcome, exc)


Hash = dict[bytes, bytes]


def _int(values: Hash, field: str) -> int:
    return int(values.get(field.encode(), 0))


def _quantile(buckets: list[int], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile (None past the last bound)."""
    total = sum(buckets)
    if not total:
        return None
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= q * total:
            return LATENCY_BUCKETS[i] if i < len(LATENCY_BUCKETS) else None
    return None


def totals(service: str) -> dict[str, Any]:
    """Counters since the start: per outcome, and the latency histogram (per bucket, not cumulative)."""
    values = cast(Hash, client().hgetall(f"{PREFIX}:totals:{service}"))
    return {
        "outcomes": {o: _int(values, f"outcome:{o}") for o in OUTCOMES},
        "buckets": [_int(values, f"b{i}") for i in range(len(LATENCY_BUCKETS) + 1)],
        "count": _int(values, "count"),
        "sum": float(values.get(b"sum", 0)),
        "last_error": values.get(b"last_error", b"").decode(),
        "last_error_at": float(values[b"last_error_at"]) if b"last_error_at" in values else None,
    }


def window(service: str) -> dict[str, Any]:
    """Attempts, failures, success ratio and latency over the rolling window."""
    seconds = settings.BOS_SERVICE_HEALTH_WINDOW_SECONDS
    now = int(time.time() // SLOT_SECONDS)
    pipe = client().pipeline(transaction=False)
    for slot in range(now - int(seconds // SLOT_SECONDS), now + 1):
        pipe.hgetall(_slot_key(service, slot))
    slots = cast(list[Hash], pipe.execute())
    attempts = sum(_int(s, "count") for s in slots)
    failed = sum(_int(s, "failed") for s in slots)
    latency = sum(float(s.get(b"sum", 0)) for s in slots)
    buckets = [sum(_int(s, f"b{i}") for s in slots) for i in range(len(LATENCY_BUCKETS) + 1)]
    p95 = _quantile(buckets, 0.95)
    return {
        "window_seconds": seconds,
        "attempts": attempts,
        "failed": failed,
        "success_ratio": round((attempts - failed) / attempts, 4) if attempts else None,
        "latency_ms_mean": round(latency / attempts * 1000, 1) if attempts else None,
        "latency_ms_p95_at_most": round(p95 * 1000, 1) if p95 is not None else None,
    }


def slot_series(service: str, *, slots: int, now: float | None = None) -> list[tuple[int, int]]:
    """(attempts, failed) of the last `slots` 10-second slots, oldest first, the one
    holding `now` last: the success-ratio trend behind the breaker-trip prediction."""
    latest = int((time.time() if now is None else now) // SLOT_SECONDS)
    pipe = client().pipeline(transaction=False)
    for slot in range(latest - slots + 1, latest + 1):
        pipe.hmget(_slot_key(service, slot), ["count", "failed"])
    return [(int(n or 0), int(f or 0)) for n, f in cast(list[list[bytes | None]], pipe.execute())]


def known_services() -> list[str]:
    """Configured services and any other that calls were counted for lately."""
    try:
        since = time.time() - SEEN_FOR_SECONDS
        names = cast(list[bytes], client().zrangebyscore(f"{PREFIX}:known", since, "+inf"))
        seen = {name.decode() for name in names}
    except redis.RedisError:
        seen = set()
    return sorted(seen | set(configured_services()))


def service_status(service: str) -> dict[str, Any]:
    """One service's health for `/readyz`: `ok`, `idle` (no calls in the window),
    `degraded` (success ratio under `BOS_SERVICE_DEGRADED_BELOW`, or the breaker half-open)
    or `down` (breaker open)."""
    from orchestrator.breakers import breaker

    stats = window(service)
    breaker_state = breaker(service).current_state
    ratio = stats["success_ratio"]
    if breaker_state == "open":
        status = "down"
    elif breaker_state == "half-open" or (ratio is not None and ratio < runtime("service_degraded_below")):
        status = "degraded"
    else:
        status = "idle" if ratio is None else "ok"
    last = totals(service)
    detail: dict[str, Any] = {"status": status, "breaker": breaker_state, **stats}
    if last["last_error"]:
        detail["last_error"] = last["last_error"]
        detail["last_error_seconds_ago"] = round(time.time() - (last["last_error_at"] or 0), 1)
    return detail


def services_detail() -> dict[str, Any]:
    """Every service's health, for the `/readyz` detail. It never raises and never
    makes BOS unready: a downstream service in trouble degrades the phases that call it,
    not BOS."""
    detail: dict[str, Any] = {}
    for service in known_services():
        try:
            detail[service] = service_status(service)
        except Exception as exc:  # noqa: BLE001 - a detail must not break /readyz
            detail[service] = {"status": "unknown", "error": f"{type(exc).__name__}: {exc}"[:300]}
    return detail
