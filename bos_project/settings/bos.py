"""The orchestrator's own settings: topics, consumer group, limits and chunking."""

from __future__ import annotations

from bos_project.settings.environment import bos_env as _bos_env
from bos_project.settings.environment import (
    encryption_keys,
    env,
    kafka_bootstrap,
    positive_int,
)

KAFKA_BOOTSTRAP_SERVERS = kafka_bootstrap()
BOS_TOPIC_REQUESTS = env.str("BOS_TOPIC_REQUESTS", default="bos.batch.requested")
BOS_TOPIC_EVENTS = env.str("BOS_TOPIC_EVENTS", default="bos.batch.events")
BOS_TOPIC_DLQ = env.str("BOS_TOPIC_DLQ", default="bos.batch.requested.dlq")
BOS_CONSUMER_GROUP = env.str("BOS_CONSUMER_GROUP", default="bos-orchestrator")
BOS_KAFKA_FETCH_MAX_WAIT_MS = positive_int("BOS_KAFKA_FETCH_MAX_WAIT_MS", 20)
BOS_ENCRYPTION_KEYS = encryption_keys(_bos_env())

# Limits on inbound requests; a request over them is refused (DLQ or HTTP 413/400).
BOS_MAX_ITEMS = positive_int("BOS_MAX_ITEMS", 10_000)
BOS_MAX_MESSAGE_BYTES = positive_int("BOS_MAX_MESSAGE_BYTES", 16 * 1024 * 1024)
BOS_MAX_ITEM_BYTES = positive_int("BOS_MAX_ITEM_BYTES", 256 * 1024)
# Items per Celery task in a per-item phase (a pipeline phase may set its own).
BOS_CHUNK_SIZE = positive_int("BOS_CHUNK_SIZE", 100)
# A batch of at most this many items runs its phases inside the orchestration task
# instead of fanning out (a fan-out costs more than so little work). 0 turns it off.
BOS_INLINE_MAX_ITEMS = env.int("BOS_INLINE_MAX_ITEMS", default=10)
# Outbox publisher: events per send batch and how long to wait for a NOTIFY.
BOS_OUTBOX_BATCH_SIZE = positive_int("BOS_OUTBOX_BATCH_SIZE", 500)
BOS_OUTBOX_IDLE_SECONDS = env.float("BOS_OUTBOX_IDLE_SECONDS", default=1.0)
# The demo admin user `make run` creates.
BOS_DEMO_USER = env.str("BOS_DEMO_USER", default="admin")
BOS_DEMO_TENANT = env.str("BOS_DEMO_TENANT", default="demo")
# Rollback: attempts per compensation, and the first retry delay (doubling each time).
BOS_COMPENSATION_MAX_ATTEMPTS = positive_int("BOS_COMPENSATION_MAX_ATTEMPTS", 3)
BOS_COMPENSATION_BACKOFF_SECONDS = env.float("BOS_COMPENSATION_BACKOFF_SECONDS", default=2.0)
# Reconciler (beat): how often it runs, and how long a phase may show no progress, or a
# batch stay accepted, before its missing work is sent again. Longer than any chunk runs.
BOS_RECONCILE_INTERVAL_SECONDS = env.float("BOS_RECONCILE_INTERVAL_SECONDS", default=30.0)
BOS_STALE_AFTER_SECONDS = env.float("BOS_STALE_AFTER_SECONDS", default=600.0)
# Retries of items that failed transiently (a phase's `retry` may override them).
BOS_RETRY_MAX_ATTEMPTS = positive_int("BOS_RETRY_MAX_ATTEMPTS", 3)
BOS_RETRY_BASE_SECONDS = env.float("BOS_RETRY_BASE_SECONDS", default=1.0)
BOS_RETRY_CAP_SECONDS = env.float("BOS_RETRY_CAP_SECONDS", default=60.0)
BOS_RETRY_JITTER = env.float("BOS_RETRY_JITTER", default=0.5)
# A retry that must wait longer than this is stored and sent by beat instead of a broker
# countdown (the broker redelivers unacknowledged work after its visibility timeout).
BOS_MAX_COUNTDOWN_SECONDS = env.float("BOS_MAX_COUNTDOWN_SECONDS", default=600.0)
# Extra error classification rules: {"exception type name": "transient" | ...}.
BOS_ERROR_RULES = env.json("BOS_ERROR_RULES", default={})
# Circuit breakers per downstream dependency.
BOS_BREAKER_FAIL_MAX = positive_int("BOS_BREAKER_FAIL_MAX", 5)
BOS_BREAKER_RESET_SECONDS = env.float("BOS_BREAKER_RESET_SECONDS", default=30.0)
# Modules whose import registers phase handlers (see orchestrator.handlers).
BOS_HANDLER_MODULES = env.list("BOS_HANDLER_MODULES", default=["tasks.handlers.essays"])
