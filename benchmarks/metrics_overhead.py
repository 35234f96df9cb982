"""`python -m benchmarks.metrics_overhead` (`make bench-metrics`): what metrics cost.

Measures, on the configured PostgreSQL and this machine's metrics folder:
  - a `SELECT 1` round trip without and with the query meter (the execute wrapper every
    request and task runs under), alternated round by round, and the meter alone around
    an execute that does nothing (its own cost per query, free of the database's noise);
  - one HTTP request's recording (counter + histogram, multiprocess files);
  - one task's recording (queue wait, duration, busy seconds);
  - one scrape of the process-local families (the multiprocess folder read under its lock).
Prints microseconds per operation (median of 5 rounds).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bos_project.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from orchestrator.observability import metrics, multiprocess  # noqa: E402
from orchestrator.observability.queries import QueryMeter, metered  # noqa: E402

ROUNDS = 5


def per_op(run: Callable[[int], None], n: int) -> float:
    """Median microseconds per operation of `run(n)` over ROUNDS rounds."""
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        run(n)
        times.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(times)


def queries(n: int) -> None:
    with connection.cursor() as cursor:
        for _ in range(n):
            cursor.execute("SELECT 1")


def metered_queries(n: int) -> None:
    with metered("task", lambda: "bench"):
        queries(n)


def meter_alone(n: int) -> None:
    meter = QueryMeter(scope="task", name=lambda: "bench", slow_ms=200.0)
    for _ in range(n):
        meter(_no_query, "SELECT 1", None, False, None)


def _no_query(sql: str, params: object, many: bool, context: object) -> None:
    return None


def http_records(n: int) -> None:
    for _ in range(n):
        metrics.record_http_request(view="bench", method="GET", status=200, seconds=0.01)


def task_records(n: int) -> None:
    for _ in range(n):
        metrics.record_task_started(task="bench", queue="bench", waited=0.01)
        metrics.record_task_finished(task="bench", state="SUCCESS", seconds=0.01)


def scrapes(n: int) -> None:
    path = multiprocess.active_path()
    assert path is not None
    registry = CollectorRegistry()
    registry.register(multiprocess.LockedMultiProcessCollector(path))
    for _ in range(n):
        generate_latest(registry)


def main() -> None:
    queries(2000)  # connect and warm up
    # Alternated, so load on the machine falls on both alike.
    plain_runs, metered_runs = [], []
    for _ in range(ROUNDS):
        plain_runs.append(per_op(queries, 1000))
        metered_runs.append(per_op(metered_queries, 1000))
    plain, with_meter = statistics.median(plain_runs), statistics.median(metered_runs)
    table = Table(title="metrics overhead (µs per operation, median of 5 rounds)")
    table.add_column("operation")
    table.add_column("µs", justify="right")
    table.add_row("SELECT 1, no meter", f"{plain:.1f}")
    table.add_row("SELECT 1, metered", f"{with_meter:.1f}")
    table.add_row("difference", f"{with_meter - plain:.1f}")
    table.add_row("the meter around a no-op execute", f"{per_op(meter_alone, 20000):.2f}")
    table.add_row("record one HTTP request", f"{per_op(http_records, 5000):.1f}")
    table.add_row("record one task (start + end)", f"{per_op(task_records, 5000):.1f}")
    folder = multiprocess.active_path()
    files = len(list(folder.glob("*.db"))) if folder else 0
    table.add_row(f"scrape of the folder ({files} files)", f"{per_op(scrapes, 20):.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
