"""The Redis connection that the GET cache and the health figures share.

Short socket timeouts: both are best effort, and a slow Redis must not make every
service call slow. Callers treat a Redis error as "no cache" / "not counted".
"""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings

PREFIX = "bos:svc"


@lru_cache(maxsize=8)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


def client() -> redis.Redis:
    return _client(settings.REDIS_URL)
