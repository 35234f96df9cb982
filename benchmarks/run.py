"""`python -m benchmarks.run` (`make bench`): BOS beside hand-written Celery, same run.

Runs 2,000 essays through the demo pipeline three ways on one Celery worker process
(concurrency 2) and the same Redis and PostgreSQL:
  (a) BOS,
  (b) hand-written chords with one task per item per phase,
  (c) hand-written chunked chords (100 items per task, one write per chunk),
then the latency of a 1-item batch from the Kafka request to its `batch.completed`
event, through the real consumer and outbox publisher processes. Prints a table.

With `--otlp`, every process exports traces (OpenTelemetry, OTLP/HTTP) to a receiver
started here, which decodes and keeps the spans as a collector would: the cost of tracing
(docs/benchmarks.md, "Cost of tracing"). This process then traces its own batch intake too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = uuid.uuid4().hex[:8]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bos_project.settings")
os.environ["BOS_QUEUE_PREFIX"] = f"bench-{RUN_ID}."
os.environ["BOS_TOPIC_REQUESTS"] = f"bench-{RUN_ID}.requested"
os.environ["BOS_TOPIC_EVENTS"] = f"bench-{RUN_ID}.events"
os.environ["BOS_TOPIC_DLQ"] = f"bench-{RUN_ID}.dlq"
os.environ["BOS_CONSUMER_GROUP"] = f"bench-{RUN_ID}"

import django  # noqa: E402
import psutil  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import track  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks import baseline_tasks  # noqa: E402
from benchmarks.results import Ratio, record  # noqa: E402
from benchmarks.roundtrip import kafka_round_trip_ms  # noqa: E402
from orchestrator.kafka.clients import ensure_topics, make_producer  # noqa: E402
from orchestrator.management.commands.demo import sample_essays  # noqa: E402
from orchestrator.models import Batch, ProcessedEvent, Tenant  # noqa: E402
from orchestrator.observability import tracing  # noqa: E402
from orchestrator.services.batches import BatchRequest, batch_create  # noqa: E402

TENANT = "bench"
console = Console()


@contextmanager
def process(args: list[str], name: str) -> Iterator[subprocess.Popen[bytes]]:
    log_path = ROOT / ".bos" / f"bench-{name}.log"
    log_path.parent.mkdir(exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def cpu_seconds(*procs: subprocess.Popen[bytes]) -> float:
    """User + system CPU the processes and their children (a worker's pool) have used so far:
    what a run costs, whatever else the machine is doing meanwhile."""
    total = 0.0
    for proc in procs:
        try:
            root = psutil.Process(proc.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for member in family:
            try:
                times = member.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"benchmark: timed out waiting for {what}")


def _traced(name: str) -> AbstractContextManager[Any]:
    """A root span for a batch sent from here (with --otlp), so its work is one trace."""
    return tracing.tracer().start_as_current_span(name) if tracing.enabled() else nullcontext()


def run_bos(items: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    with _traced("benchmark batch"):
        batch = batch_create(
            request=BatchRequest(
                tenant=TENANT, external_id=f"bench-{uuid.uuid4().hex}", pipeline="essay-analysis", items=items
            ),
            actor="benchmark",
        ).batch
    with tracing.quiet():  # the polling below is the benchmark's, not BOS's
        return _finished(batch, started)


def _finished(batch: Batch, started: float) -> float:
    state = wait_for(
        lambda: (
            Batch.objects.filter(id=batch.id, state__in=["completed", "completed_with_errors", "failed"])
            .values_list("state", flat=True)
            .first()
        ),
        timeout=600,
        what="the BOS batch",
    )
    elapsed = time.perf_counter() - started
    if state == "failed":
        raise SystemExit(f"benchmark: BOS batch {batch.id} failed")
    return elapsed


def run_baseline(start: Callable[[str, list[tuple[str, str]]], None], items: list[dict[str, Any]]) -> float:
    from django.db import connection

    run = uuid.uuid4().hex
    pairs = [(i["key"], i["payload"]["text"]) for i in items]
    started = time.perf_counter()
    start(run, pairs)

    def done() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {baseline_tasks.TABLE}_done WHERE run=%s", [run])  # noqa: S608
            return cursor.fetchone() is not None

    with tracing.quiet():
        wait_for(done, timeout=900, what="the baseline run")
    return time.perf_counter() - started


def measure_latency(runs: int, worker: subprocess.Popen[bytes]) -> tuple[list[float], float]:
    """Milliseconds from sending a 1-item request to reading its batch.completed event; and
    the CPU milliseconds per request of the consumer, publisher and worker together."""
    ensure_topics([settings.BOS_TOPIC_REQUESTS, settings.BOS_TOPIC_EVENTS, settings.BOS_TOPIC_DLQ])
    python = sys.executable
    latencies: list[float] = []
    with (
        process(
            [python, "manage.py", "consume_batches", "--session-timeout-ms", "6000"], "consumer"
        ) as consumer,
        process([python, "manage.py", "publish_outbox"], "publisher") as publisher,
    ):
        cpu = 0.0
        events = KafkaConsumer(
            bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, group_id=None, fetch_max_wait_ms=5
        )
        # A batch's events go to the partition of its key: read them all.
        events.assign(
            [TopicPartition(settings.BOS_TOPIC_EVENTS, p) for p in range(settings.BOS_KAFKA_EVENT_PARTITIONS)]
        )
        producer = make_producer(linger_ms=0)
        for i in track(range(runs + 2), description="latency", console=console):
            external_id = f"latency-{RUN_ID}-{i}"
            message = {
                "event_id": str(uuid.uuid4()),
                "event_type": "batch.requested",
                "schema_version": 1,
                "tenant": TENANT,
                "data": {"external_id": external_id, "pipeline": "essay-analysis", "items": sample_essays(1)},
            }
            if i == 2:
                cpu = cpu_seconds(consumer, publisher, worker)
            started = time.perf_counter()
            producer.send(
                settings.BOS_TOPIC_REQUESTS,
                key=f"{TENANT}:{external_id}".encode(),
                value=json.dumps(message).encode(),
            )
            producer.flush()
            deadline = time.monotonic() + 60
            found = False
            while not found and time.monotonic() < deadline:
                for records in events.poll(timeout_ms=5).values():
                    for record in records:
                        event = json.loads(record.value)
                        if (
                            event["event_type"] == "batch.completed"
                            and event["data"]["external_id"] == external_id
                        ):
                            found = True
            if not found:
                raise SystemExit("benchmark: no batch.completed event within 60 s")
            if i >= 2:  # the first two warm up the consumer's group join and the worker
                latencies.append((time.perf_counter() - started) * 1000)
        cpu = cpu_seconds(consumer, publisher, worker) - cpu
        producer.close()
        events.close()
    return latencies, cpu * 1000 / runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of (a) and (c); the median counts")
    parser.add_argument("--skip-naive", action="store_true", help="skip (b), which takes about 40 s")
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument(
        "--otlp",
        action="store_true",
        help="every process exports traces over OTLP/HTTP to a receiver started here (the cost of tracing)",
    )
    args = parser.parse_args()
    receiver = None
    if args.otlp:
        from tests.support.otlp import OtlpReceiver

        receiver = OtlpReceiver()
        threading.Thread(target=receiver.serve_forever, name="otlp-receiver", daemon=True).start()
        # Read by the processes started below (and by this one's set-up).
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        tracing.setup("web")

    call_command("migrate", verbosity=0)
    call_command("publish_pipelines", stdout=open(os.devnull, "w"))  # noqa: SIM115
    baseline_tasks.create_table()
    items = sample_essays(args.items)
    rows: list[tuple[str, float]] = []
    worker = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bos_project",
        "worker",
        "-c",
        "2",
        "-l",
        "warning",
        "-I",
        "benchmarks.baseline_tasks",
        "-n",
        f"bench-{RUN_ID}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    from bos_project.celery import app

    try:
        with process(worker, "worker") as worker_proc:
            wait_for(lambda: app.control.ping(timeout=0.5), timeout=60, what="the worker", interval=0.1)
            console.print(f"worker up; warming up, then {args.items} essays × {args.repeat} runs")
            run_bos(items[:50])
            run_baseline(baseline_tasks.start_chunked, items[:50])
            cpu = cpu_seconds(worker_proc)
            bos = [run_bos(items) for _ in track(range(args.repeat), description="(a) BOS", console=console)]
            cpu_bos, cpu = (cpu_seconds(worker_proc) - cpu) / args.repeat, cpu_seconds(worker_proc)
            chunked = [
                run_baseline(baseline_tasks.start_chunked, items)
                for _ in track(range(args.repeat), description="(c) chunked", console=console)
            ]
            cpu_chunked = (cpu_seconds(worker_proc) - cpu) / args.repeat
            rows.append(("(a) BOS", statistics.median(bos)))
            if not args.skip_naive:
                console.print("(b) one task per item per phase …")
                rows.append(
                    ("(b) Celery, a task per item per phase", run_baseline(baseline_tasks.start_naive, items))
                )
            rows.append(("(c) Celery, chunked chords, a write per chunk", statistics.median(chunked)))
            latencies, cpu_latency = measure_latency(args.latency_runs, worker_proc)
            round_trip = kafka_round_trip_ms(max(100, args.latency_runs), topic_prefix=f"bench-{RUN_ID}.")
    finally:
        baseline_tasks.drop_table()
        ProcessedEvent.objects.filter(tenant__slug=TENANT).delete()
        Batch.objects.filter(tenant__slug=TENANT).delete()
        Tenant.objects.filter(slug=TENANT).delete()

    reference = dict(rows)["(c) Celery, chunked chords, a write per chunk"]
    table = Table(title=f"{args.items} essays through essay-analysis (median of {args.repeat} for a and c)")
    for column in ("run", "seconds", "essays/s", "× (c)"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for name, seconds in rows:
        table.add_row(name, f"{seconds:.3f}", f"{args.items / seconds:,.0f}", f"{seconds / reference:.2f}")
    console.print(table)
    ratio = dict(rows)["(a) BOS"] / reference
    verdict = "[green]within[/]" if ratio <= 1.5 else "[red]NOT within[/]"
    console.print(f"BOS / hand-written chunked = {ratio:.2f}: {verdict} the 1.5× target")
    p50 = statistics.median(latencies)
    p95 = sorted(latencies)[max(0, int(len(latencies) * 0.95) - 1)]
    console.print(
        f"1-item batch, Kafka request → batch.completed event: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
        f"min {min(latencies):.1f} ms over {len(latencies)} runs (target p50 ≤ 50 ms); "
        f"the broker's own round trip: {round_trip:.1f} ms (× {p50 / round_trip:.1f})"
    )
    named = dict(rows)
    ratios = [Ratio("bos_over_chunked", ratio, "lower", "(a) BOS seconds / (c) hand-written chunked chords")]
    if "(b) Celery, a task per item per phase" in named:
        naive = named["(b) Celery, a task per item per phase"]
        ratios.append(
            Ratio("bos_over_naive", named["(a) BOS"] / naive, "lower", "(a) BOS / (b) a task per item")
        )
    ratios.append(
        Ratio(
            "latency_p50_over_kafka_round_trip",
            p50 / round_trip,
            "lower",
            "1-item p50 / the broker's round trip",
        )
    )
    path = record(
        "bench",
        ratios,
        context={
            "items": args.items,
            "repeat": args.repeat,
            "latency_p50_ms": round(p50, 1),
            "round_trip_ms": round(round_trip, 1),
        },
    )
    console.print(
        f"ratios written to {path} (`make bench-check` compares them with benchmarks/baseline.json)"
    )
    console.print(
        f"worker CPU per run: (a) {cpu_bos:.2f} s, (c) {cpu_chunked:.2f} s; "
        f"1-item batch: {cpu_latency:.1f} CPU ms (consumer + publisher + worker)"
    )
    if receiver is not None:
        tracing.shutdown()
        spans = receiver.received()
        console.print(
            f"traces: {len(spans):,} spans in {receiver.requests:,} OTLP requests from "
            f"{len({s.service for s in spans})} services, {len({s.trace_id for s in spans}):,} traces"
        )
        receiver.shutdown()


if __name__ == "__main__":
    main()
