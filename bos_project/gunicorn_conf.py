"""Gunicorn's settings (`gunicorn -c python:bos_project.gunicorn_conf`): its error and access
logs go through the same structlog pipeline as Django's (BOS_LOG_FORMAT), and each access
line carries the request's `correlation_id` (from the `X-Correlation-ID` response header).
Metrics: the master registers in the machine's metrics folder (`on_starting`), so the folder
outlives its workers (recycled by `--max-requests`, restarted after a crash) instead of
being taken for an earlier run's and wiped; a worker that exits is forgotten at once
(`child_exit`)."""

from __future__ import annotations

from typing import Any

from bos_project.settings.environment import bos_env, env, metrics_dir
from orchestrator.observability.logging import log_format, logging_config

_config = logging_config(
    fmt=log_format(bos_env(), env.str("BOS_LOG_FORMAT", default="")),
    level=str(env.str("BOS_LOG_LEVEL", default="INFO")).upper(),
)
# Gunicorn's own loggers hand their records to the root handler, as every other logger does.
_config["loggers"].update(
    {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
    }
)
logconfig_dict = _config
# The response header is named so that AccessLogCorrelation can make it the line's field.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms %({x-correlation-id}o)s'


def on_starting(server: Any) -> None:
    """The master joins the metrics folder; its workers, forked from it, register themselves."""
    from orchestrator.observability import multiprocess

    multiprocess.activate(metrics_dir())


def child_exit(server: Any, worker: Any) -> None:
    """A gunicorn worker ended: its live gauges go, its totals move to the archive
    (orchestrator/observability/multiprocess.py), without waiting for the next scrape."""
    from orchestrator.observability import multiprocess

    multiprocess.reap(metrics_dir(), [worker.pid])


# Traces (OTEL_EXPORTER_OTLP_ENDPOINT set) are set up when bos_project/wsgi.py is imported,
# which each worker does after the fork as long as the app is not preloaded: the span
# processor's export thread must belong to the process that records the spans (a thread of
# the arbiter would not exist in its forked workers).
preload_app = False


def worker_exit(server: Any, worker: Any) -> None:
    """A worker stopping exports the spans it still holds."""
    from orchestrator.observability import tracing

    tracing.shutdown()
