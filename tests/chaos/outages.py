"""Taking the services the tests use down and up again, whichever they are: embedded
ones (devservices) or this machine's own, started the way this machine kind starts them."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import redis
from django.conf import settings
from django.db import connections

from bos_project import devservices

# How this machine kind starts its Redis (see the environment notes), to restart it.
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


def _embedded(variable: str, url: str, standard_port: int) -> bool:
    return devservices.read_services_env().get(variable) == url and urlparse(url).port != standard_port


def _wait(check: Callable[[], object], up: bool, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            check()
            if up:
                return
        except Exception:  # noqa: BLE001 - any failure to connect means "down"
            if not up:
                return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not come {'up' if up else 'down'} within {timeout}s")


def _local(url: str, port: int) -> bool:
    parsed = urlparse(url)
    return parsed.hostname in {"127.0.0.1", "localhost"} and (parsed.port or port) == port


def restart_redis(down_for: float) -> None:
    """Stop Redis (losing everything in it: it saves nothing), wait, start it again."""
    ping = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.5).ping
    if _embedded("REDIS_URL", settings.REDIS_URL, 6379):
        devservices.stop_embedded(["redis"])
        _wait(ping, up=False, what="redis")
        time.sleep(down_for)
        devservices.start_embedded("redis")
    else:
        assert _local(settings.REDIS_URL, 6379), (
            f"don't know how to restart the Redis at {settings.REDIS_URL}"
        )
        assert shutil.which("redis-server"), "redis-server is not on PATH"
        redis.Redis.from_url(settings.REDIS_URL).shutdown(nosave=True)
        _wait(ping, up=False, what="redis")
        time.sleep(down_for)
        subprocess.run(MACHINE_REDIS, check=True)
    _wait(ping, up=True, what="redis")


def cut_postgres(down_for: float) -> None:
    """Stop PostgreSQL (fast shutdown: connections are cut), wait, start it again."""
    url = database_url = settings.DATABASES["default"]
    dsn = f"host={url['HOST']} port={url['PORT']} dbname=postgres user={url['USER']} connect_timeout=1"

    def probe() -> None:
        psycopg.connect(dsn).close()

    raw_url = devservices.read_services_env().get("DATABASE_URL", "")
    if (
        raw_url
        and _embedded("DATABASE_URL", raw_url, 5432)
        and str(urlparse(raw_url).port) == str(database_url["PORT"])
    ):
        devservices.stop_embedded(["postgres"])
        _wait(probe, up=False, what="postgres")
        time.sleep(down_for)
        devservices.start_embedded("postgres")
    else:
        assert str(url["PORT"] or 5432) == "5432" and url["HOST"] in {"127.0.0.1", "localhost"}, (
            f"don't know how to restart the PostgreSQL at {url['HOST']}:{url['PORT']}"
        )
        (version,) = [p.name for p in Path("/etc/postgresql").iterdir()]
        ctl = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]
        subprocess.run([*ctl, "stop", "-m", "fast"], check=True)
        _wait(probe, up=False, what="postgres")
        time.sleep(down_for)
        subprocess.run([*ctl, "start"], check=True)
    _wait(probe, up=True, what="postgres")
    connections.close_all()  # this process's connections died with the server
