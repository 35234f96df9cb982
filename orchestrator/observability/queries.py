"""Database queries counted and timed per HTTP request and per Celery task.

`metered(scope, name)` installs a Django `connection.execute_wrapper` for the block: every
query on the default connection is counted and timed; one slower than the runtime
setting `BOS_SLOW_QUERY_MS` (read once at the block's start) is logged at WARNING with its
SQL fingerprint (literals taken out, orchestrator/observability/sql.py), never its
parameters. At the end the totals go to `bos_db_queries`, `bos_db_query_seconds` and
`bos_db_slow_queries`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from django.db import connection

from orchestrator.config import runtime
from orchestrator.observability import metrics
from orchestrator.observability.sql import fingerprint, fingerprint_id

logger = structlog.get_logger(__name__)
# The longest SQL text a slow-query line carries (its fingerprint, not the statement).
MAX_LOGGED_SQL = 2000


class QueryMeter:
    """An execute wrapper that counts and times queries and logs the slow ones."""

    def __init__(self, *, scope: str, name: Callable[[], str], slow_ms: float) -> None:
        self.scope = scope
        self.name = name
        self.slow_ms = slow_ms
        self.queries = 0
        self.seconds = 0.0
        self.slow = 0

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            self.queries += 1
            self.seconds += elapsed
            if elapsed * 1000 >= self.slow_ms:
                self.slow += 1
                self._log_slow(sql, elapsed)

    def _log_slow(self, sql: str, elapsed: float) -> None:
        logger.warning(
            "slow query",
            duration_ms=round(elapsed * 1000, 1),
            threshold_ms=self.slow_ms,
            sql_fingerprint=fingerprint(sql)[:MAX_LOGGED_SQL],
            fingerprint_id=fingerprint_id(sql),
            scope=self.scope,
            name=self.name(),
        )

    def record(self) -> None:
        metrics.record_db_usage(
            scope=self.scope, name=self.name(), queries=self.queries, seconds=self.seconds, slow=self.slow
        )


def slow_query_ms() -> float:
    return float(runtime("slow_query_ms"))


@contextmanager
def metered(scope: str, name: Callable[[], str]) -> Iterator[QueryMeter]:
    """Count the block's queries; `name` is asked at the end (a view is known only then)."""
    meter = QueryMeter(scope=scope, name=name, slow_ms=slow_query_ms())
    try:
        with connection.execute_wrapper(meter):
            yield meter
    finally:
        meter.record()
