"""The client-side cache of idempotent GETs, in Redis (shared by every process).

Only a 2xx answer to a GET is stored, for the service's `cache_ttl` seconds (0: never).
The key is the method, the URL and the query parameters sorted, hashed; request headers
are not part of it, so a service whose answers differ per caller must not be cached (or
pass `cache=False`). What is kept: status, `Content-Type` and the body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx
import redis

from orchestrator.service_clients.store import PREFIX, client

logger = logging.getLogger(__name__)
KEPT_HEADERS = ("content-type",)


def cache_key(service: str, method: str, url: str, params: Mapping[str, Any] | None) -> str:
    """Stable over the order of parameters: ?a=1&b=2 and ?b=2&a=1 are one entry."""
    merged = httpx.URL(url)
    if params:
        merged = merged.copy_merge_params(params)
    query = sorted(merged.params.multi_items())
    base = str(merged.copy_with(query=None))
    digest = hashlib.sha256(json.dumps([method.upper(), base, query]).encode()).hexdigest()
    return f"{PREFIX}:cache:{service}:{digest}"


def get(key: str, request: httpx.Request) -> httpx.Response | None:
    try:
        raw = client().get(key)
    except redis.RedisError as exc:
        logger.warning("service cache unreachable, calling the service: %s", exc)
        return None
    if raw is None:
        return None
    stored = json.loads(raw)
    return httpx.Response(
        stored["status"],
        headers=stored["headers"],
        content=base64.b64decode(stored["body"]),
        request=request,
    )


def put(key: str, response: httpx.Response, ttl: int) -> None:
    if ttl <= 0 or not response.is_success:
        return
    stored = {
        "status": response.status_code,
        "headers": {h: response.headers[h] for h in KEPT_HEADERS if h in response.headers},
        "body": base64.b64encode(response.content).decode(),
    }
    try:
        client().set(key, json.dumps(stored), ex=ttl)
    except redis.RedisError as exc:
        logger.warning("service cache unreachable, answer not cached: %s", exc)


def clear(service: str) -> int:
    """Forget every cached answer of `service` (tests, or after a deploy of it)."""
    keys = list(client().scan_iter(f"{PREFIX}:cache:{service}:*", count=500))
    return int(client().delete(*keys)) if keys else 0
