"""What a consumer process reports about itself: its start-up steps and readiness.

Three views of the same snapshot, for three kinds of probe:
- a JSON file (BOS_CONSUMER_HEALTH_FILE), rewritten on every change and at most once a
  second while polling: for an exec probe or an operator with `cat`;
- a Redis key per consumer process with a short TTL: what `/readyz` of the web service
  reads, on any machine (a consumer that died simply disappears);
- optionally an HTTP endpoint (BOS_CONSUMER_HEALTH_PORT): `/readyz` answers 200 only
  when ready, `/healthz` 200 while the loop is alive.

The consumer is ready only after every start-up step passed and it joined its group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
from django.conf import settings

logger = logging.getLogger(__name__)
REDIS_PREFIX = "bos:consumers:"
# A consumer's Redis entry outlives a missed beat or two, not a dead process.
REDIS_TTL_SECONDS = 30
BEAT_SECONDS = 1.0
# The loop counts as stuck when it has not polled for this long (liveness endpoint).
STUCK_AFTER_SECONDS = 120.0


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class ConsumerHealth:
    def __init__(
        self,
        *,
        group: str,
        topic: str,
        path: str | None = None,
        port: int | None = None,
    ) -> None:
        self.path = Path(path if path is not None else settings.BOS_CONSUMER_HEALTH_FILE)
        self.member = f"{socket.gethostname()}:{os.getpid()}"
        self.state: dict[str, Any] = {
            "member": self.member,
            "group": group,
            "topic": topic,
            "status": "starting",
            "ready": False,
            "steps": {},
            "assigned": [],
            "started_at": _now(),
            "updated_at": _now(),
            "last_poll_at": None,
        }
        self._last_write = 0.0
        self._last_poll = time.monotonic()
        self._redis: redis.Redis | None = None
        self._redis_warned = False
        self._server: ThreadingHTTPServer | None = None
        port = settings.BOS_CONSUMER_HEALTH_PORT if port is None else port
        if port:
            self._serve(port)
        self._write()

    # -- what the consumer tells -------------------------------------------------
    def step(self, name: str, status: str, detail: str = "") -> None:
        self.state["steps"][name] = {"status": status, "detail": detail, "at": _now()}
        if status == "failed":
            self.state["status"] = "failed"
        self._write()

    def assigned(self, partitions: list[str]) -> None:
        self.state["assigned"] = sorted(partitions)
        self._write()

    def ready(self) -> None:
        self.state.update(status="ready", ready=True)
        self._write()

    def failed(self, error: str) -> None:
        self.state.update(status="failed", ready=False, error=error)
        self._write()

    def polled(self) -> None:
        """Called after every poll; rewrites the snapshot at most once a second."""
        self._last_poll = time.monotonic()
        if self._last_poll - self._last_write >= BEAT_SECONDS:
            self.state["last_poll_at"] = _now()
            self._write()

    def stopped(self) -> None:
        if self.state["status"] != "failed":  # a failed start stays visible as failed
            self.state["status"] = "stopped"
        self.state["ready"] = False
        self._write()
        with contextlib.suppress(redis.RedisError):
            self._client().delete(REDIS_PREFIX + self.member)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def alive(self) -> bool:
        return self.state["status"] != "ready" or time.monotonic() - self._last_poll < STUCK_AFTER_SECONDS

    # -- where it goes -----------------------------------------------------------
    def _write(self) -> None:
        self._last_write = time.monotonic()
        self.state["updated_at"] = _now()
        body = json.dumps(self.state, indent=2)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(body)
            tmp.replace(self.path)  # atomic: a probe never reads half a file
        except OSError as exc:
            logger.warning("cannot write consumer health file %s: %s", self.path, exc)
        try:
            self._client().set(REDIS_PREFIX + self.member, body, ex=REDIS_TTL_SECONDS)
            self._redis_warned = False
        except redis.RedisError as exc:
            if not self._redis_warned:  # once per outage: the file still tells the truth
                logger.warning("cannot report consumer health to Redis: %s", exc)
                self._redis_warned = True

    def _client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        return self._redis

    def _serve(self, port: int) -> None:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path.startswith("/readyz"):
                    ok = bool(health.state["ready"])
                elif self.path.startswith("/healthz"):
                    ok = health.alive
                else:
                    self.send_error(404)
                    return
                body = json.dumps(health.state).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # probes every few seconds would drown the log

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, name="consumer-health", daemon=True).start()
        logger.info("consumer health endpoint on http://127.0.0.1:%d/readyz", port)


def consumer_snapshots() -> Iterator[dict[str, Any]]:
    """Every live consumer's last snapshot, as reported to Redis (for /readyz)."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    for key in client.scan_iter(match=REDIS_PREFIX + "*", count=100):
        raw = client.get(key)
        if raw:
            yield json.loads(raw)
