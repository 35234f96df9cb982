"""The Redis of Django's cache (`CACHES["default"]`), for counters and sets that need Redis
commands the cache API lacks (an atomic count with expiry, a set per token)."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def client() -> redis.Redis:
    return _client(str(settings.CACHES["default"]["LOCATION"]))
