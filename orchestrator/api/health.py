"""`/healthz` (the process is alive) and `/readyz` (database, Redis, broker, Kafka reachable,
the request consumers ready).

Both need no login: load balancers and orchestrators probe them. `/readyz` shows anonymous
callers only whether each check passed (`{"ready", "checks": {name: {"ok"}}}`): its detail
(error messages naming hosts and URLs, consumer members, downstream services, the runtime
configuration's version) goes to staff users logged in to the admin and to callers holding
the metrics token (`Authorization: Bearer <BOS_METRICS_TOKEN>`, when it is set).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from kombu import Connection

from orchestrator import access
from orchestrator.config.reload import status as config_status
from orchestrator.kafka.health import consumer_snapshots
from orchestrator.security import bearer
from orchestrator.service_clients.health import services_detail


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()


def _broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1)


def _kafka() -> None:
    errors = []
    for server in settings.KAFKA_BOOTSTRAP_SERVERS:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except OSError as exc:
            errors.append(f"{server}: {exc}")
    raise ConnectionError("; ".join(errors))


def _consumers() -> dict[str, object]:
    """The request consumers of this group, as each reports itself (orchestrator.kafka.health).

    Not ready while none is ready, when BOS_READYZ_REQUIRE_CONSUMER is on (for the
    consumer's own deployment); otherwise shown, not judged.
    """
    try:
        members = [
            {k: c.get(k) for k in ("member", "status", "ready", "assigned", "last_poll_at", "error")}
            for c in consumer_snapshots()
            if c.get("group") == settings.BOS_CONSUMER_GROUP
        ]
    except Exception as exc:  # noqa: BLE001 - Redis down is reported by its own check
        return {"ok": not settings.BOS_READYZ_REQUIRE_CONSUMER, "error": f"{type(exc).__name__}: {exc}"[:300]}
    ready = sum(1 for m in members if m["ready"])
    ok = ready > 0 or not settings.BOS_READYZ_REQUIRE_CONSUMER
    return {"ok": ok, "ready": ready, "members": sorted(members, key=lambda m: str(m["member"]))}


CHECKS: dict[str, Callable[[], None]] = {
    "database": _database,
    "redis": _redis,
    "broker": _broker,
    "kafka": _kafka,
}


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with the reason
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        else:
            results[name] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    results["consumers"] = _consumers()
    ready = all(r["ok"] for r in results.values())
    status = 200 if ready else 503
    if not may_see_detail(request):
        return JsonResponse(
            {"ready": ready, "checks": {k: {"ok": r["ok"]} for k, r in results.items()}}, status=status
        )
    # Downstream services are shown, never judged: one in trouble slows the phases that
    # call it (retries, breaker), not BOS, so it must not take BOS out of rotation.
    services = services_detail()
    body = {"ready": ready, "checks": results, "services": services, "config": config_status()}
    return JsonResponse(body, status=status)


def may_see_detail(request: HttpRequest) -> bool:
    """The platform's state (services, configuration version): a superuser's, or a scraper's
    holding the metrics token. Staff alone is not enough: every tenant member who logs in
    to the admin is staff."""
    user = getattr(request, "user", None)
    if user is not None and access.is_superuser(user):
        return True
    token = settings.BOS_METRICS_TOKEN
    return bool(token) and bearer.allowed(request.META.get("HTTP_AUTHORIZATION"), token)
