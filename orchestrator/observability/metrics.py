"""BOS's process-local Prometheus instruments, and the functions that record into them.

Every process writes into the machine's metrics folder (`BOS_METRICS_DIR`,
orchestrator/observability/multiprocess.py), activated when this module is imported, so
the web's `/metrics` (and `BOS_METRICS_PORT`, orchestrator/observability/exporter.py)
show the sums over all BOS processes of the machine. The families and their labels are
listed in docs/observability.md ("Metrics").

Cardinality is bounded: no batch or item ids in labels; `tenant` and `pipeline` keep at
most MAX_TENANTS / MAX_PIPELINES values per process, later ones count as `_other`; views
and tasks are those the code declares; methods outside the HTTP set are `other`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec

import psutil
from django.conf import settings
from prometheus_client import Counter, Gauge, Histogram

from orchestrator.observability import multiprocess

multiprocess.activate(Path(settings.BOS_METRICS_DIR))

logger = logging.getLogger(__name__)
P = ParamSpec("P")

MAX_TENANTS = 100
MAX_PIPELINES = 50
OTHER = "_other"
UNKNOWN = "unknown"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# How often each process samples its memory (and, in workers, its wall time).
SAMPLE_SECONDS = 5.0
# Process kinds: what `kind` labels say.
KINDS = ("web", "worker", "beat", "consumer", "publisher")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)

HTTP_REQUESTS = Counter(
    "bos_http_requests", "HTTP requests by view (route name), method and status", ["view", "method", "status"]
)
HTTP_DURATION = Histogram(
    "bos_http_request_duration_seconds",
    "Time to answer an HTTP request, by view and method",
    ["view", "method"],
    buckets=LATENCY_BUCKETS,
)
BATCHES_FINISHED = Counter(
    "bos_batches_finished", "Batches that reached a terminal state", ["pipeline", "tenant", "outcome"]
)
ITEMS_FINISHED = Counter(
    "bos_items_finished",
    "Items of finished batches, by outcome (succeeded, failed)",
    ["pipeline", "tenant", "outcome"],
)
TASK_QUEUE_WAIT = Histogram(
    "bos_task_queue_wait_seconds",
    "From a Celery task being sent to its start on a worker",
    ["task", "queue"],
    buckets=WAIT_BUCKETS,
)
TASK_DURATION = Histogram(
    "bos_task_duration_seconds",
    "From a Celery task's start to its end, by final state",
    ["task", "state"],
    buckets=WAIT_BUCKETS,
)
ITEMS_PROCESSED = Counter(
    "bos_items_processed", "Items a handler was run on (chunks and inline phases)", ["kind"]
)
BUSY_SECONDS = Counter("bos_worker_busy_seconds", "Seconds worker processes spent running tasks", ["kind"])
WALL_SECONDS = Counter("bos_worker_wall_seconds", "Seconds worker processes were alive", ["kind"])
OUTBOX_PUBLISH_LATENCY = Histogram(
    "bos_outbox_publish_latency_seconds",
    "From an outbox event being stored to the broker acknowledging it",
    buckets=WAIT_BUCKETS,
)
DB_QUERIES = Histogram(
    "bos_db_queries",
    "Database queries per HTTP request or Celery task",
    ["scope", "name"],
    buckets=COUNT_BUCKETS,
)
DB_SECONDS = Histogram(
    "bos_db_query_seconds",
    "Time spent in database queries per HTTP request or Celery task",
    ["scope", "name"],
    buckets=LATENCY_BUCKETS,
)
DB_SLOW = Counter(
    "bos_db_slow_queries", "Queries slower than BOS_SLOW_QUERY_MS (each is logged)", ["scope", "name"]
)
MEMORY = Gauge(
    "bos_process_resident_memory_bytes",
    "Resident memory of the largest live process of each kind",
    ["kind"],
    multiprocess_mode="livemax",
)
PROCESSES = Gauge("bos_processes", "Live BOS processes of each kind", ["kind"], multiprocess_mode="livesum")


class BoundedLabel:
    """A label whose values are capped per process: the first `cap` seen, then OTHER."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        text = str(value) if value not in (None, "") else UNKNOWN
        if text in self._seen:
            return text
        with self._lock:
            if len(self._seen) < self.cap:
                self._seen.add(text)
                return text
        return OTHER


tenant_label = BoundedLabel(MAX_TENANTS)
pipeline_label = BoundedLabel(MAX_PIPELINES)


def method_label(method: str | None) -> str:
    upper = (method or "").upper()
    return upper if upper in HTTP_METHODS else "other"


class _Process:
    """This process's kind and its sampler thread."""

    def __init__(self) -> None:
        self.kind = ""
        self.pid = 0
        self.thread: threading.Thread | None = None
        self.last_wall = 0.0
        # Wall time counts from the process's first task (a prefork parent runs none).
        self.runs_tasks = False
        self.lock = threading.Lock()


_process = _Process()


def process_kind() -> str:
    return _process.kind or "other"


def sample_process() -> None:
    """Record this process's memory (and a worker's wall time since the last sample)."""
    kind = process_kind()
    MEMORY.labels(kind).set(psutil.Process().memory_info().rss)
    if kind == "worker" and _process.runs_tasks:
        with _process.lock:
            now = time.monotonic()
            WALL_SECONDS.labels(kind).inc(max(0.0, now - _process.last_wall))
            _process.last_wall = now


def _sample_forever() -> None:
    while True:
        with contextlib.suppress(Exception):  # a failed sample must never end the process
            sample_process()
        time.sleep(SAMPLE_SECONDS)


def _start_sampler() -> None:
    _process.pid = os.getpid()
    _process.runs_tasks = False
    _process.last_wall = time.monotonic()
    PROCESSES.labels(_process.kind).set(1)
    sample_process()
    _process.thread = threading.Thread(target=_sample_forever, name="bos-metrics-sampler", daemon=True)
    _process.thread.start()


def _after_fork() -> None:
    # Threads do not survive a fork: a child (Celery prefork, gunicorn) samples itself,
    # with a lock of its own (the sampler may have held the parent's at the fork).
    _process.lock = threading.Lock()
    if _process.kind:
        _start_sampler()


os.register_at_fork(after_in_child=_after_fork)


def start_process_metrics(kind: str) -> None:
    """Called once by each long-running process: its kind, its memory sampler, and
    (outside the web) the machine's metrics on BOS_METRICS_PORT when set."""
    if kind not in KINDS:
        raise ValueError(f"unknown process kind {kind!r}; one of {', '.join(KINDS)}")
    if _process.kind == kind and _process.pid == os.getpid():
        return
    if _process.kind and _process.pid == os.getpid():
        # A process that becomes another kind (embedded beat, forked from a worker) stops
        # counting as the kind it was; its sampler goes on under the new kind.
        PROCESSES.labels(_process.kind).set(0)
        MEMORY.labels(_process.kind).set(0)
        _process.kind = kind
        PROCESSES.labels(kind).set(1)
    else:
        _process.kind = kind
    if _process.pid != os.getpid() or _process.thread is None or not _process.thread.is_alive():
        _start_sampler()
    if kind != "web" and settings.BOS_METRICS_PORT:
        from orchestrator.observability.exporter import serve_machine_metrics

        serve_machine_metrics(settings.BOS_METRICS_ADDRESS, settings.BOS_METRICS_PORT)


def never_raises(record: Callable[P, None]) -> Callable[P, None]:
    """A metric that cannot be recorded (a full disk under the folder) is logged; the
    request, task or publish it measured goes on."""

    @functools.wraps(record)
    def safe(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception:  # noqa: BLE001 - metrics must never break the work they measure
            logger.warning("metric not recorded by %s", record.__name__, exc_info=True)

    return safe


@never_raises
def record_http_request(*, view: str, method: str, status: int, seconds: float) -> None:
    m = method_label(method)
    HTTP_REQUESTS.labels(view, m, str(status)).inc()
    HTTP_DURATION.labels(view, m).observe(seconds)


@never_raises
def record_batch_finished(
    *, pipeline: str, tenant: str, outcome: str, items_succeeded: int, items_failed: int
) -> None:
    p, t = pipeline_label(pipeline), tenant_label(tenant)
    BATCHES_FINISHED.labels(p, t, outcome).inc()
    ITEMS_FINISHED.labels(p, t, "succeeded").inc(max(0, items_succeeded))
    ITEMS_FINISHED.labels(p, t, "failed").inc(max(0, items_failed))


@never_raises
def record_task_started(*, task: str, queue: str, waited: float | None) -> None:
    if not _process.runs_tasks:
        with _process.lock:
            _process.runs_tasks = True
            _process.last_wall = time.monotonic()
    if waited is not None:
        TASK_QUEUE_WAIT.labels(task, queue or UNKNOWN).observe(max(0.0, waited))


@never_raises
def record_task_finished(*, task: str, state: str, seconds: float) -> None:
    TASK_DURATION.labels(task, state or UNKNOWN).observe(seconds)
    BUSY_SECONDS.labels(process_kind()).inc(seconds)


@never_raises
def record_items_processed(count: int) -> None:
    if count > 0:
        ITEMS_PROCESSED.labels(process_kind()).inc(count)


@never_raises
def record_published(latencies: list[float]) -> None:
    for seconds in latencies:
        OUTBOX_PUBLISH_LATENCY.observe(max(0.0, seconds))


@never_raises
def record_db_usage(*, scope: str, name: str, queries: int, seconds: float, slow: int) -> None:
    DB_QUERIES.labels(scope, name).observe(queries)
    DB_SECONDS.labels(scope, name).observe(seconds)
    if slow:
        DB_SLOW.labels(scope, name).inc(slow)


# --- Security monitoring: throttling, logins, token misuse (docs/security.md) ---
API_THROTTLED = Counter(
    "bos_api_throttled", "API requests refused by a rate limit (429), by limit", ["scope"]
)
LOGIN_FAILURES = Counter("bos_login_failures", "Failed logins to the admin (wrong password or locked out)")
LOGIN_LOCKOUTS = Counter(
    "bos_login_lockouts", "Admin login lockouts (too many failures of one username and address)"
)
TOKEN_NEW_ADDRESS = Counter(
    "bos_token_new_address", "API tokens used from an address they had not been used from before"
)


@never_raises
def record_throttled(scope: str) -> None:
    API_THROTTLED.labels(scope).inc()


@never_raises
def record_login_failure() -> None:
    LOGIN_FAILURES.inc()


@never_raises
def record_login_lockout() -> None:
    LOGIN_LOCKOUTS.inc()


@never_raises
def record_token_new_address() -> None:
    TOKEN_NEW_ADDRESS.inc()
