"""The orchestrator's own settings: topics, consumer group, limits and chunking."""

from __future__ import annotations

from bos_project.settings.environment import (
    BOS_HOME,
    choice,
    encryption_keys,
    env,
    json_value,
    kafka_bootstrap,
    metrics_dir,
    positive_int,
    trusted_proxies,
)
from bos_project.settings.environment import bos_env as _bos_env
from orchestrator.config.registry import apply_aliases as _apply_aliases
from orchestrator.observability.tracing import check_environment as _check_otel_environment

# Old names of settings (docs/configuration-migrations.md): read with a DeprecationWarning.
_apply_aliases(env.ENVIRON)

KAFKA_BOOTSTRAP_SERVERS = kafka_bootstrap()
# Traces: OpenTelemetry reads its OTEL_* variables itself; a bad value stops start-up here.
_check_otel_environment(env.ENVIRON)
BOS_TOPIC_REQUESTS = env.str("BOS_TOPIC_REQUESTS", default="bos.batch.requested")
BOS_TOPIC_EVENTS = env.str("BOS_TOPIC_EVENTS", default="bos.batch.events")
BOS_TOPIC_DLQ = env.str("BOS_TOPIC_DLQ", default="bos.batch.requested.dlq")
# Events of no tenant (alerts about the service itself, such as consumer.lag_alert).
BOS_TOPIC_SYSTEM_EVENTS = env.str("BOS_TOPIC_SYSTEM_EVENTS", default="bos.system.events")
BOS_CONSUMER_GROUP = env.str("BOS_CONSUMER_GROUP", default="bos-orchestrator")
BOS_KAFKA_FETCH_MAX_WAIT_MS = positive_int("BOS_KAFKA_FETCH_MAX_WAIT_MS", 20)
BOS_ENCRYPTION_KEYS = encryption_keys(_bos_env())
# The proxies whose X-Forwarded-For names the client (orchestrator/audit/addresses.py).
BOS_TRUSTED_PROXIES = trusted_proxies()

# Runtime settings (orchestrator/config/): the longest a process takes to see a change.
BOS_CONFIG_RELOAD_SECONDS = env.float("BOS_CONFIG_RELOAD_SECONDS", default=5.0)
if not 0.1 <= BOS_CONFIG_RELOAD_SECONDS <= 300:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("BOS_CONFIG_RELOAD_SECONDS must be between 0.1 and 300 seconds")

# Limits on inbound requests; a request over them is refused (DLQ or HTTP 413/400).
BOS_MAX_ITEMS = positive_int("BOS_MAX_ITEMS", 10_000)
# 1 MiB: Kafka's own default limit (CONTRACT §1).
BOS_MAX_MESSAGE_BYTES = positive_int("BOS_MAX_MESSAGE_BYTES", 1024 * 1024)
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
# Leases (docs/resilience.md#leases): a running chunk or per-batch phase holds a lease that
# its heartbeat renews every third of this; work whose lease expired without a result is
# sent again by the reconciler. It bounds how long a dead worker's work waits.
BOS_LEASE_SECONDS = env.float("BOS_LEASE_SECONDS", default=30.0)
if BOS_LEASE_SECONDS < 3:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("BOS_LEASE_SECONDS must be at least 3 (the heartbeat renews every third)")
# Reconciler (beat): how often it looks for expired leases and lost starts.
BOS_RECONCILE_INTERVAL_SECONDS = env.float("BOS_RECONCILE_INTERVAL_SECONDS", default=10.0)
# The longest work waits for a dependency whose breaker is open (a batch's `deadline`, when
# it has one, comes first); then its items fail with class `dependency`.
BOS_MAX_WAIT_SECONDS = env.float("BOS_MAX_WAIT_SECONDS", default=24 * 3600.0)
# Retries of items that failed transiently (a phase's `retry` may override them).
BOS_RETRY_MAX_ATTEMPTS = positive_int("BOS_RETRY_MAX_ATTEMPTS", 3)
BOS_RETRY_BASE_SECONDS = env.float("BOS_RETRY_BASE_SECONDS", default=1.0)
BOS_RETRY_CAP_SECONDS = env.float("BOS_RETRY_CAP_SECONDS", default=60.0)
BOS_RETRY_JITTER = env.float("BOS_RETRY_JITTER", default=0.5)
# A retry that must wait longer than this is stored and sent by beat instead of a broker
# countdown (the broker redelivers unacknowledged work after its visibility timeout).
BOS_MAX_COUNTDOWN_SECONDS = env.float("BOS_MAX_COUNTDOWN_SECONDS", default=600.0)
# Extra error classification rules: {"exception type name": "transient" | ...}.
BOS_ERROR_RULES: dict[str, str] = json_value("BOS_ERROR_RULES", {})
# Circuit breakers per downstream dependency.
BOS_BREAKER_FAIL_MAX = positive_int("BOS_BREAKER_FAIL_MAX", 5)
BOS_BREAKER_RESET_SECONDS = env.float("BOS_BREAKER_RESET_SECONDS", default=30.0)
# Modules whose import registers phase handlers (see orchestrator.handlers).
BOS_HANDLER_MODULES = env.list("BOS_HANDLER_MODULES", default=["tasks.handlers.essays"])

# --- Kafka in production (docs/kafka.md) ---
# Consumer start-up: a missing topic is created when this is on, else start-up stops
# with an error naming it. Partitions are the minimum each topic must have.
BOS_KAFKA_CREATE_TOPICS = env.bool("BOS_KAFKA_CREATE_TOPICS", default=True)
BOS_KAFKA_REQUEST_PARTITIONS = positive_int("BOS_KAFKA_REQUEST_PARTITIONS", 6)
BOS_KAFKA_EVENT_PARTITIONS = positive_int("BOS_KAFKA_EVENT_PARTITIONS", 3)
BOS_KAFKA_DLQ_PARTITIONS = positive_int("BOS_KAFKA_DLQ_PARTITIONS", 1)
BOS_KAFKA_REPLICATION_FACTOR = positive_int("BOS_KAFKA_REPLICATION_FACTOR", 1)
# The largest record the consumer writes to the DLQ (its producer's max_request_size; keep
# it within the DLQ topic's max.message.bytes): a larger dead letter goes there truncated.
BOS_KAFKA_DLQ_MAX_BYTES = positive_int("BOS_KAFKA_DLQ_MAX_BYTES", 1024 * 1024)
# Longest pause between two attempts to reach the broker at start-up, and between two
# tries of a record whose failure was transient.
BOS_KAFKA_BACKOFF_CAP_SECONDS = env.float("BOS_KAFKA_BACKOFF_CAP_SECONDS", default=30.0)
# How the group's partitions are shared among consumers (docs/kafka.md#rebalancing).
BOS_KAFKA_ASSIGNMENT = choice(
    "BOS_KAFKA_ASSIGNMENT", ("cooperative-sticky", "sticky", "roundrobin", "range"), "sticky"
)
# The consumer's readiness: a JSON file it rewrites, and optionally an HTTP port (0: off).
BOS_CONSUMER_HEALTH_FILE = env.str("BOS_CONSUMER_HEALTH_FILE", default=str(BOS_HOME / "consumer-health.json"))
BOS_CONSUMER_HEALTH_PORT = env.int("BOS_CONSUMER_HEALTH_PORT", default=0)
# /readyz answers 503 unless at least one consumer reports ready (for the consumer's pods).
BOS_READYZ_REQUIRE_CONSUMER = env.bool("BOS_READYZ_REQUIRE_CONSUMER", default=False)
# Outbox publisher: producer batching, compression and routing of events to topics.
BOS_KAFKA_LINGER_MS = env.int("BOS_KAFKA_LINGER_MS", default=5)
BOS_KAFKA_BATCH_BYTES = positive_int("BOS_KAFKA_BATCH_BYTES", 256 * 1024)
BOS_KAFKA_COMPRESSION = choice("BOS_KAFKA_COMPRESSION", ("none", "gzip", "lz4", "zstd"), "lz4")
# [{"event_types": ["batch.failed", "batch.phase_*"], "tenants": ["acme"], "topic": "..."}]:
# the first rule matching an event's type and tenant names its topic, else BOS_TOPIC_EVENTS.
BOS_EVENT_ROUTES: list[dict[str, object]] = json_value("BOS_EVENT_ROUTES", [])
# Consumer lag alert: lag above the threshold (messages) for this long raises an alert.
BOS_LAG_ALERT_THRESHOLD = positive_int("BOS_LAG_ALERT_THRESHOLD", 1000)
BOS_LAG_ALERT_SECONDS = env.float("BOS_LAG_ALERT_SECONDS", default=300.0)
BOS_LAG_CHECK_INTERVAL_SECONDS = env.float("BOS_LAG_CHECK_INTERVAL_SECONDS", default=30.0)
BOS_BEAT_LOCK_SECONDS = env.float("BOS_BEAT_LOCK_SECONDS", default=30.0)

# --- Service clients (docs/service-clients.md) ---
# Imported here, not at the top: this section's own helpers (orchestrator.service_clients.config
# needs only pydantic, never Django's settings).
from bos_project.settings.environment import port as _port  # noqa: E402
from orchestrator.service_clients.config import services_setting as _services_setting  # noqa: E402

# The port of the demo's scoring service (the Procfile's `scoring` process).
BOS_SCORING_PORT = _port("BOS_SCORING_PORT", 8010)
# The downstream services handlers call, JSON: {"scoring": {"url": …, "timeout": 2, "retries": 2,
# "cache_ttl": 60, "headers": {…}}}; validated here. Unset: outside production, the demo
# scoring service; in production, none. A value replaces the default whole.
BOS_SERVICES = _services_setting(
    env.str("BOS_SERVICES", default=""),
    default={}
    if _bos_env() == "production"
    else {
        "scoring": {
            "url": f"http://127.0.0.1:{BOS_SCORING_PORT}",
            "timeout": 2,
            "retries": 2,
            "cache_ttl": 60,
        }
    },
)
# Service health (/readyz detail, bos_service_success_ratio): the rolling window, and the
# success ratio under which a service shows `degraded` (it never makes /readyz fail).
BOS_SERVICE_HEALTH_WINDOW_SECONDS = positive_int("BOS_SERVICE_HEALTH_WINDOW_SECONDS", 300)
BOS_SERVICE_DEGRADED_BELOW = env.float("BOS_SERVICE_DEGRADED_BELOW", default=0.9)
if not 0.0 <= BOS_SERVICE_DEGRADED_BELOW <= 1.0:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("BOS_SERVICE_DEGRADED_BELOW must be a ratio between 0 and 1")

# --- Consumer groups and lag (docs/consumer-groups.md) ---
# How a partition's log end is read: `highwater` (ListOffsets, then one fetch at that
# offset whose high watermark is the end: right on every broker, including the embedded
# one whose ListOffsets is wrong after batched sends) or `list_offsets` (ListOffsets alone:
# right on Apache Kafka, one request fewer).
BOS_KAFKA_END_OFFSETS = choice("BOS_KAFKA_END_OFFSETS", ("highwater", "list_offsets"), "highwater")
# Longest time /metrics spends asking the broker for the consumer lag.
BOS_LAG_METRICS_TIMEOUT_SECONDS = env.float("BOS_LAG_METRICS_TIMEOUT_SECONDS", default=5.0)
# Longest time /dashboard/ waits for the broker, Kafka and Redis (docs/dashboard.md).
BOS_DASHBOARD_PROBE_SECONDS = env.float("BOS_DASHBOARD_PROBE_SECONDS", default=2.0)
if not 0.1 <= BOS_DASHBOARD_PROBE_SECONDS <= 30:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("BOS_DASHBOARD_PROBE_SECONDS must be between 0.1 and 30 seconds")

# --- Metrics (docs/observability.md "Metrics") ---
# Where every BOS process of the machine keeps its metric values (prometheus_client's
# multiprocess folder); the web's /metrics adds them up.
BOS_METRICS_DIR = str(metrics_dir())
# Outside the web (a worker machine): serve the machine's metrics on this port; 0: off.
BOS_METRICS_PORT = env.int("BOS_METRICS_PORT", default=0)
if not 0 <= BOS_METRICS_PORT <= 65535:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("BOS_METRICS_PORT must be a port number between 0 (off) and 65535")
BOS_METRICS_ADDRESS = env.str("BOS_METRICS_ADDRESS", default="0.0.0.0")  # noqa: S104 - scraped from elsewhere
# Queries slower than this are logged with their fingerprint (runtime setting slow_query_ms).
BOS_SLOW_QUERY_MS = env.float("BOS_SLOW_QUERY_MS", default=200.0)
# --- SLA, anomalies and forecasts (docs/anomalies.md) ---
# At risk: projected finish later than the deadline minus this margin (runtime).
BOS_SLA_RISK_MARGIN_SECONDS = env.float("BOS_SLA_RISK_MARGIN_SECONDS", default=0.0)
# Beat's SLA check and insights (anomalies, surges, breaker trends): read by the schedule.
BOS_SLA_CHECK_INTERVAL_SECONDS = env.float("BOS_SLA_CHECK_INTERVAL_SECONDS", default=15.0)
BOS_INSIGHTS_INTERVAL_SECONDS = env.float("BOS_INSIGHTS_INTERVAL_SECONDS", default=60.0)
BOS_ANOMALY_WINDOW_RUNS = env.int("BOS_ANOMALY_WINDOW_RUNS", default=30)
BOS_ANOMALY_MADS = env.float("BOS_ANOMALY_MADS", default=4.0)
BOS_BREAKER_FORECAST_SECONDS = env.float("BOS_BREAKER_FORECAST_SECONDS", default=60.0)
# --- security (docs/security.md) ---
# How long audit records are kept (runtime audit_retention_days); beat purges older ones.
BOS_AUDIT_RETENTION_DAYS = positive_int("BOS_AUDIT_RETENTION_DAYS", 365)
# --- security monitoring (docs/security.md#monitoring); all runtime ---
BOS_SECURITY_REFUSALS_ALERT = positive_int("BOS_SECURITY_REFUSALS_ALERT", 20)
BOS_SECURITY_CROSS_TENANT_ALERT = positive_int("BOS_SECURITY_CROSS_TENANT_ALERT", 3)
BOS_SECURITY_THROTTLED_ALERT = positive_int("BOS_SECURITY_THROTTLED_ALERT", 5)
BOS_PAYLOAD_READ_ALERT_ITEMS = positive_int("BOS_PAYLOAD_READ_ALERT_ITEMS", 10_000)
# --- security: masking and retention (docs/masking.md, docs/retention.md); all runtime ---
from orchestrator.masking import DEFAULT_FIELDS as _DEFAULT_MASK_FIELDS  # noqa: E402

# Field names masked at any depth (runtime mask_fields); extra regexes (runtime mask_patterns).
BOS_MASK_FIELDS = env.list("BOS_MASK_FIELDS", default=list(_DEFAULT_MASK_FIELDS))
BOS_MASK_PATTERNS: list[str] = json_value("BOS_MASK_PATTERNS", [])
# Days a finished batch keeps payloads and results (runtime retention_days, per tenant); 0: forever.
BOS_RETENTION_DAYS = env.int("BOS_RETENTION_DAYS", default=30)

# --- Runtime settings: their variables are their defaults, held to the same rules ---
from orchestrator.config.registry import RUNTIME as _RUNTIME  # noqa: E402
from orchestrator.config.registry import check_runtime_defaults as _check_runtime_defaults  # noqa: E402

_check_runtime_defaults({key: globals()[s.env] for key, s in _RUNTIME.items()})
