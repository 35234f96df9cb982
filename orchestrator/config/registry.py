"""Every BOS setting, declared once: its name, type, default, bounds, scope and meaning.

Two kinds. `startup` settings (URLs, secrets, ports, topic names) are read from the
environment when a process starts (`bos_project/settings/`). `runtime` settings are read
through `orchestrator.config.runtime(key)`: their environment variable gives the default
and a value set at runtime (`PUT /api/v1/config/{key}/`, `manage.py bos_config set`)
overrides it in every process within `BOS_CONFIG_RELOAD_SECONDS`.

`docs/configuration.md` is generated from these declarations (`manage.py config_docs`).
Pure Python: no Django import, so settings modules and tests can read it.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.masking import DEFAULT_FIELDS as DEFAULT_MASK_FIELDS
from orchestrator.masking import MAX_PATTERNS as MAX_MASK_PATTERNS
from orchestrator.masking import compile_patterns


class Kind(enum.StrEnum):
    STARTUP = "startup"
    RUNTIME = "runtime"


class Scope(enum.StrEnum):
    GLOBAL = "global"
    TENANT = "tenant"


@dataclass(frozen=True)
class Setting:
    """One declared setting. `key` is the runtime name (`chunk_size`); `env` its variable."""

    env: str
    type: str  # int, float, bool, str, list, json, url, secret, choice
    default: Any
    description: str
    section: str
    kind: Kind = Kind.STARTUP
    key: str = ""
    scope: Scope = Scope.GLOBAL
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    example: str = ""
    default_text: str = ""  # how the docs show a default computed at start-up

    @property
    def bounds(self) -> str:
        if self.choices:
            return " · ".join(self.choices)
        if self.min is not None and self.max is not None:
            return f"{_num(self.min)}–{_num(self.max)}"
        if self.min is not None:
            return f"≥ {_num(self.min)}"
        if self.max is not None:
            return f"≤ {_num(self.max)}"
        return ""


@dataclass(frozen=True)
class Alias:
    """An old variable name: `replaced_by` a new one (read with a warning) or removed."""

    old: str
    since: str
    message: str
    replaced_by: str = ""


class ConfigInvalid(ValueError):
    """A value refused by `validate`: `key` names the setting, `rule` the rule it broke."""

    def __init__(self, key: str, rule: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.rule = rule
        self.message = message


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


S = Setting
R = Kind.RUNTIME
_SERVICES = "Services and secrets (CONTRACT §1)"
_KAFKA = "Kafka"
_LAG = "Consumer groups and lag"
_LIMITS = "Limits and tuning"
_RESILIENCE = "Retries, leases and breakers"
_WEB = "Web and the demo"
_CLIENTS = "Downstream services"
_METRICS = "Metrics"
_INSIGHTS = "SLA, anomalies and forecasts"
_TRACES = "Traces (OpenTelemetry)"
_SECURITY = "Security"

SETTINGS: tuple[Setting, ...] = (
    # --- services and secrets ---
    S(
        "DATABASE_URL",
        "url",
        None,
        "PostgreSQL URL (the only engine).",
        _SERVICES,
        default_text="embedded PostgreSQL under `.bos/` ([services.md](services.md))",
        example="postgres://bos:secret@db.internal:5432/bos",
    ),
    S(
        "REDIS_URL",
        "url",
        None,
        "Redis: Celery results (chord counters), locks, caches, breakers, "
        "and the runtime configuration's version.",
        _SERVICES,
        default_text="embedded Redis",
        example="redis://redis.internal:6379/0",
    ),
    S(
        "CELERY_BROKER_URL",
        "url",
        None,
        "Celery broker: `redis://…` or `amqp://…` (RabbitMQ).",
        _SERVICES,
        default_text="`REDIS_URL`",
        example="amqp://bos:secret@rabbit.internal:5672//",
    ),
    S(
        "KAFKA_BOOTSTRAP_SERVERS",
        "list",
        None,
        "Comma-separated `host:port` list of Kafka brokers.",
        _SERVICES,
        default_text="embedded Kafka-protocol broker (tansu)",
        example="kafka-1:9092,kafka-2:9092",
    ),
    S(
        "BOS_SECRET_KEY",
        "secret",
        None,
        "Django secret.",
        _SERVICES,
        default_text="generated once into `.bos/secret_key`, with a warning; refused when `BOS_ENV=production`",
    ),
    S(
        "BOS_ENCRYPTION_KEYS",
        "secret",
        None,
        "Comma-separated Fernet keys, newest first: the newest encrypts payloads, results, metadata and "
        "reports at rest, any decrypts (docs/encryption.md; rotation: `manage.py bos_rotate_keys`).",
        _SERVICES,
        default_text="generated into `.bos/encryption_keys`; refused in production, as is that generated key",
    ),
    S(
        "BOS_ENV",
        "choice",
        "development",
        "The kind of deployment.",
        _SERVICES,
        choices=("development", "test", "production"),
    ),
    S(
        "BOS_LOG_FORMAT",
        "choice",
        "",
        "How log lines are written: `json` (one object per line, with `correlation_id`, "
        "`batch_id`, `tenant`, `phase`, `task_id` where known) or `console` "
        "([observability.md](observability.md)).",
        _SERVICES,
        choices=("json", "console"),
        default_text="`console` in development, `json` otherwise",
    ),
    S(
        "BOS_HOME",
        "str",
        ".bos",
        "Folder for `services.env`, embedded services and generated keys.",
        _SERVICES,
    ),
    S(
        "BOS_CONFIG_RELOAD_SECONDS",
        "float",
        5.0,
        "The longest a running process takes to see a runtime "
        "configuration change (it compares its version with the one in Redis at most this often).",
        _SERVICES,
        min=0.1,
        max=300,
    ),
    # --- kafka ---
    S("BOS_TOPIC_REQUESTS", "str", "bos.batch.requested", "Inbound commands.", _KAFKA),
    S(
        "BOS_TOPIC_EVENTS",
        "str",
        "bos.batch.events",
        "Outbound events of tenants (key: the batch id).",
        _KAFKA,
    ),
    S(
        "BOS_TOPIC_SYSTEM_EVENTS",
        "str",
        "bos.system.events",
        "Outbound events of no tenant, about the service "
        'itself (`consumer.lag_alert`, a `bos.alert` of no tenant), with `"tenant": null`.',
        _KAFKA,
    ),
    S(
        "BOS_TOPIC_DLQ",
        "str",
        "bos.batch.requested.dlq",
        "Dead letters, with `bos-error-class`, `bos-error`, "
        "`bos-source-topic`, `bos-source-partition`, `bos-source-offset` headers.",
        _KAFKA,
    ),
    S("BOS_CONSUMER_GROUP", "str", "bos-orchestrator", "Kafka consumer group.", _KAFKA),
    S(
        "BOS_KAFKA_FETCH_MAX_WAIT_MS",
        "int",
        20,
        "How long the broker may hold an empty fetch.",
        _KAFKA,
        min=1,
    ),
    S(
        "BOS_EVENT_ROUTES",
        "json",
        [],
        'JSON list of rules `{"event_types": [globs], "tenants": [slugs], '
        '"topic": "…"}` sending events to other topics; the first matching rule wins, no match: '
        "`BOS_TOPIC_EVENTS`. A bad rule stops start-up (system check `bos.E020`, naming the rule's index and "
        "field). See [events.md](events.md#routing-events-to-topics).",
        _KAFKA,
        example='[{"event_types": ["batch.failed"], "topic": "bos.failures"}]',
    ),
    S(
        "BOS_KAFKA_CREATE_TOPICS",
        "bool",
        True,
        "A missing topic is created at start-up; `false`: start-up stops "
        "naming it (for clusters where topics are provisioned). The consumer never relies on the broker's "
        "auto-creation. See [kafka.md](kafka.md).",
        _KAFKA,
    ),
    S(
        "BOS_KAFKA_REQUEST_PARTITIONS",
        "int",
        6,
        "Partitions of the requests topic (created with, and the least "
        "it must have): the most consumers that can share the work.",
        _KAFKA,
        min=1,
    ),
    S("BOS_KAFKA_EVENT_PARTITIONS", "int", 3, "Partitions of each events topic.", _KAFKA, min=1),
    S("BOS_KAFKA_DLQ_PARTITIONS", "int", 1, "Partitions of the DLQ.", _KAFKA, min=1),
    S(
        "BOS_KAFKA_REPLICATION_FACTOR",
        "int",
        1,
        "Replication of the topics BOS creates (3 on a production cluster).",
        _KAFKA,
        min=1,
    ),
    S(
        "BOS_KAFKA_DLQ_MAX_BYTES",
        "int",
        1048576,
        "The largest record the consumer writes to the DLQ (its "
        "producer's `max_request_size`; keep it within the DLQ topic's `max.message.bytes`): a larger dead letter "
        "goes there truncated, with `bos-truncated` and `bos-original-size` headers "
        "([kafka.md](kafka.md#a-consumer-that-data-cannot-kill)).",
        _KAFKA,
        min=1,
    ),
    S(
        "BOS_KAFKA_BACKOFF_CAP_SECONDS",
        "float",
        30.0,
        "Longest pause between attempts to reach the broker "
        "(start-up, publisher), and between two tries of a record whose failure was transient (the consumer).",
        _KAFKA,
    ),
    S(
        "BOS_KAFKA_ASSIGNMENT",
        "choice",
        "sticky",
        "Partition assignment (all consumers of a group must agree; see [kafka.md](kafka.md#rebalancing)).",
        _KAFKA,
        choices=("cooperative-sticky", "sticky", "roundrobin", "range"),
    ),
    S(
        "BOS_CONSUMER_HEALTH_FILE",
        "str",
        ".bos/consumer-health.json",
        "The consumer's health snapshot (start-up steps, ready, assigned partitions).",
        _KAFKA,
    ),
    S(
        "BOS_CONSUMER_HEALTH_PORT",
        "int",
        0,
        "Serve the consumer's `/readyz` and `/healthz` on 127.0.0.1:PORT "
        "(also `consume_batches --health-port`); `0`: off.",
        _KAFKA,
        min=0,
        max=65535,
    ),
    S(
        "BOS_READYZ_REQUIRE_CONSUMER",
        "bool",
        False,
        "The web `/readyz` answers 503 until at least one consumer of the group reports ready.",
        _KAFKA,
    ),
    S("BOS_KAFKA_LINGER_MS", "int", 5, "How long the outbox producer waits to fill a record batch.", _KAFKA),
    S(
        "BOS_KAFKA_BATCH_BYTES",
        "int",
        262144,
        "The outbox producer's record batch size, per partition.",
        _KAFKA,
        min=1,
    ),
    S(
        "BOS_KAFKA_COMPRESSION",
        "choice",
        "lz4",
        "Compression of the events.",
        _KAFKA,
        choices=("none", "gzip", "lz4", "zstd"),
    ),
    S("BOS_OUTBOX_BATCH_SIZE", "int", 500, "Events the publisher reads and sends per round.", _KAFKA, min=1),
    S("BOS_OUTBOX_IDLE_SECONDS", "float", 1.0, "Publisher poll interval when no NOTIFY arrives.", _KAFKA),
    S(
        "BOS_MAX_MESSAGE_BYTES",
        "int",
        1048576,
        "Largest inbound Kafka record accepted (1 MiB, Kafka's own "
        "default); a larger one goes to the DLQ as `too_large` (truncated there to `BOS_KAFKA_DLQ_MAX_BYTES`).",
        _KAFKA,
        min=1,
    ),
    # --- consumer groups and lag ---
    S(
        "BOS_LAG_ALERT_THRESHOLD",
        "int",
        1000,
        "Total lag (messages) of `BOS_CONSUMER_GROUP` on "
        "`BOS_TOPIC_REQUESTS` above which a lag episode starts "
        "([consumer-groups.md](consumer-groups.md)).",
        _LAG,
        kind=R,
        key="lag_alert_threshold",
        min=1,
        max=1_000_000_000,
    ),
    S(
        "BOS_LAG_ALERT_SECONDS",
        "float",
        300.0,
        "How long an episode lasts before it raises its alert (`Alert` "
        "kind `consumer_lag` and a `consumer.lag_alert` event), once.",
        _LAG,
        kind=R,
        key="lag_alert_seconds",
        min=0,
        max=7 * 86400,
    ),
    S(
        "BOS_LAG_CHECK_INTERVAL_SECONDS",
        "float",
        30.0,
        "How often Celery beat measures the lag (task `consumer_lag_check_task`).",
        _LAG,
        min=0.1,
    ),
    S(
        "BOS_BEAT_LOCK_SECONDS",
        "float",
        30.0,
        "The leader lease of Celery beat (`orchestrator/beat.py`): any number of beats may run, "
        "exactly one sends scheduled tasks; when it dies a standby takes over within this time.",
        _RESILIENCE,
        min=3,
        max=600,
    ),
    S(
        "BOS_LAG_METRICS_TIMEOUT_SECONDS",
        "float",
        5.0,
        "Longest time a `/metrics` scrape waits for the broker; past it, `bos_kafka_lag_up 0`.",
        _LAG,
    ),
    S(
        "BOS_KAFKA_END_OFFSETS",
        "choice",
        "highwater",
        "How a partition's log end is read: `highwater` "
        "(ListOffsets, then the high watermark of one fetch: right on every broker, including the embedded one) "
        "or `list_offsets` (ListOffsets alone: right on Apache Kafka, one request fewer).",
        _LAG,
        choices=("highwater", "list_offsets"),
    ),
    # --- limits and tuning ---
    S(
        "BOS_MAX_ITEMS",
        "int",
        10_000,
        "More items in one request: refused (DLQ / HTTP 400 `too_many_items`).",
        _LIMITS,
        kind=R,
        key="max_items",
        scope=Scope.TENANT,
        min=1,
        max=10_000_000,
    ),
    S(
        "BOS_MAX_ITEM_BYTES",
        "int",
        262144,
        "Largest item payload accepted, as compact JSON (UTF-8): a larger one refuses its request "
        "(DLQ / HTTP 400 `item_too_large`).",
        _LIMITS,
        min=1,
    ),
    S(
        "BOS_CHUNK_SIZE",
        "int",
        100,
        "Items per chunk task of a per-item phase (a phase may set `chunk_size`). "
        "Decided when a batch is created: a running batch keeps its size.",
        _LIMITS,
        kind=R,
        key="chunk_size",
        scope=Scope.TENANT,
        min=1,
        max=10_000,
        example="250",
    ),
    S(
        "BOS_INLINE_MAX_ITEMS",
        "int",
        10,
        "Batches this small run their phases inline in the orchestration "
        "task instead of fanning out; `0` turns it off.",
        _LIMITS,
        kind=R,
        key="inline_max_items",
        scope=Scope.TENANT,
        min=0,
        max=10_000,
    ),
    S(
        "BOS_TASK_SOFT_TIME_LIMIT",
        "int",
        300,
        "Celery soft task limit, seconds: at it a chunk records what it "
        "finished and sends the rest as a chunk of its own.",
        _LIMITS,
        min=1,
    ),
    S("BOS_TASK_TIME_LIMIT", "int", 360, "Celery hard task limit, seconds.", _LIMITS, min=1),
    S(
        "BOS_RECONCILE_INTERVAL_SECONDS",
        "float",
        10.0,
        "How often beat runs the reconciler (read by beat's schedule at start-up).",
        _LIMITS,
        min=0.1,
    ),
    S(
        "BOS_DEFERRED_INTERVAL_SECONDS",
        "float",
        5.0,
        "How often beat sends stored retries that came due.",
        _LIMITS,
        min=0.1,
    ),
    S(
        "BOS_SNAPSHOT_INTERVAL_SECONDS",
        "float",
        60.0,
        "How often beat snapshots running batches.",
        _LIMITS,
        min=0.1,
    ),
    S(
        "BOS_ERROR_ANALYSIS_INTERVAL_SECONDS",
        "float",
        60.0,
        "How often beat analyses recent errors.",
        _LIMITS,
        min=0.1,
    ),
    S("BOS_DB_CONN_MAX_AGE", "int", 60, "Seconds a database connection is kept.", _LIMITS, min=0),
    S("BOS_DB_REUSE_MAX", "int", 1000, "Tasks a worker runs on one database connection.", _LIMITS, min=0),
    S(
        "BOS_QUEUE_PREFIX",
        "str",
        "",
        "Prefix of the Celery queue names (tests use it to stay apart).",
        _LIMITS,
    ),
    S(
        "BOS_ROUTES",
        "json",
        [],
        "Routing rules sending tasks to extra Celery queues (orchestrator/routing.py).",
        _LIMITS,
        example='[{"queue": "bos.priority", "min_priority": 8}]',
    ),
    S(
        "BOS_HANDLER_MODULES",
        "list",
        ["tasks.handlers.essays"],
        "Modules whose import registers phase handlers.",
        _LIMITS,
    ),
    # --- retries, leases and breakers ---
    S(
        "BOS_LEASE_SECONDS",
        "float",
        30.0,
        "How long running work may go without a heartbeat (renewed every "
        "third of it) before it is sent again elsewhere: what a dead worker costs "
        "([resilience.md](resilience.md#leases-and-heartbeats)).",
        _RESILIENCE,
        kind=R,
        key="lease_seconds",
        min=3,
        max=3600,
    ),
    S(
        "BOS_MAX_WAIT_SECONDS",
        "float",
        86400.0,
        "The longest work waits for a dependency whose breaker is open "
        "(a batch's `deadline` comes first); then its items fail with class `dependency_unavailable`.",
        _RESILIENCE,
        kind=R,
        key="max_wait_seconds",
        scope=Scope.TENANT,
        min=1,
        max=30 * 86400,
    ),
    S(
        "BOS_RETRY_MAX_ATTEMPTS",
        "int",
        3,
        "Attempts of an item that fails transiently (a phase's `retry` may override it).",
        _RESILIENCE,
        kind=R,
        key="retry_max_attempts",
        scope=Scope.TENANT,
        min=1,
        max=100,
    ),
    S(
        "BOS_RETRY_BASE_SECONDS",
        "float",
        1.0,
        "First retry delay, doubling each attempt.",
        _RESILIENCE,
        kind=R,
        key="retry_base_seconds",
        scope=Scope.TENANT,
        min=0,
        max=3600,
    ),
    S(
        "BOS_RETRY_CAP_SECONDS",
        "float",
        60.0,
        "Longest retry delay; at least the base.",
        _RESILIENCE,
        kind=R,
        key="retry_cap_seconds",
        scope=Scope.TENANT,
        min=0,
        max=86400,
    ),
    S(
        "BOS_RETRY_JITTER",
        "float",
        0.5,
        "Random share of each retry delay.",
        _RESILIENCE,
        kind=R,
        key="retry_jitter",
        scope=Scope.TENANT,
        min=0,
        max=1,
    ),
    S(
        "BOS_MAX_COUNTDOWN_SECONDS",
        "float",
        600.0,
        "A retry that must wait longer than this is stored and sent by beat instead of a broker countdown.",
        _RESILIENCE,
        kind=R,
        key="max_countdown_seconds",
        min=1,
        max=3600,
    ),
    S(
        "BOS_ERROR_RULES",
        "json",
        {},
        'Extra error classification rules: `{"exception type name": "transient" | …}`.',
        _RESILIENCE,
        example='{"TimeoutError": "transient"}',
    ),
    S(
        "BOS_BREAKER_FAIL_MAX",
        "int",
        5,
        "Failures in a row that open a dependency's circuit breaker.",
        _RESILIENCE,
        kind=R,
        key="breaker_fail_max",
        min=1,
        max=1000,
    ),
    S(
        "BOS_BREAKER_RESET_SECONDS",
        "float",
        30.0,
        "How long an open breaker waits before a probe.",
        _RESILIENCE,
        kind=R,
        key="breaker_reset_seconds",
        min=0.1,
        max=3600,
    ),
    S(
        "BOS_COMPENSATION_MAX_ATTEMPTS",
        "int",
        3,
        "Attempts per compensation during a rollback.",
        _RESILIENCE,
        kind=R,
        key="compensation_max_attempts",
        min=1,
        max=100,
    ),
    S(
        "BOS_COMPENSATION_BACKOFF_SECONDS",
        "float",
        2.0,
        "First retry delay of a compensation, doubling each time.",
        _RESILIENCE,
        kind=R,
        key="compensation_backoff_seconds",
        min=0,
        max=3600,
    ),
    # --- web and the demo ---
    S("BOS_HTTP_PORT", "int", 8000, "Port of the web service on 127.0.0.1.", _WEB, min=1, max=65535),
    S("BOS_FLOWER_PORT", "int", 5555, "Port of Flower on 127.0.0.1.", _WEB, min=1, max=65535),
    S("BOS_FLOWER_USER", "str", "flower", "Flower's basic-auth user (no `:`).", _WEB),
    S(
        "BOS_FLOWER_PASSWORD",
        "secret",
        None,
        "Flower's basic-auth password (`bos_project/flowerconfig.py`); Flower always asks for a login.",
        _WEB,
        default_text="generated once into `.bos/flower_password` and printed by `make run`; refused unset when `BOS_ENV=production`",
    ),
    S(
        "BOS_ALLOWED_HOSTS",
        "list",
        ["127.0.0.1", "localhost", "testserver"],
        "Django's `ALLOWED_HOSTS`.",
        _WEB,
    ),
    S(
        "BOS_DEBUG",
        "bool",
        False,
        "Django's `DEBUG` (its debug pages show SQL and settings: only on a developer's own machine). "
        "Refused when `BOS_ENV=production`; API paths answer JSON even with it on.",
        _WEB,
    ),
    S("BOS_LOG_LEVEL", "str", "INFO", "Root log level.", _WEB),
    # --- security (docs/security.md) ---
    S(
        "BOS_TRUSTED_PROXIES",
        "list",
        [],
        "Addresses or CIDR networks of the proxies in front of the web service (load balancer, ingress): "
        "only from them is `X-Forwarded-For` believed for the client address that the audit log records.",
        _SECURITY,
        example="10.0.0.0/8,127.0.0.1",
    ),
    # --- security: rate limits, logins, API tokens, hardened edges (docs/security.md) ---
    S(
        "BOS_API_RATE_USER",
        "str",
        "1200/min",
        "API requests per user (anonymous callers: per client address), DRF syntax `<n>/<sec|min|hour|day>`; "
        "over it a 429 with `Retry-After` and code `throttled` ([security.md](security.md#rate-limits)).",
        _SECURITY,
        example="600/min",
    ),
    S(
        "BOS_API_RATE_TENANT",
        "str",
        "6000/min",
        "API requests acting on one tenant, shared by all its users (the batch's tenant, the body's `tenant` "
        "of a POST, else each of the caller's tenants).",
        _SECURITY,
        example="3000/min",
    ),
    S(
        "BOS_API_RATE_WRITE",
        "str",
        "300/min",
        "API writes (POST, PUT, PATCH, DELETE) per user, on top of `BOS_API_RATE_USER`.",
        _SECURITY,
        example="60/min",
    ),
    S(
        "BOS_LOGIN_FAILURE_LIMIT",
        "int",
        5,
        "Failed admin logins of one username from one address that lock that pair out (django-axes).",
        _SECURITY,
        min=1,
        max=1000,
    ),
    S(
        "BOS_LOGIN_COOLOFF_MINUTES",
        "int",
        15,
        "How long a lockout lasts; `manage.py axes_reset_username <name>` lifts one early.",
        _SECURITY,
        min=1,
        max=10080,
    ),
    S(
        "BOS_API_TOKEN_TTL_DAYS",
        "int",
        90,
        "Lifetime of an API token from its creation (`create_api_user`); an expired token is refused and deleted.",
        _SECURITY,
        min=1,
        max=3650,
    ),
    S(
        "BOS_METRICS_TOKEN",
        "secret",
        None,
        "Bearer token `/metrics` (and `BOS_METRICS_PORT`) require when set: "
        "`Authorization: Bearer <token>`, else a 401.",
        _SECURITY,
        default_text="unset: `/metrics` needs no token (`check --deploy` warns in production)",
    ),
    # --- end of security: rate limits, logins, API tokens, hardened edges ---
    # --- security monitoring: alerts raised from the audit log (docs/security.md#monitoring) ---
    S(
        "BOS_SECURITY_REFUSALS_ALERT",
        "int",
        20,
        "Refused requests (denied by role, bad credentials) of one actor within 15 minutes, or failed "
        "admin logins from one address, that raise a `security.refusals` / `security.login_failures` alert.",
        _SECURITY,
        kind=R,
        key="security_refusals_alert",
        min=1,
        max=100_000,
    ),
    S(
        "BOS_SECURITY_CROSS_TENANT_ALERT",
        "int",
        3,
        "Reads or writes of another tenant's objects by one actor (or token) within 15 minutes that raise a "
        "`security.cross_tenant` alert.",
        _SECURITY,
        kind=R,
        key="security_cross_tenant_alert",
        min=1,
        max=100_000,
    ),
    S(
        "BOS_SECURITY_THROTTLED_ALERT",
        "int",
        5,
        "Minutes in which one caller was throttled (one `api.throttled` record per limit and minute), "
        "within 15 minutes, that raise a `security.throttled` alert.",
        _SECURITY,
        kind=R,
        key="security_throttled_alert",
        min=1,
        max=1000,
    ),
    S(
        "BOS_PAYLOAD_READ_ALERT_ITEMS",
        "int",
        10_000,
        "Items whose payloads or results one actor read in the last hour above which, when it is also "
        "over 3× the most they read in any hour of the previous 7 days, a `security.payload_reads` "
        "alert is raised.",
        _SECURITY,
        kind=R,
        key="payload_read_alert_items",
        min=1,
        max=100_000_000,
    ),
    # --- security: masking and retention (docs/masking.md, docs/retention.md) ---
    S(
        "BOS_AUDIT_RETENTION_DAYS",
        "int",
        365,
        "How long audit records are kept; older ones are purged daily by beat "
        "([retention.md](retention.md#the-audit-log)).",
        _SECURITY,
        kind=R,
        key="audit_retention_days",
        min=1,
        max=36500,
    ),
    S(
        "BOS_MASK_FIELDS",
        "list",
        list(DEFAULT_MASK_FIELDS),
        "Field names whose values are masked (`[masked]`) at any depth of payloads, metadata, reports and "
        "outputs shown to viewers, and of log lines and events; compared without case, `-` or `_`, equal "
        "or as the name's end (`user_email` is an `email`).",
        _SECURITY,
        kind=R,
        key="mask_fields",
        example="password,secret,token,api_key,email,phone",
    ),
    S(
        "BOS_MASK_PATTERNS",
        "json",
        [],
        "Extra regular expressions (a JSON list) masked as `[masked]` wherever texts are masked, beside "
        "the built-in e-mail, card-number and credential patterns; each must compile and not match the "
        f"empty string (at most {MAX_MASK_PATTERNS}).",
        _SECURITY,
        kind=R,
        key="mask_patterns",
        example='["ACME-[0-9]{6}", "(?i)patient id [0-9]+"]',
    ),
    S(
        "BOS_RETENTION_DAYS",
        "int",
        30,
        "Days a finished batch keeps its item payloads, item results, phase outputs and report; then "
        "beat purges them, keeping the batch, its history, counters and the audit trail. `0`: kept forever.",
        _SECURITY,
        kind=R,
        key="retention_days",
        scope=Scope.TENANT,
        min=0,
        max=36500,
    ),
    # --- traces: OpenTelemetry's own variables, read by its SDK (BOS checks them at start-up) ---
    S(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "url",
        None,
        "OpenTelemetry's variable, read by its SDK: the OTLP/HTTP receiver (collector) of every process's "
        "spans; `/v1/traces` is appended. Setting it (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, the whole "
        "URL) turns traces on; unset, no tracer provider, exporter or instrumentation is installed "
        "([observability.md](observability.md#traces)).",
        _TRACES,
        default_text="unset: no traces, no tracing cost",
        example="http://otel-collector.internal:4318",
    ),
    S(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "url",
        None,
        "OpenTelemetry's variable: the full URL spans are posted to (wins over "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` for traces).",
        _TRACES,
        default_text="`$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces`",
        example="http://otel-collector.internal:4318/v1/traces",
    ),
    S(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "choice",
        "http/protobuf",
        "OpenTelemetry's variable: the OTLP transport. BOS ships the OTLP/HTTP protobuf exporter; any other "
        "value stops start-up.",
        _TRACES,
        choices=("http/protobuf",),
    ),
    S(
        "OTEL_SERVICE_NAME",
        "str",
        None,
        "OpenTelemetry's variable: `service.name` of the process's spans.",
        _TRACES,
        default_text="by process: `bos-web`, `bos-worker`, `bos-beat`, `bos-consumer`, `bos-publisher`",
    ),
    S(
        "OTEL_TRACES_SAMPLER",
        "choice",
        "parentbased_always_on",
        "OpenTelemetry's variable: which traces are recorded. `parentbased_*` follow an inbound "
        "`traceparent`'s sampled flag.",
        _TRACES,
        choices=(
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ),
    ),
    S(
        "OTEL_TRACES_SAMPLER_ARG",
        "float",
        1.0,
        "OpenTelemetry's variable: the ratio of the `traceidratio` samplers.",
        _TRACES,
        min=0,
        max=1,
    ),
    S(
        "BOS_DEMO_USER",
        "str",
        "admin",
        "The admin user `make run` creates (password in `.bos/admin_password`).",
        _WEB,
    ),
    S("BOS_DEMO_TENANT", "str", "demo", "The tenant of the demo user.", _WEB),
    S(
        "BOS_DASHBOARD_PROBE_SECONDS",
        "float",
        2.0,
        "Longest time `/dashboard/` waits for the Celery broker, Kafka and Redis (queue depths, "
        "consumer lag, breakers, asked at once); past it, a panel says `unavailable`. See [dashboard.md](dashboard.md).",
        _WEB,
        min=0.1,
        max=30,
    ),
    # --- downstream services ---
    S(
        "BOS_SERVICES",
        "json",
        None,
        "JSON object, one entry per service: `url` (required), `timeout`, "
        "`connect_timeout`, `retries`, `backoff`, `backoff_cap`, `jitter`, `retry_after_cap`, `cache_ttl`, "
        "`headers`. Validated at start-up (the message names the service and field); a value replaces the "
        "default whole. See [service-clients.md](service-clients.md).",
        _CLIENTS,
        default_text='outside production: `{"scoring": {"url": "http://127.0.0.1:$BOS_SCORING_PORT", '
        '"timeout": 2, "retries": 2, "cache_ttl": 60}}`; in production: `{}`',
        example='{"scoring": {"url": "http://scoring.internal:8010", "timeout": 2}}',
    ),
    S(
        "BOS_SCORING_PORT",
        "int",
        8010,
        "Port of the demo scoring service (the Procfile's `scoring`, on 127.0.0.1).",
        _CLIENTS,
        min=1,
        max=65535,
    ),
    S(
        "BOS_SERVICE_HEALTH_WINDOW_SECONDS",
        "int",
        300,
        "The rolling window of `bos_service_success_ratio` and the `/readyz` `services` detail.",
        _CLIENTS,
        min=1,
    ),
    S(
        "BOS_SERVICE_DEGRADED_BELOW",
        "float",
        0.9,
        "A success ratio under this shows a service `degraded` in `/readyz` (it never makes `/readyz` fail).",
        _CLIENTS,
        kind=R,
        key="service_degraded_below",
        min=0,
        max=1,
    ),
    # --- metrics ---
    S(
        "BOS_METRICS_DIR",
        "str",
        None,
        "Where every BOS process of the machine keeps its metric values (prometheus_client's "
        "multiprocess folder, exported as `PROMETHEUS_MULTIPROC_DIR`); the web's `/metrics` "
        "adds them up ([observability.md](observability.md#metrics)).",
        _METRICS,
        default_text="`$BOS_HOME/metrics`",
    ),
    S(
        "BOS_METRICS_PORT",
        "int",
        0,
        "On a machine without the web service: the first BOS process (worker, beat, consumer, "
        "publisher) to bind this port serves the machine's metrics at `/metrics`; `0`: off.",
        _METRICS,
        min=0,
        max=65535,
    ),
    S(
        "BOS_METRICS_ADDRESS",
        "str",
        "0.0.0.0",  # noqa: S104 - the port is there to be scraped from other machines
        "The address `BOS_METRICS_PORT` listens on.",
        _METRICS,
    ),
    S(
        "BOS_SLOW_QUERY_MS",
        "float",
        200.0,
        "A database query slower than this is logged (WARNING, with its SQL fingerprint) and "
        "counted in `bos_db_slow_queries_total`. Read at the start of each request and task.",
        _METRICS,
        kind=R,
        key="slow_query_ms",
        min=0,
        max=3_600_000,
    ),
    # --- SLA, anomalies and forecasts ---
    S(
        "BOS_SLA_RISK_MARGIN_SECONDS",
        "float",
        0.0,
        "A batch whose projected finish is later than its deadline minus this "
        "margin is at risk: `batch.sla_at_risk`, once ([anomalies.md](anomalies.md#sla)).",
        _INSIGHTS,
        kind=R,
        key="sla_risk_margin_seconds",
        min=0,
        max=7 * 86400,
    ),
    S(
        "BOS_SLA_CHECK_INTERVAL_SECONDS",
        "float",
        15.0,
        "How often beat projects the running batches' finishes against their deadlines "
        "(task `sla_check_task`; a phase ending checks its batch too).",
        _INSIGHTS,
        min=0.1,
    ),
    S(
        "BOS_INSIGHTS_INTERVAL_SECONDS",
        "float",
        60.0,
        "How often beat looks for anomalous phase runs, predicted error surges and "
        "predicted breaker trips (task `insights_task`).",
        _INSIGHTS,
        min=0.1,
    ),
    S(
        "BOS_ANOMALY_WINDOW_RUNS",
        "int",
        30,
        "Recent finished runs of a pipeline's phase that make its baseline (median and MAD).",
        _INSIGHTS,
        kind=R,
        key="anomaly_window_runs",
        min=8,
        max=1000,
    ),
    S(
        "BOS_ANOMALY_MADS",
        "float",
        4.0,
        "How many scaled MADs from the median a duration, throughput or error rate must lie to be an anomaly.",
        _INSIGHTS,
        kind=R,
        key="anomaly_mads",
        min=1,
        max=50,
    ),
    S(
        "BOS_BREAKER_FORECAST_SECONDS",
        "float",
        60.0,
        "Horizon of the breaker-trip prediction: an alert when a service's success-ratio "
        "trend reaches its trip ratio within this long.",
        _INSIGHTS,
        kind=R,
        key="breaker_forecast_seconds",
        min=10,
        max=3600,
    ),
)

ALIASES: tuple[Alias, ...] = (
    Alias(
        "BOS_STALE_AFTER_SECONDS",
        since="leases (4f2f646)",
        message="BOS_STALE_AFTER_SECONDS was removed: the reconciler re-runs work whose lease expired; "
        "set BOS_LEASE_SECONDS instead (docs/configuration-migrations.md)",
    ),
)

BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}
RUNTIME: dict[str, Setting] = {s.key: s for s in SETTINGS if s.kind == Kind.RUNTIME}


def from_text(text: str) -> Any:
    """A value typed by a person: JSON (`250`, `0.5`, `true`), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse(setting: Setting, raw: Any) -> Any:
    """`raw` (JSON value or string) as the setting's type, within its bounds; else ConfigInvalid."""
    key = setting.key or setting.env
    value: Any
    if setting.type == "int":
        if (
            isinstance(raw, bool)
            or not isinstance(raw, int | str)
            or (isinstance(raw, str) and not raw.strip())
        ):
            raise ConfigInvalid(key, "type", f"must be an integer; got {raw!r}")
        try:
            value = int(raw)
        except ValueError:
            raise ConfigInvalid(key, "type", f"must be an integer; got {raw!r}") from None
    elif setting.type == "float":
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ConfigInvalid(key, "type", f"must be a number; got {raw!r}")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigInvalid(key, "type", f"must be a number; got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigInvalid(key, "type", f"must be a finite number; got {raw!r}")
    elif setting.type == "bool":
        if isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and raw.lower() in {"true", "1", "yes", "on", "false", "0", "no", "off"}:
            value = raw.lower() in {"true", "1", "yes", "on"}
        else:
            raise ConfigInvalid(key, "type", f"must be true or false; got {raw!r}")
    elif setting.type == "list":
        # A JSON list of strings, or a comma-separated text (as its environment variable).
        items = raw if isinstance(raw, list) else str(raw).split(",")
        if not all(isinstance(item, str) for item in items):
            raise ConfigInvalid(key, "type", f"must be a list of strings; got {raw!r}")
        value = [item.strip() for item in items if item.strip()]
    elif setting.type == "json":
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            raise ConfigInvalid(key, "type", "must be valid JSON") from None
    else:
        value = raw if isinstance(raw, str) else str(raw)
    if setting.choices and value not in setting.choices:
        raise ConfigInvalid(key, "choices", f"must be one of {', '.join(setting.choices)}; got {value!r}")
    if setting.min is not None and value < setting.min:
        raise ConfigInvalid(key, "min", f"must be at least {_num(setting.min)}; got {_num(value)}")
    if setting.max is not None and value > setting.max:
        raise ConfigInvalid(key, "max", f"must be at most {_num(setting.max)}; got {_num(value)}")
    return value


def check_combinations(values: Mapping[str, Any]) -> None:
    """Refuse runtime values that each pass their bounds but make no sense together."""
    if values["retry_base_seconds"] > values["retry_cap_seconds"]:
        raise ConfigInvalid(
            "retry_base_seconds",
            "retry_base_seconds <= retry_cap_seconds",
            f"the first retry delay ({_num(values['retry_base_seconds'])} s) must not exceed the cap "
            f"({_num(values['retry_cap_seconds'])} s)",
        )
    if "mask_patterns" in values:
        try:
            if not isinstance(values["mask_patterns"], list):
                raise ValueError(
                    f"must be a JSON list of regular expressions; got {values['mask_patterns']!r}"
                )
            compile_patterns(values["mask_patterns"])
        except ValueError as exc:
            raise ConfigInvalid("mask_patterns", "valid_patterns", str(exc)) from None
    if values["inline_max_items"] > values["max_items"]:
        raise ConfigInvalid(
            "inline_max_items",
            "inline_max_items <= max_items",
            f"the inline threshold ({values['inline_max_items']}) must not exceed the most items a batch may "
            f"have ({values['max_items']})",
        )


def validate(changes: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The full runtime values after `changes`, parsed and checked; ConfigInvalid otherwise.

    `current` holds every runtime key's effective value. One function for the API, the
    admin and `manage.py bos_config`.
    """
    merged = dict(current)
    for key, raw in changes.items():
        setting = RUNTIME.get(key)
        if setting is None:
            raise ConfigInvalid(
                key, "known_key", f"is not a runtime setting; known: {', '.join(sorted(RUNTIME))}"
            )
        merged[key] = parse(setting, raw)
    check_combinations(merged)
    return merged


def apply_aliases(environ: dict[str, str] | Any, aliases: tuple[Alias, ...] = ALIASES) -> list[str]:
    """Read old variable names: a renamed one fills its new name (unless set), a removed
    one is ignored; each with a DeprecationWarning. Returns the warnings' messages."""
    import warnings

    said = []
    for alias in aliases:
        if alias.old not in environ:
            continue
        if alias.replaced_by and alias.replaced_by not in environ:
            environ[alias.replaced_by] = environ[alias.old]
        warnings.warn(alias.message, DeprecationWarning, stacklevel=2)
        said.append(alias.message)
    return said


def check_runtime_defaults(values: Mapping[str, Any]) -> None:
    """Start-up: the runtime settings' variables obey their rules, or ImproperlyConfigured
    names the variable."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        for key, value in values.items():
            parse(RUNTIME[key], value)
        check_combinations(values)
    except ConfigInvalid as exc:
        raise ImproperlyConfigured(f"{RUNTIME[exc.key].env}: {exc.message} (rule: {exc.rule})") from exc
