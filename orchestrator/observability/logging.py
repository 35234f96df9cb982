"""Structured logs: one structlog pipeline for BOS's own loggers, stdlib and Celery.

`BOS_LOG_FORMAT` picks the renderer: `json` (one object per line, for machines) or
`console` (aligned key=value, for people); CONTRACT §1: `console` in development, `json`
otherwise. Every line gets the bound correlation context (orchestrator/observability/
context.py), its level, logger, process id and an ISO UTC timestamp. stdlib records (Django,
Celery, kafka-python) go through the same processors as structlog's, by
`structlog.stdlib.ProcessorFormatter` on the one root handler.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from django.core.exceptions import ImproperlyConfigured
from structlog.typing import EventDict, Processor, WrappedLogger

from orchestrator import masking

FORMATS = ("json", "console")
# Celery's loggers that write a line per task sent, received and finished.
CELERY_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.beat")


def log_format(environment: str, value: str | None) -> str:
    """The format for `BOS_LOG_FORMAT=value` in `BOS_ENV=environment`."""
    if not value:
        return "console" if environment == "development" else "json"
    chosen = value.strip().lower()
    if chosen not in FORMATS:
        raise ImproperlyConfigured(f"BOS_LOG_FORMAT must be one of {', '.join(FORMATS)}; got {value!r}")
    return chosen


def add_process(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """The process id: lines of several processes in one place stay apart."""
    event_dict.setdefault("pid", os.getpid())
    return event_dict


# Fields every line has, never sensitive: not scanned.
_PLAIN_FIELDS = frozenset({"timestamp", "level", "logger", "pid", "correlation_id", "batch_id", "tenant"})


def mask_event(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Every value of the line masked (orchestrator/masking.py): e-mails, card numbers and
    credentials in texts (the message and a formatted traceback included), and the values of
    sensitive field names. A text without a hint of any pattern is not scanned."""
    masker = masking.configured()
    for key, value in event_dict.items():
        if key in _PLAIN_FIELDS or value is None:
            continue
        if masker.sensitive_field(key):
            event_dict[key] = masking.MASK
        elif isinstance(value, str):
            event_dict[key] = masker.mask_text(value)
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = masker.mask_value(value)
    return event_dict


def shared_processors() -> list[Processor]:
    """What every line gets, whether it came from structlog or from stdlib logging."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_process,
    ]


def renderer_processors(fmt: str) -> list[Processor]:
    if fmt == "json":
        return [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_event,
            structlog.processors.EventRenamer("message"),
            structlog.processors.JSONRenderer(),
        ]
    return [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        # The traceback as text, so it is masked like the rest of the line.
        structlog.processors.format_exc_info,
        mask_event,
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
    ]


def configure_structlog() -> None:
    """structlog's own loggers hand their events to stdlib, whose handler renders them."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class HousekeepingAtDebug(logging.Filter):
    """Celery's per-task lines about beat's housekeeping tasks, demoted to DEBUG.

    Beat sends them every few seconds; at INFO they would drown the lines about batches.
    A demoted line is still written when its logger is set to DEBUG.
    """

    def __init__(self, tasks: Iterable[str] = ()) -> None:
        super().__init__()
        self.tasks = tuple(tasks)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.name not in CELERY_TASK_LOGGERS or not self.tasks:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        if not any(task in message for task in self.tasks):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class AccessLogCorrelation(logging.Filter):
    """Gunicorn's access line gets the request's correlation id as a field of its own,
    from the response's `X-Correlation-ID` (the middleware's context has ended by then)."""

    ATOM = "{x-correlation-id}o"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            cid = record.args.get(self.ATOM)
            if cid and cid != "-":
                record.correlation_id = cid
        return True


def logging_config(*, fmt: str, level: str, housekeeping_tasks: Iterable[str] = ()) -> dict[str, Any]:
    """Django's LOGGING: one root handler rendering every record through structlog."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": renderer_processors(fmt),
                "foreign_pre_chain": shared_processors(),
            },
        },
        "filters": {
            "housekeeping": {"()": HousekeepingAtDebug, "tasks": tuple(housekeeping_tasks)},
            "access": {"()": AccessLogCorrelation},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "structlog",
                "filters": ["housekeeping", "access"],
            },
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "kafka": {"level": "WARNING"},
            # kafka-python 3 warns about its own event loop under load; not actionable here.
            "kafka.net": {"level": "ERROR"},
            "django.db.backends": {"level": "INFO"},
            # httpx logs every request's URL unmasked; service clients log their own, masked.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }
