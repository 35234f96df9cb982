"""Pub/sub invalidation of each process's runtime-configuration cache.

A change is published on the Redis channel `bos:config:changed` after it commits
(`store`). Every process that reads the configuration runs one daemon thread subscribed
to it (started on its first read, again after a fork); a message makes the next read
look at Redis at once instead of waiting for its `BOS_CONFIG_RELOAD_SECONDS` check. So
a change is seen in milliseconds while Redis is up, and within the reload time when a
message is lost (pub/sub delivers at most once), the subscription is broken, or Redis
is down — then the polling in `reload` is the guarantee, as before.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import redis
from django.conf import settings

log = logging.getLogger(__name__)

CHANNEL = "bos:config:changed"
MAX_BACKOFF = 30.0


class _Listener:
    def __init__(self) -> None:
        self.pid: int | None = None
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.messages = 0


_listener = _Listener()


def ensure_listening(on_change: Callable[[], None]) -> None:
    """Start this process's subscriber thread unless it runs (cheap: a pid check)."""
    if _listener.pid == os.getpid() and _listener.thread is not None and _listener.thread.is_alive():
        return
    with _listener.lock:
        if _listener.pid == os.getpid() and _listener.thread is not None and _listener.thread.is_alive():
            return
        _listener.pid = os.getpid()
        _listener.thread = threading.Thread(
            target=_listen, args=(on_change,), name="bos-config-invalidation", daemon=True
        )
        _listener.thread.start()


def _listen(on_change: Callable[[], None]) -> None:
    backoff = 1.0
    while True:
        try:
            connection = redis.Redis.from_url(
                settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=30
            )
            pubsub = connection.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            pubsub.subscribe(CHANNEL)
            # Subscribed: anything changed while we were away is caught by the next read.
            on_change()
            backoff = 1.0
            for _message in pubsub.listen():
                _listener.messages += 1
                on_change()
        except redis.RedisError as exc:
            log.debug(
                "config invalidation: Redis unreachable (%s); polling covers it; retrying in %.0f s",
                exc,
                backoff,
            )
        except Exception:  # the thread must outlive anything; polling still works meanwhile
            log.exception("config invalidation: subscriber failed; retrying in %.0f s", backoff)
        time.sleep(backoff)
        backoff = min(MAX_BACKOFF, backoff * 2)


def announce(version: int, client: redis.Redis) -> None:
    """Tell every subscribed process that `version` is current (after it is in Redis)."""
    client.publish(CHANNEL, str(version))
