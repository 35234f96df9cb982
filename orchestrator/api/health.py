"""`/healthz` (the process is alive) and `/readyz` (database, Redis, broker, Kafka reachable)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from kombu import Connection


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
    ready = all(r["ok"] for r in results.values())
    return JsonResponse({"ready": ready, "checks": results}, status=200 if ready else 503)
