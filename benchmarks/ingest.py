"""`python -m benchmarks.ingest` (`make bench-ingest`): the Kafka consumer's ingest rate.

N `batch.requested` messages (5 short essays each, pipeline essay-analysis) are produced
to a fresh topic, then consumed on the same broker and database, in the same run, by:
  (a) BOS: the real consumer, orchestrator.kafka.consumer.BatchRequestConsumer, looping
      `poll_once()` in this process: JSON Schema + pydantic validation, the batch, its
      items, phases and audit rows, the `batch.accepted` outbox event, the orchestration
      task sent to Celery (its message lands on Redis under this run's queue prefix; no
      worker runs it), offsets committed after each poll;
  (a×k) the same as k `manage.py consume_batches` processes in one group (`--processes`);
  (b) plain: a kafka-python KafkaConsumer loop (manual commit after each poll) that
      json-decodes each message and INSERTs it as one row of a scratch table, autocommit
      per row: the naive "consumer that stores what it gets".

What is timed: each consumer first joins its group on the still-empty topic (for (a×k),
until every process owns its share of the partitions); only then are the N messages
produced, and the clock starts. It stops when the last message is stored: for (a) and (b)
when the loop has handled and committed all N, for (a×k) when this process sees N batch
rows. Group join, process start-up and producing are not timed. Afterwards each run is
checked: N batches stored, nothing dead-lettered, N orchestration tasks on Redis, the
group's committed offsets sum to N.

Also reported: CPU ms per request, this process's CPU time over the timed part (in-process
kinds; kafka-python's background thread included); SQL statements per request, counted in
the timed in-process runs with Django's execute_wrapper (which misses BEGIN, COMMIT and the
COPY of a batch's items); database round trips per request, counted exactly from a libpq
trace of one more, untimed, run of (a) and (b) with `--trace-requests` messages: every
message after which the client waits for PostgreSQL (Query, Sync, CopyDone).

Every run of each kind is repeated `--repeat` times, the kinds interleaved; the table
shows the median with the range. Everything the run made is removed at the end: its rows,
the scratch table, the Redis queues, its topics and consumer groups.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = uuid.uuid4().hex[:8]
PREFIX = f"bench-ingest-{RUN_ID}"
# Health files and the libpq trace; made by main() (so `--help` leaves nothing behind).
SCRATCH = Path(tempfile.gettempdir()) / PREFIX
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bos_project.settings")
# As deployed: DEBUG (on by default in development) records every query, which costs.
os.environ.setdefault("BOS_DEBUG", "false")
os.environ["BOS_QUEUE_PREFIX"] = f"{PREFIX}."
os.environ["BOS_TOPIC_REQUESTS"] = f"{PREFIX}.requested"
os.environ["BOS_TOPIC_EVENTS"] = f"{PREFIX}.events"
os.environ["BOS_TOPIC_DLQ"] = f"{PREFIX}.dlq"
os.environ["BOS_CONSUMER_GROUP"] = PREFIX
os.environ["BOS_CONSUMER_HEALTH_FILE"] = str(SCRATCH / "consumer-health.json")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import close_old_connections, connection  # noqa: E402
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.errors import KafkaError  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.results import Ratio, record  # noqa: E402
from bos_project.settings.environment import BASE_DIR  # noqa: E402
from orchestrator.kafka.clients import ensure_topics, make_producer  # noqa: E402
from orchestrator.kafka.consumer import BatchRequestConsumer  # noqa: E402
from orchestrator.kafka.health import REDIS_PREFIX, ConsumerHealth  # noqa: E402
from orchestrator.management.commands.demo import sample_essays  # noqa: E402
from orchestrator.models import Batch, OutboxEvent, ProcessedEvent, Tenant  # noqa: E402
from orchestrator.services.pipelines import pipeline_publish_file  # noqa: E402

TENANT = f"ingest-{RUN_ID}"
TABLE = f"bench_ingest_{RUN_ID}"
PIPELINE = "essay-analysis"
ITEMS_PER_REQUEST = 5
SESSION_TIMEOUT_MS = 6000
JOIN_TIMEOUT = 120.0
RUN_TIMEOUT = 900.0
PLAIN = "(b) plain loop, INSERT per message"
# Piped output (a log, docs) gets room for the table rather than 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=150)
REDIS = redis.Redis.from_url(settings.REDIS_URL)


@dataclass
class Measurement:
    seconds: float
    statements: int | None = None
    round_trips: int | None = None
    # CPU time of this process over the timed part (in-process kinds only).
    cpu_seconds: float | None = None


@dataclass
class Kind:
    name: str
    runs: list[Measurement] = field(default_factory=list)
    round_trips: float | None = None

    def rates(self, requests: int) -> list[float]:
        return [requests / m.seconds for m in self.runs]


# -- building and producing the requests --------------------------------------------------


def request_messages(count: int, label: str) -> list[tuple[bytes, bytes]]:
    """`count` distinct batch.requested messages as (key, value) bytes."""
    items = sample_essays(ITEMS_PER_REQUEST)
    messages = []
    for i in range(count):
        external_id = f"{label}-{i:06d}"
        message = {
            "event_id": str(uuid.uuid4()),
            "event_type": "batch.requested",
            "schema_version": 1,
            "occurred_at": "2026-11-29T10:00:00Z",
            "correlation_id": f"corr-{uuid.uuid4().hex[:8]}",
            "tenant": TENANT,
            "data": {"external_id": external_id, "pipeline": PIPELINE, "items": items},
        }
        messages.append((f"{TENANT}:{external_id}".encode(), json.dumps(message).encode()))
    return messages


def fresh_topic(label: str) -> str:
    topic = f"{PREFIX}.requested.{label}"
    ensure_topics([topic], partitions=settings.BOS_KAFKA_REQUEST_PARTITIONS)
    return topic


def produce(producer: KafkaProducer, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=120)


def committed_total(topic: str, group: str) -> int:
    """The sum of the group's committed offsets on `topic` (its records handled)."""
    reader = KafkaConsumer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, group_id=group, enable_auto_commit=False
    )
    try:
        partitions = reader.partitions_for_topic(topic) or set()
        return sum(reader.committed(TopicPartition(topic, p)) or 0 for p in partitions)
    finally:
        reader.close(autocommit=False)


def stored_batches(label: str) -> int:
    return Batch.objects.filter(tenant__slug=TENANT, external_id__startswith=f"{label}-").count()


def run_queues() -> list[bytes]:
    """This run's Celery queues on Redis (lists named with BOS_QUEUE_PREFIX)."""
    return [key for key in REDIS.scan_iter(match=f"{PREFIX}.*", count=500) if REDIS.type(key) == b"list"]


def drop_queues() -> None:
    queues = run_queues()
    if queues:
        REDIS.delete(*queues)


def check_run(label: str, topic: str, group: str, requests: int) -> None:
    """Check that run `label` stored, dispatched and committed every request, then empty the queues."""
    stored = stored_batches(label)
    queues = run_queues()
    dispatched = sum(int(REDIS.llen(key)) for key in queues)
    committed = committed_total(topic, group)
    drop_queues()
    if (stored, dispatched, committed) != (requests, requests, requests):
        raise SystemExit(
            f"benchmark: run {label}: {stored} batches stored, {dispatched} tasks queued, "
            f"{committed} offsets committed; expected {requests} of each"
        )


# -- what is timed --------------------------------------------------------------------------


@contextmanager
def counting_statements() -> Iterator[list[int]]:
    count = [0]

    def counter(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        count[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(counter):
        yield count


# The frontend messages after which a libpq client waits for the server's answer.
WAITING_MESSAGES = frozenset({"Query", "Sync", "CopyDone", "CopyFail"})


@contextmanager
def tracing_round_trips(enabled: bool) -> Iterator[list[int]]:
    """Count database round trips on Django's connection, from a libpq protocol trace."""
    count = [0]
    if not enabled:
        yield count
        return
    # A connection past CONN_MAX_AGE would be replaced (untraced) at the first poll: renew it now.
    close_old_connections()
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    path = SCRATCH / "libpq-trace.txt"
    with open(path, "w") as trace:
        pgconn.trace(trace.fileno())
        try:
            yield count
        finally:
            pgconn.untrace()
    if connection.connection is None or connection.connection.pgconn is not pgconn:
        raise SystemExit("benchmark: the database connection was replaced while tracing; count not trusted")
    with open(path) as trace:
        for line in trace:
            fields = line.split("\t", 4)
            if len(fields) > 3 and fields[1] == "F" and fields[3].strip() in WAITING_MESSAGES:
                count[0] += 1


def run_bos(
    producer: KafkaProducer,
    requests: int,
    label: str,
    profile: cProfile.Profile | None = None,
    trace: bool = False,
) -> tuple[Measurement, str, str]:
    """(a): the real consumer, in this process."""
    topic, group = fresh_topic(label), f"{PREFIX}.{label}"
    messages = request_messages(requests, label)
    health = ConsumerHealth(group=group, topic=topic, path=str(SCRATCH / f"{label}.json"))
    consumer = BatchRequestConsumer(
        topic=topic, group_id=group, session_timeout_ms=SESSION_TIMEOUT_MS, health=health
    )
    try:
        deadline = time.monotonic() + JOIN_TIMEOUT
        while not consumer.joined:
            if consumer.poll_once().processed or time.monotonic() > deadline:
                raise SystemExit(f"benchmark: {label}: no clean group join within {JOIN_TIMEOUT:.0f} s")
        produce(producer, topic, messages)
        handled = 0
        deadline = time.monotonic() + RUN_TIMEOUT
        with counting_statements() as statements, tracing_round_trips(trace) as round_trips:
            if profile is not None:
                profile.enable()
            started, cpu_started = time.perf_counter(), time.process_time()
            while handled < requests:
                stats = consumer.poll_once()
                if stats.dead_lettered or stats.retried:
                    raise SystemExit(f"benchmark: {label}: {stats} (see .bos/bench-ingest.log)")
                handled += stats.processed
                if time.monotonic() > deadline:
                    raise SystemExit(f"benchmark: {label}: only {handled} of {requests} handled")
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            if profile is not None:
                profile.disable()
    finally:
        consumer.close()
    return Measurement(elapsed, statements[0], round_trips[0] if trace else None, cpu), topic, group


@contextmanager
def consumer_processes(topic: str, group: str, count: int) -> Iterator[list[Path]]:
    """`count` consume_batches processes in one group; yields their health files."""
    health_files = [SCRATCH / f"{group}-{i}.json" for i in range(count)]
    with ExitStack() as stack:
        procs = []
        for i, health_file in enumerate(health_files):
            log = stack.enter_context(open(ROOT / ".bos" / f"bench-ingest-consumer-{i}.log", "wb"))
            command = [sys.executable, "manage.py", "consume_batches", "--topic", topic, "--group", group]
            command += ["--session-timeout-ms", str(SESSION_TIMEOUT_MS), "--health-file", str(health_file)]
            procs.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT
                )
            )
        try:
            yield health_files
        finally:
            for proc in procs:
                proc.terminate()  # SIGTERM: the command commits and closes
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def wait_for_group(health_files: list[Path], partitions: int) -> None:
    """Until every process is ready and the partitions are shared out, steady for 2 s."""
    deadline = time.monotonic() + JOIN_TIMEOUT
    steady_since: float | None = None
    while time.monotonic() < deadline:
        try:
            states = [json.loads(f.read_text()) for f in health_files]
        except (OSError, ValueError):
            states = []
        assigned = [p for s in states for p in s["assigned"]]
        settled = (
            len(states) == len(health_files)
            and all(s["ready"] and s["assigned"] for s in states)
            and len(assigned) == len(set(assigned)) == partitions
        )
        if not settled:
            steady_since = None
        elif steady_since is None:
            steady_since = time.monotonic()
        elif time.monotonic() - steady_since >= 2.0:
            return
        time.sleep(0.1)
    raise SystemExit(
        f"benchmark: the consumer processes did not share the partitions within {JOIN_TIMEOUT:.0f} s"
    )


def run_bos_processes(
    producer: KafkaProducer, requests: int, label: str, count: int
) -> tuple[Measurement, str, str]:
    """(a×k): `count` consume_batches processes; done when N batch rows are visible."""
    topic, group = fresh_topic(label), f"{PREFIX}.{label}"
    messages = request_messages(requests, label)
    with consumer_processes(topic, group, count) as health_files:
        wait_for_group(health_files, settings.BOS_KAFKA_REQUEST_PARTITIONS)
        produce(producer, topic, messages)
        started = time.perf_counter()
        deadline = time.monotonic() + RUN_TIMEOUT
        while stored_batches(label) < requests:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"benchmark: {label}: not all batches stored (see .bos/bench-ingest-consumer-*.log)"
                )
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    return Measurement(elapsed), topic, group


def create_scratch_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {TABLE} (event_id text PRIMARY KEY, body jsonb NOT NULL)")


def drop_scratch_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")


def run_plain(
    producer: KafkaProducer, requests: int, label: str, trace: bool = False
) -> tuple[Measurement, str, str]:
    """(b): poll, json-decode, one autocommitted INSERT per message, commit after each poll."""
    topic, group = fresh_topic(label), f"{PREFIX}.{label}"
    messages = request_messages(requests, label)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=100,
        fetch_max_wait_ms=settings.BOS_KAFKA_FETCH_MAX_WAIT_MS,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=SESSION_TIMEOUT_MS // 3,
    )
    insert = f"INSERT INTO {TABLE} (event_id, body) VALUES (%s, %s)"  # noqa: S608 - our own table name
    try:
        deadline = time.monotonic() + JOIN_TIMEOUT
        while not consumer.assignment():
            if consumer.poll(timeout_ms=500) or time.monotonic() > deadline:
                raise SystemExit(f"benchmark: {label}: no clean group join within {JOIN_TIMEOUT:.0f} s")
        produce(producer, topic, messages)
        stored = 0
        deadline = time.monotonic() + RUN_TIMEOUT
        with (
            counting_statements() as statements,
            tracing_round_trips(trace) as round_trips,
            connection.cursor() as cursor,
        ):
            started, cpu_started = time.perf_counter(), time.process_time()
            while stored < requests:
                for records in consumer.poll(timeout_ms=500, max_records=100).values():
                    for record in records:
                        message = json.loads(record.value)
                        cursor.execute(insert, [message["event_id"], record.value.decode()])
                        stored += 1
                consumer.commit()
                if time.monotonic() > deadline:
                    raise SystemExit(f"benchmark: {label}: only {stored} of {requests} stored")
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        consumer.close(autocommit=False)
    return Measurement(elapsed, statements[0], round_trips[0] if trace else None, cpu), topic, group


def count_plain(label: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {TABLE} WHERE body->'data'->>'external_id' LIKE %s", [f"{label}-%"]
        )  # noqa: S608
        return int(cursor.fetchone()[0])


# -- set-up, reporting, clean-up -------------------------------------------------------------


def log_to_file() -> Path:
    """Keep the consumer's INFO lines (paid for, as in production) off the console."""
    path = ROOT / ".bos" / "bench-ingest.log"
    path.parent.mkdir(exist_ok=True)
    stream = open(path, "w")  # noqa: SIM115 - closed at exit with the handlers
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)
    return path


def clean_up() -> None:
    drop_scratch_table()
    OutboxEvent.objects.filter(tenant__slug=TENANT).delete()
    ProcessedEvent.objects.filter(tenant__slug=TENANT).delete()
    Batch.objects.filter(tenant__slug=TENANT).delete()
    Tenant.objects.filter(slug=TENANT).delete()
    keys = list(REDIS.scan_iter(match=f"*{PREFIX}*", count=500))
    for key in REDIS.scan_iter(match=f"{REDIS_PREFIX}*", count=500):
        raw = REDIS.get(key)
        if raw and json.loads(raw).get("group", "").startswith(PREFIX):
            keys.append(key)
    if keys:
        REDIS.delete(*keys)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    delete_kafka_leftovers()


def delete_kafka_leftovers() -> None:
    """Delete this run's topics and consumer groups (the embedded broker keeps them in memory)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS)
    try:
        with suppress(KafkaError):
            groups = [g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(PREFIX)]
            if groups:
                admin.delete_groups(groups)
        with suppress(KafkaError):
            topics = [t for t in admin.list_topics() if t.startswith(PREFIX)]
            if topics:
                admin.delete_topics(topics)
    finally:
        admin.close()


def summary(values: list[float], digits: int, scale: float = 1.0) -> str:
    median = statistics.median(values) * scale
    low, high = min(values) * scale, max(values) * scale
    if len(values) == 1:
        return f"{median:,.{digits}f}"
    return f"{median:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def report(kinds: list[Kind], requests: int, repeat: int) -> None:
    plain = next(k for k in kinds if k.name == PLAIN)
    plain_rate = statistics.median(plain.rates(requests))
    table = Table(
        title=f"{requests:,} batch.requested messages ({ITEMS_PER_REQUEST} items each), median of {repeat}"
    )
    columns = (
        "consumer",
        "seconds",
        "requests/s",
        "× plain",
        "CPU ms / req",
        "SQL stmts / req",
        "DB round trips / req",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "consumer" else "right")
    for kind in kinds:
        counted = [m.statements for m in kind.runs if m.statements is not None]
        cpu = [m.cpu_seconds for m in kind.runs if m.cpu_seconds is not None]
        table.add_row(
            kind.name,
            summary([m.seconds for m in kind.runs], 2),
            summary(kind.rates(requests), 0),
            summary(kind.rates(requests), 3, 1 / plain_rate),
            f"{statistics.median(cpu) * 1000 / requests:.1f}" if cpu else "–",
            f"{statistics.median(counted) / requests:.1f}" if counted else "–",
            f"{kind.round_trips:.1f}" if kind.round_trips is not None else "–",
        )
    console.print(table)
    bos = kinds[0]
    ratio = statistics.median(bos.rates(requests)) / plain_rate
    console.print(f"(a) BOS / (b) plain, in requests/s: {ratio:.3f} (1 / {1 / ratio:.1f})")
    path = record(
        "ingest",
        [Ratio("consumer_over_plain_loop", ratio, "higher", "(a) BOS consumer requests/s / (b) plain loop")],
        context={"requests": requests},
    )
    console.print(f"ratio written to {path} (`make bench-check` compares it with benchmarks/baseline.json)")


def parse_processes(value: str) -> list[int]:
    if value.strip().lower() in ("", "0", "none"):
        return []
    try:
        counts = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of process counts, e.g. 1,3") from None
    if any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError("process counts must be at least 1")
    return counts


def measure(
    kind_index: int, processes: list[int], producer: KafkaProducer, requests: int, label: str
) -> Measurement:
    """One timed run of kind `kind_index` (0: in-process BOS, then the process counts, then plain)."""
    if kind_index == len(processes) + 1:
        measurement, topic, group = run_plain(producer, requests, label)
        if count_plain(label) != requests or committed_total(topic, group) != requests:
            raise SystemExit(f"benchmark: plain run {label} did not store and commit every message")
        return measurement
    if kind_index == 0:
        measurement, topic, group = run_bos(producer, requests, label)
    else:
        measurement, topic, group = run_bos_processes(producer, requests, label, processes[kind_index - 1])
    check_run(label, topic, group, requests)
    return measurement


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="messages per run (default 2000)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each kind; the median counts (default 3)"
    )
    parser.add_argument(
        "--warmup", type=int, default=50, help="messages of an untimed first run of (a) and (b)"
    )
    parser.add_argument(
        "--processes",
        type=parse_processes,
        default=[1, 3],
        help="consume_batches process counts to run as (a×k): 1,3 (default); 0 for none",
    )
    parser.add_argument(
        "--trace-requests",
        type=int,
        default=100,
        help="messages of the traced run counting round trips; 0: skip",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="print cProfile's top N functions of one more (a) run",
    )
    args = parser.parse_args()
    if args.requests < 1 or args.repeat < 1:
        parser.error("--requests and --repeat must be at least 1")

    SCRATCH.mkdir(mode=0o700)
    log_path = log_to_file()
    call_command("migrate", verbosity=0)
    pipeline_publish_file(BASE_DIR / "pipelines" / f"{PIPELINE}.json")
    ensure_topics([settings.BOS_TOPIC_REQUESTS, settings.BOS_TOPIC_EVENTS, settings.BOS_TOPIC_DLQ])
    create_scratch_table()
    producer = make_producer(linger_ms=5)
    kinds = [Kind("(a) BOS, in-process")]
    kinds += [Kind(f"(a×{k}) BOS, {k} process{'es' if k > 1 else ''}") for k in args.processes]
    kinds.append(Kind(PLAIN))
    try:
        console.print(f"run {RUN_ID}: warming up ({args.warmup} messages each); consumer log: {log_path}")
        if args.warmup:
            run_bos(producer, args.warmup, "warm-a")
            run_plain(producer, args.warmup, "warm-b")
            drop_queues()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("runs", total=args.repeat * len(kinds))
            for r in range(args.repeat):
                for index, kind in enumerate(kinds):
                    progress.update(bar, description=f"{kind.name}, run {r + 1}")
                    kind.runs.append(measure(index, args.processes, producer, args.requests, f"r{r}-{index}"))
                    progress.advance(bar)
        if args.trace_requests:
            console.print(
                f"counting round trips: one more run of (a) and (b), {args.trace_requests} messages each"
            )
            n = args.trace_requests
            kinds[0].round_trips = (run_bos(producer, n, "trace-a", trace=True)[0].round_trips or 0) / n
            kinds[-1].round_trips = (run_plain(producer, n, "trace-b", trace=True)[0].round_trips or 0) / n
        report(kinds, args.requests, args.repeat)
        if args.profile:
            profile = cProfile.Profile()
            run_bos(producer, args.requests, "profile", profile)
            console.print(f"cProfile of one more (a) run, top {args.profile} by cumulative time:")
            pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(args.profile)
    finally:
        producer.close(timeout=10)
        clean_up()


if __name__ == "__main__":
    main()
