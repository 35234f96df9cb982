"""Logging: structlog over stdlib, rendered as `BOS_LOG_FORMAT` says (json or console).

Celery uses this LOGGING too (bos_project/celery.py answers its `setup_logging` signal).
"""

from __future__ import annotations

from bos_project.settings.celery_settings import CELERY_BEAT_SCHEDULE
from bos_project.settings.environment import bos_env, env
from orchestrator.observability.logging import configure_structlog, log_format, logging_config

BOS_LOG_FORMAT = log_format(bos_env(), env.str("BOS_LOG_FORMAT", default=""))
BOS_LOG_LEVEL = str(env.str("BOS_LOG_LEVEL", default="INFO")).upper()

LOGGING = logging_config(
    fmt=BOS_LOG_FORMAT,
    level=BOS_LOG_LEVEL,
    # Beat's own tasks, and chunk tasks (a hundred per 10,000-item phase): Celery's
    # "received" / "succeeded" lines for them are written at DEBUG; the engine logs what
    # matters about a batch itself, and Flower shows every task.
    housekeeping_tasks=sorted(
        {str(entry["task"]) for entry in CELERY_BEAT_SCHEDULE.values()} | {"tasks.phases.run_item_chunk_task"}
    ),
)
configure_structlog()
