"""Restarting the Redis the tests use, whichever it is: an embedded one (devservices)
or this machine's own on 127.0.0.1:6379, which keeps nothing on disk."""

from __future__ import annotations

import shutil
import subprocess
import time
from urllib.parse import urlparse

import redis
from django.conf import settings

from bos_project import devservices

# How this machine kind starts its Redis (see the environment notes); used to restart it.
MACHINE_REDIS = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]


def _is_embedded() -> bool:
    url = urlparse(settings.REDIS_URL)
    return devservices.read_services_env().get("REDIS_URL") == settings.REDIS_URL and url.port != 6379


def _wait(up: bool, timeout: float = 30) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.ping()
            if up:
                return
        except redis.exceptions.ConnectionError:
            if not up:
                return
        time.sleep(0.1)
    raise AssertionError(f"redis did not come {'up' if up else 'down'} within {timeout}s")


def restart_redis(down_for: float) -> None:
    """Stop Redis (losing everything in it: it saves nothing), wait, start it again."""
    if _is_embedded():
        devservices.stop_embedded(["redis"])
        _wait(up=False)
        time.sleep(down_for)
        devservices.start_embedded("redis")
    else:
        url = urlparse(settings.REDIS_URL)
        if (url.hostname, url.port or 6379) not in {("127.0.0.1", 6379), ("localhost", 6379)}:
            raise AssertionError(f"don't know how to restart the Redis at {settings.REDIS_URL}")
        assert shutil.which("redis-server"), "redis-server is not on PATH"
        redis.Redis.from_url(settings.REDIS_URL).shutdown(nosave=True)
        _wait(up=False)
        time.sleep(down_for)
        subprocess.run(MACHINE_REDIS, check=True)
    _wait(up=True)
