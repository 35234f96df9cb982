"""Celery settings (read by the app with namespace="CELERY").

Chords use the Redis result backend: chord counters live in Redis, which is what
chords on the django-db backend get wrong. Tasks people look up store their results
in PostgreSQL (tasks/results.py). Work that must not be lost is acked late and
rejected back to the queue when a worker dies.
"""

from __future__ import annotations

import json

from kombu import Queue

from bos_project.settings.environment import env, required_url
from orchestrator.routing import RoutingError, check_rules

REDIS_URL = required_url("REDIS_URL", ("redis", "rediss"))
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL
if not CELERY_BROKER_URL.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("CELERY_BROKER_URL must be a redis:// or amqp:// URL")

# Redis is the app's result backend (chords, chunk results); the tasks people look up
# (per-batch phases and orchestration, maintenance, analytics) store theirs in
# PostgreSQL instead (tasks/results.py, docs/observability.md "Task results"), extended:
# with their name, arguments, worker and queue.
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_RESULT_EXTENDED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("BOS_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("BOS_TASK_TIME_LIMIT", default=360)
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Longer than any task may run, so an unacked task is not redelivered while still running.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# Explicit queues: orchestration (short bookkeeping), item chunks, per-batch phases.
# A prefix keeps a test run's tasks away from any other worker on the same broker.
_PREFIX = env.str("BOS_QUEUE_PREFIX", default="")
QUEUE_ORCHESTRATION = f"{_PREFIX}bos.orchestration"
QUEUE_ITEMS = f"{_PREFIX}bos.items"
QUEUE_BATCH = f"{_PREFIX}bos.batch"
# Routing rules (orchestrator/routing.py): which tasks go to which extra queues.
try:
    BOS_ROUTES = check_rules(json.loads(env.str("BOS_ROUTES", default="[]")))
except (ValueError, RoutingError) as exc:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"BOS_ROUTES: {exc}") from exc
for _rule in BOS_ROUTES:
    _rule["queue"] = f"{_PREFIX}{_rule['queue']}"
BOS_QUEUES = [QUEUE_ORCHESTRATION, QUEUE_ITEMS, QUEUE_BATCH]
BOS_QUEUES += sorted({r["queue"] for r in BOS_ROUTES} - set(BOS_QUEUES))
CELERY_TASK_QUEUES = [Queue(name) for name in BOS_QUEUES]
CELERY_TASK_DEFAULT_QUEUE = QUEUE_ORCHESTRATION
CELERY_TASK_ROUTES = {
    "tasks.orchestration.*": {"queue": QUEUE_ORCHESTRATION},
    "tasks.phases.run_item_chunk_task": {"queue": QUEUE_ITEMS},
    "tasks.phases.run_batch_phase_task": {"queue": QUEUE_BATCH},
    # Error analysis may wait a few seconds for open writers: keep it off orchestration.
    "tasks.analytics.*": {"queue": QUEUE_BATCH},
    # Insights read recent history and Redis slots: off orchestration, like analytics.
    "tasks.insights.*": {"queue": QUEUE_BATCH},
    # The lag check waits on the Kafka broker (up to seconds): off orchestration too.
    "tasks.maintenance.consumer_lag_check_task": {"queue": QUEUE_BATCH},
    # Retention purges in many short transactions: off orchestration.
    "tasks.retention.*": {"queue": QUEUE_BATCH},
    # Security alerts read the audit log's last hour: off orchestration.
    "tasks.security.*": {"queue": QUEUE_BATCH},
}
# Celery's own logging setup is skipped (bos_project/celery.py): Django's LOGGING is used.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_IMPORTS = [
    "tasks.orchestration",
    "tasks.phases",
    "tasks.maintenance",
    "tasks.snapshots",
    "tasks.analytics",
    "tasks.insights",
    "tasks.retention",
    "tasks.security",
]
# Celery's Django fix-up closes the database connection around every task unless this
# is set, so each task would pay for a new PostgreSQL connection. Reuse it for this many
# tasks (Django's CONN_MAX_AGE and health checks still apply).
CELERY_DB_REUSE_MAX = env.int("BOS_DB_REUSE_MAX", default=1000)
# Beat's schedules: these are the declarations and their defaults; the one active beat
# (orchestrator/beat.py, exactly one at a time) reads them from the database, where
# runtime changes (`bos_config schedule NAME --every N`) are versioned like settings.
CELERY_BEAT_SCHEDULER = "orchestrator.beat:SingleBeatScheduler"
# Deferred work (waits over BOS_MAX_COUNTDOWN_SECONDS) is sent by the reconciler's pass:
# a task of its own every 5 s flooded Flower and the log for a wait of 10 minutes or more.
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "reconcile": {
        "task": "tasks.maintenance.reconcile_task",
        "schedule": env.float("BOS_RECONCILE_INTERVAL_SECONDS", default=10.0),
        "options": {"expires": 60},
    },
    "snapshots": {
        "task": "tasks.snapshots.snapshot_task",
        "schedule": env.float("BOS_SNAPSHOT_INTERVAL_SECONDS", default=60.0),
        "options": {"expires": 60},
    },
    "analyze-errors": {
        "task": "tasks.analytics.analyze_errors_task",
        "schedule": env.float("BOS_ERROR_ANALYSIS_INTERVAL_SECONDS", default=60.0),
        "options": {"expires": 60},
    },
    "sla-check": {
        "task": "tasks.insights.sla_check_task",
        "schedule": env.float("BOS_SLA_CHECK_INTERVAL_SECONDS", default=15.0),
        "options": {"expires": 60},
    },
    "insights": {
        "task": "tasks.insights.insights_task",
        "schedule": env.float("BOS_INSIGHTS_INTERVAL_SECONDS", default=60.0),
        "options": {"expires": 60},
    },
    "task-results-cleanup": {
        "task": "tasks.maintenance.task_results_cleanup_task",
        "schedule": 3600.0,
        "options": {"expires": 600},
    },
    "consumer-lag": {
        "task": "tasks.maintenance.consumer_lag_check_task",
        "schedule": env.float("BOS_LAG_CHECK_INTERVAL_SECONDS", default=30.0),
        "options": {"expires": 60},
    },
    # Retention (docs/retention.md): hourly, so a purge is small and a batch is purged
    # within an hour of its cut-off; `bos_config schedule retention --every N` changes it.
    "retention": {
        "task": "tasks.retention.retention_purge_task",
        "schedule": 3600.0,
        "options": {"expires": 1800},
    },
    # Security alerts from the audit log (docs/security.md#monitoring): two aggregate
    # queries over its last hour; each alert once per actor and window.
    "security-watch": {
        "task": "tasks.security.security_watch_task",
        "schedule": 60.0,
        "options": {"expires": 60},
    },
}
