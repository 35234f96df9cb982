"""The machine's metrics over HTTP for a machine that runs no web service (`BOS_METRICS_PORT`).

A worker (or consumer, publisher, beat) machine has no `/metrics` of its own; with
`BOS_METRICS_PORT` set, the first BOS process there to bind the port serves the sum over
all BOS processes of the machine (the same multiprocess folder the web reads), without
the database-derived families, which the web's `/metrics` already gives. Others find the
port taken and leave it to that one.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

from orchestrator.observability import multiprocess

logger = logging.getLogger(__name__)


def machine_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    path = multiprocess.active_path()
    if path is not None:
        registry.register(multiprocess.LockedMultiProcessCollector(path))
    return registry


def serve_machine_metrics(address: str, port: int) -> bool:
    """Serve the machine's metrics on address:port in a thread; False if the port is taken."""
    try:
        start_http_server(port, addr=address, registry=machine_registry())
    except OSError as exc:
        logger.info("metrics port %s:%s not served by this process: %s", address, port, exc)
        return False
    logger.info("serving this machine's metrics on http://%s:%s/metrics", address, port)
    return True
