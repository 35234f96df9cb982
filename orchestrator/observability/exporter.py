"""The machine's metrics over HTTP for a machine that runs no web service (`BOS_METRICS_PORT`).

A worker (or consumer, publisher, beat) machine has no `/metrics` of its own; with
`BOS_METRICS_PORT` set, the first BOS process there to bind the port serves the sum over
all BOS processes of the machine (the same multiprocess folder the web reads), without
the database-derived families, which the web's `/metrics` already gives. Others find the
port taken and leave it to that one. With `BOS_METRICS_TOKEN` set it asks for the same
bearer token as the web's `/metrics` (orchestrator/security/bearer.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.conf import settings
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from orchestrator.observability import multiprocess
from orchestrator.security import bearer

logger = logging.getLogger(__name__)


def machine_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    path = multiprocess.active_path()
    if path is not None:
        registry.register(multiprocess.LockedMultiProcessCollector(path))
    return registry


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return


def guarded(app: Callable[..., Iterable[bytes]], token: str | None) -> Callable[..., Iterable[bytes]]:
    """`app`, answering a 401 to a request without the metrics bearer token (when one is set)."""

    def guarded_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if bearer.allowed(environ.get("HTTP_AUTHORIZATION"), token):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [("Content-Type", "application/json"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
        )
        return [bearer.UNAUTHORIZED]

    return guarded_app


def serve_machine_metrics(address: str, port: int) -> bool:
    """Serve the machine's metrics on address:port in a thread; False if the port is taken."""
    app = guarded(make_wsgi_app(machine_registry()), getattr(settings, "BOS_METRICS_TOKEN", None))
    try:
        server = make_server(address, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        logger.info("metrics port %s:%s not served by this process: %s", address, port, exc)
        return False
    threading.Thread(target=server.serve_forever, name="bos-metrics-exporter", daemon=True).start()
    logger.info("serving this machine's metrics on http://%s:%s/metrics", address, port)
    return True
