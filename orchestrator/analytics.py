"""Error analytics: failures grouped into fingerprints, counted per hour, and alerts.

A *fingerprint* names a kind of failure: the sha1 of its error type, its normalized
message (numbers, ids, quoted values, paths, e-mails and URLs replaced by placeholders),
its pipeline and its phase. `analyze_errors` (a beat task, every minute) reads the item
and phase failures recorded since its last run, counts them per tenant and fingerprint
and per hour, and raises an `Alert` (with a `bos.alert` outbox event in the same
transaction) for a pattern never seen before, or for one whose rate rises sharply.
`top_errors` and `recent_alerts` are the reads behind the API, the admin and
`manage.py error_report`. See docs/errors.md.

The first part is pure (no database): `split_error`, `normalize_message`, `fingerprint`,
`sparkline`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from orchestrator.masking import mask_error
from orchestrator.models import (
    Alert,
    AnalysisWatermark,
    Batch,
    ErrorCount,
    ErrorFingerprint,
    ItemResult,
    OutboxEvent,
    PhaseRun,
    Pipeline,
    PipelineVersion,
    Tenant,
)
from orchestrator.services.events import SCHEMA_VERSION, emit
from orchestrator.states import PhaseState

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Pure part: parsing, normalizing and fingerprinting error texts
# ---------------------------------------------------------------------------------------

ITEM_ERROR_TYPE = "ItemFailed"  # an item error with no exception name (`ItemFailed` reasons)
PHASE_ERROR_TYPE = "PhaseFailed"  # a phase error with no exception name
MAX_MESSAGE = 300
MAX_ERROR_TYPE = 200
MAX_SAMPLE = 2000

_EXCEPTION_NAME = re.compile(r"(?:[A-Za-z_]\w*\.)*([A-Z]\w*)")
_EXCEPTION_SUFFIXES = (
    "Error",
    "Exception",
    "Exceeded",
    "Failed",
    "Failure",
    "Timeout",
    "Interrupt",
    "Exit",
    "Warning",
    "Iteration",
)
# Replaced in this order: a URL or a quoted value may hold a path, a path may hold ids
# and numbers, an id may hold digits.
_PLACEHOLDERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+"), "<url>"),
    (re.compile(r"\b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+\b"), "<email>"),
    (re.compile(r"""(?<!\w)(?:'[^'\n]*'|"[^"\n]*"|`[^`\n]*`)(?!\w)"""), "<str>"),
    (
        re.compile(r"(?<![\w/.~])(?:~|\.{1,2})?/[\w.@+\-]+(?:/[\w.@+\-]*)*|\b[A-Za-z]:\\[^\s'\"]+"),
        "<path>",
    ),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<id>"),
    (
        re.compile(r"\b(?:0[xX][0-9a-fA-F]+|(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,})\b"),
        "<id>",
    ),
    (re.compile(r"\d+(?:\.\d+)*"), "<n>"),
)
_WHITESPACE = re.compile(r"\s+")
_SPARKS = "▁▂▃▄▅▆▇█"


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def looks_like_exception(name: str) -> bool:
    """`TransientError`, `pybreaker.CircuitBreakerError`, `StopIteration`: yes; `Note`: no."""
    match = _EXCEPTION_NAME.fullmatch(name)
    if match is None:
        return False
    last = match.group(1)
    return last.endswith(_EXCEPTION_SUFFIXES) or re.search(r"[a-z][A-Z]", last) is not None


def split_error(text: str, default_type: str = ITEM_ERROR_TYPE) -> tuple[str, str]:
    """(error type, message) of an error text, from its first line.

    "TransientError: try 3 failed" → ("TransientError", "try 3 failed"); a text with no
    exception name before ": " (an `ItemFailed` reason) → (`default_type`, the line).
    """
    line = _first_line(text)
    head, sep, rest = line.partition(": ")
    if sep and looks_like_exception(head):
        return head[:MAX_ERROR_TYPE], rest.strip()
    if line.endswith(":") and looks_like_exception(line[:-1]):
        return line[:-1][:MAX_ERROR_TYPE], ""
    return default_type, line


def normalize_message(text: str, max_length: int = MAX_MESSAGE) -> str:
    """The first line of `text` with what varies between occurrences replaced.

    URLs → <url>, e-mails → <email>, quoted values → <str>, file paths → <path>, UUIDs
    and hex ids → <id>, numbers → <n>; whitespace collapsed; at most `max_length`
    characters. Normalizing twice gives the same text.
    """
    line = _first_line(text)
    for pattern, placeholder in _PLACEHOLDERS:
        line = pattern.sub(placeholder, line)
    line = _WHITESPACE.sub(" ", line).strip()
    if len(line) > max_length:
        line = line[: max_length - 1].rstrip() + "…"
    return line


def fingerprint(error_type: str, message: str, pipeline: str, phase: str) -> str:
    """The sha1 (hex) of the error type, the normalized message, the pipeline and the phase."""
    parts = (error_type.strip(), normalize_message(message), pipeline, phase)
    return hashlib.sha1("\x1f".join(parts).encode(), usedforsecurity=False).hexdigest()


def sparkline(values: Sequence[int]) -> str:
    """One block character a value, scaled to the largest: "▁" is zero, "█" the maximum."""
    top = max(values, default=0)
    if top <= 0:
        return _SPARKS[0] * len(values)
    return "".join(_SPARKS[0] if v <= 0 else _SPARKS[1 + round(v / top * 6)] for v in values)


def hour_of(at: datetime) -> datetime:
    """The start of the (UTC) hour holding `at`: the bucket of `ErrorCount`."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# ---------------------------------------------------------------------------------------
# Analysis: reading new failures, counting them, raising alerts
# ---------------------------------------------------------------------------------------

ITEM_RESULTS = "item_results"  # watermark: the last ItemResult id counted
PHASE_RUNS = "phase_runs"  # watermark: finished_at (epoch µs) of the last phase failure counted
NEW_ERROR_PATTERN = "new_error_pattern"
RISING_ERROR_RATE = "rising_error_rate"
ALERT_EVENT = "bos.alert"
RISING_FACTOR = 3.0
RISING_MIN = 10
BASELINE_HOURS = 24
# A pattern first seen longer ago than this (a backfill of old failures) raises no alert.
NEW_PATTERN_WINDOW = timedelta(hours=24)
# Phase failures are read only once they are this old: `phase_fail` takes its timestamp
# before it commits, so a younger one may still be on its way.
PHASE_SETTLE = timedelta(seconds=30)
# How long to wait for transactions writing ItemResults to end before deferring.
SETTLE_TIMEOUT = 5.0
PAGE = 1000

_RESULT = ItemResult._meta.db_table
_PHASE = PhaseRun._meta.db_table
_TENANT = Tenant._meta.db_table
_BATCH = Batch._meta.db_table
_VERSION = PipelineVersion._meta.db_table
_PIPELINE = Pipeline._meta.db_table
_FINGERPRINT = ErrorFingerprint._meta.db_table
_COUNT = ErrorCount._meta.db_table

# Every failure query yields: position, error, error class, when, tenant id, tenant
# slug, batch id, pipeline, phase (and, for phases, the cut-off used).
_ITEM_FAILURES = f"""
SELECT r.id, r.error, r.error_class, r.created_at, pr.tenant_id, t.slug, pr.batch_id, p.name, pr.name
FROM {_RESULT} r
JOIN {_PHASE} pr ON pr.id = r.phase_run_id
JOIN {_TENANT} t ON t.id = pr.tenant_id
JOIN {_BATCH} b ON b.id = pr.batch_id
JOIN {_VERSION} v ON v.id = b.pipeline_version_id
JOIN {_PIPELINE} p ON p.id = v.pipeline_id
WHERE r.id > %s AND r.id <= %s AND NOT r.ok
ORDER BY r.id
LIMIT %s
"""
# At most `limit` failures, but all of those sharing the last timestamp: the watermark
# then moves to that timestamp without leaving any of them behind.
_PHASE_FAILURES = f"""
WITH cut AS (
  SELECT COALESCE(
    (SELECT finished_at FROM {_PHASE}
     WHERE state = %s AND finished_at > %s AND finished_at <= %s
     ORDER BY finished_at OFFSET %s LIMIT 1),
    %s) AS at
)
SELECT pr.id, pr.error, pr.error_class, pr.finished_at, pr.tenant_id, t.slug, pr.batch_id, p.name,
       pr.name, cut.at
FROM cut, {_PHASE} pr
JOIN {_TENANT} t ON t.id = pr.tenant_id
JOIN {_BATCH} b ON b.id = pr.batch_id
JOIN {_VERSION} v ON v.id = b.pipeline_version_id
JOIN {_PIPELINE} p ON p.id = v.pipeline_id
WHERE pr.state = %s AND pr.finished_at > %s AND pr.finished_at <= cut.at
ORDER BY pr.finished_at, pr.id
"""
# Transactions that may still be writing a table: a writer holds this lock until it ends.
_WRITERS = """
FROM pg_locks WHERE locktype = 'relation' AND mode = 'RowExclusiveLock'
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND relation = %s::regclass
"""
# The largest ItemResult id, and the other transactions writing the table right now.
_ITEM_HORIZON = (
    f"SELECT (SELECT max(id) FROM {_RESULT}), ARRAY(SELECT DISTINCT virtualtransaction {_WRITERS}"
    " AND pid IS DISTINCT FROM pg_backend_pid())"
)
_STILL_WRITING = f"SELECT count(*) {_WRITERS} AND virtualtransaction = ANY(%s)"
_UPSERT_FINGERPRINTS = f"""
INSERT INTO {_FINGERPRINT} AS f (tenant_id, fingerprint, error_type, error_class, message, pipeline,
  phase, sample, sample_batch_id, count, first_seen, last_seen)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
  %s::text[], %s::text[], %s::uuid[], %s::bigint[], %s::timestamptz[], %s::timestamptz[])
ON CONFLICT (tenant_id, fingerprint) DO UPDATE SET
  count = f.count + EXCLUDED.count,
  first_seen = LEAST(f.first_seen, EXCLUDED.first_seen),
  last_seen = GREATEST(f.last_seen, EXCLUDED.last_seen),
  sample = CASE WHEN EXCLUDED.last_seen >= f.last_seen THEN EXCLUDED.sample ELSE f.sample END,
  sample_batch_id = CASE WHEN EXCLUDED.last_seen >= f.last_seen
    THEN EXCLUDED.sample_batch_id ELSE f.sample_batch_id END,
  error_class = CASE WHEN EXCLUDED.error_class <> '' THEN EXCLUDED.error_class ELSE f.error_class END
RETURNING f.id, f.tenant_id, f.fingerprint, f.count, f.first_seen
"""
_UPSERT_COUNTS = f"""
INSERT INTO {_COUNT} AS c (fingerprint_id, hour, count)
SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::integer[])
ON CONFLICT (fingerprint_id, hour) DO UPDATE SET count = c.count + EXCLUDED.count
"""
_RATES = f"""
SELECT fingerprint_id,
       COALESCE(sum(count) FILTER (WHERE hour = %s), 0),
       COALESCE(sum(count) FILTER (WHERE hour < %s), 0)
FROM {_COUNT}
WHERE fingerprint_id = ANY(%s) AND hour >= %s AND hour <= %s
GROUP BY fingerprint_id
"""


@dataclass(frozen=True)
class RaisedAlert:
    id: int
    kind: str
    tenant: str
    fingerprint: str
    message: str


@dataclass(frozen=True)
class AnalysisReport:
    """What one `analyze_errors` run did."""

    item_failures: int = 0  # failed ItemResults counted
    phase_failures: int = 0  # failed PhaseRuns counted
    fingerprints: int = 0  # fingerprints whose counts changed
    new_fingerprints: int = 0
    alerts: tuple[RaisedAlert, ...] = ()
    # Sources not read this run: transactions writing them did not end in time.
    deferred: tuple[str, ...] = ()
    # Another run held the watermarks: this one did nothing.
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "item_failures": self.item_failures,
            "phase_failures": self.phase_failures,
            "fingerprints": self.fingerprints,
            "new_fingerprints": self.new_fingerprints,
            "alerts": [{"id": a.id, "kind": a.kind, "fingerprint": a.fingerprint} for a in self.alerts],
            "deferred": list(self.deferred),
            "skipped": self.skipped,
        }


@dataclass
class _Group:
    """The failures of one (tenant, fingerprint) read in this run."""

    tenant_id: int
    tenant: str
    fingerprint: str
    error_type: str
    message: str
    pipeline: str
    phase: str
    first_seen: datetime
    last_seen: datetime
    sample: str = ""
    sample_batch: uuid.UUID | None = None
    error_class: str = ""
    count: int = 0
    hours: Counter[datetime] = field(default_factory=Counter)

    def add(self, *, at: datetime, error: str, error_class: str, batch_id: uuid.UUID | None) -> None:
        self.count += 1
        self.hours[hour_of(at)] += 1
        self.first_seen = min(self.first_seen, at)
        if at >= self.last_seen or not self.sample:
            self.last_seen = max(self.last_seen, at)
            # Errors are stored masked; masked again for rows recorded before masking was.
            self.sample, self.sample_batch = mask_error(error[: MAX_SAMPLE * 2])[:MAX_SAMPLE], batch_id
        self.error_class = error_class or self.error_class


Groups = dict[tuple[int, str], _Group]


def collect_failure(groups: Groups, row: Sequence[Any], default_type: str) -> None:
    """Add one failure row (see the queries above) to its group."""
    _, error, error_class, at, tenant_id, tenant, batch_id, pipeline, phase = row[:9]
    error_type, message = split_error(error or "", default_type)
    normalized = normalize_message(message)
    key = (tenant_id, fingerprint(error_type, normalized, pipeline, phase))
    group = groups.get(key)
    if group is None:
        group = groups[key] = _Group(
            tenant_id=tenant_id,
            tenant=tenant,
            fingerprint=key[1],
            error_type=error_type,
            message=mask_error(normalized),
            pipeline=pipeline,
            phase=phase,
            first_seen=at,
            last_seen=at,
        )
    group.add(at=at, error=error or "", error_class=error_class or "", batch_id=batch_id)


def _to_micros(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _from_micros(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _settled_item_horizon(timeout: float) -> int | None:
    """The largest ItemResult id at or below which no new row can still appear, or None.

    Ids are taken when rows are inserted but become visible when their transaction
    commits, not in id order: a lower id may appear after a higher one was read. So
    the horizon is the largest visible id once every transaction that was writing the
    table at that moment has ended (found in `pg_locks`: a writer holds its lock on the
    table until it ends). None if they did not end within `timeout` seconds.
    """
    with connection.cursor() as cursor:
        cursor.execute(_ITEM_HORIZON, [_RESULT])
        high, writers = cursor.fetchone() or (None, [])
        deadline, pause = time.monotonic() + timeout, 0.02
        while writers:
            cursor.execute(_STILL_WRITING, [_RESULT, list(writers)])
            row = cursor.fetchone()
            if not row or not row[0]:
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
    return int(high or 0)


def _stream(sql: str, params: Sequence[Any], page: int = PAGE) -> Iterator[tuple[Any, ...]]:
    """Rows of one query, fetched `page` at a time from a server-side cursor."""
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(page):
            yield from rows


def _lock_watermarks() -> dict[str, int] | None:
    """The two watermarks, locked until the transaction ends; None if another run has them."""
    names = (ITEM_RESULTS, PHASE_RUNS)
    AnalysisWatermark.objects.bulk_create([AnalysisWatermark(name=n) for n in names], ignore_conflicts=True)
    marks = dict(
        AnalysisWatermark.objects.select_for_update(skip_locked=True)
        .filter(name__in=names)
        .values_list("name", "position")
    )
    return marks if len(marks) == len(names) else None


def _read_items(groups: Groups, *, after: int, upto: int, limit: int) -> tuple[int, int]:
    """Count failed ItemResults with after < id ≤ upto (at most `limit`): (count, new position)."""
    if upto <= after:
        return 0, after
    read, last = 0, after
    for row in _stream(_ITEM_FAILURES, [after, upto, limit]):
        collect_failure(groups, row, ITEM_ERROR_TYPE)
        read, last = read + 1, row[0]
    # Fewer than `limit`: every id up to the horizon was read (most of them succeeded).
    return read, upto if read < limit else last


def _read_phases(groups: Groups, *, after: int, upto: datetime, limit: int) -> tuple[int, int]:
    """Count failed PhaseRuns finished in (after, upto]: (count, new position in epoch µs)."""
    start = _from_micros(after)
    if upto <= start:
        return 0, after
    failed = PhaseState.FAILED.value
    read, cut = 0, upto
    params = [failed, start, upto, max(limit - 1, 0), upto, failed, start]
    for row in _stream(_PHASE_FAILURES, params):
        collect_failure(groups, row, PHASE_ERROR_TYPE)
        read, cut = read + 1, row[9]
    return read, max(after, _to_micros(cut))


def _unnest_columns(groups: Sequence[_Group]) -> list[list[Any]]:
    return [
        [g.tenant_id for g in groups],
        [g.fingerprint for g in groups],
        [g.error_type for g in groups],
        [g.error_class for g in groups],
        [g.message for g in groups],
        [g.pipeline for g in groups],
        [g.phase for g in groups],
        [g.sample for g in groups],
        [g.sample_batch for g in groups],
        [g.count for g in groups],
        [g.first_seen for g in groups],
        [g.last_seen for g in groups],
    ]


@dataclass(frozen=True)
class _Stored:
    id: int
    group: _Group
    is_new: bool  # the row did not exist before this run
    first_seen: datetime


def _store_counts(groups: Groups) -> list[_Stored]:
    """Upsert the fingerprints and their hourly counts: two statements, whatever the sizes."""
    ordered = list(groups.values())
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT_FINGERPRINTS, _unnest_columns(ordered))
        returned = {(t, fp): (id_, total, first) for id_, t, fp, total, first in cursor.fetchall()}
        stored = []
        for g in ordered:
            id_, total, first = returned[(g.tenant_id, g.fingerprint)]
            # Its total is exactly what this run added: the row is new.
            stored.append(_Stored(id=id_, group=g, is_new=total == g.count, first_seen=first))
        hourly = [(s.id, hour, n) for s in stored for hour, n in sorted(s.group.hours.items())]
        cursor.execute(
            _UPSERT_COUNTS, [[h[0] for h in hourly], [h[1] for h in hourly], [h[2] for h in hourly]]
        )
    return stored


def _details(group: _Group, **extra: Any) -> dict[str, Any]:
    return {
        "fingerprint": group.fingerprint,
        "error_type": group.error_type,
        "error_class": group.error_class,
        "message": group.message,
        "pipeline": group.pipeline,
        "phase": group.phase,
        "sample": group.sample[:500],
        "sample_batch_id": str(group.sample_batch) if group.sample_batch else None,
        **extra,
    }


def _new_pattern_alerts(stored: Iterable[_Stored], now: datetime) -> list[tuple[Alert, _Group]]:
    alerts = []
    for s in stored:
        if s.is_new and s.first_seen >= now - NEW_PATTERN_WINDOW:
            g = s.group
            alert = Alert(
                tenant_id=g.tenant_id,
                kind=NEW_ERROR_PATTERN,
                fingerprint_id=s.id,
                message=f"New error pattern in {g.pipeline}/{g.phase}: {g.error_type}: {g.message}",
                details=_details(g, count=g.count, first_seen=s.first_seen.isoformat()),
            )
            alerts.append((alert, g))
    return alerts


def _rising_alerts(
    stored: Sequence[_Stored], *, now: datetime, factor: float, minimum: int
) -> list[tuple[Alert, _Group]]:
    """Fingerprints whose count this hour is ≥ factor × their hourly average over the 24
    hours before, and ≥ minimum; at most one alert per fingerprint and hour. Patterns
    first seen this hour are left to their new-pattern alert."""
    hour = hour_of(now)
    eligible = {s.id: s for s in stored if s.first_seen < hour}
    if not eligible:
        return []
    start = hour - timedelta(hours=BASELINE_HOURS)
    rising: dict[int, tuple[int, float]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_RATES, [hour, hour, list(eligible), start, hour])
        for fingerprint_id, current, previous in cursor.fetchall():
            average = previous / BASELINE_HOURS
            if current >= minimum and current >= factor * average:
                rising[fingerprint_id] = (int(current), float(average))
    if not rising:
        return []
    hour_iso = hour.isoformat()
    already = set(
        Alert.objects.filter(
            kind=RISING_ERROR_RATE, fingerprint_id__in=list(rising), details__hour=hour_iso
        ).values_list("fingerprint_id", flat=True)
    )
    alerts = []
    for fingerprint_id, (current, average) in rising.items():
        if fingerprint_id in already:
            continue
        g = eligible[fingerprint_id].group
        alert = Alert(
            tenant_id=g.tenant_id,
            kind=RISING_ERROR_RATE,
            fingerprint_id=fingerprint_id,
            message=(
                f"Rising error rate in {g.pipeline}/{g.phase}: {current} this hour, "
                f"{average:.1f}/h over the previous {BASELINE_HOURS} h: {g.error_type}: {g.message}"
            ),
            details=_details(
                g,
                hour=hour_iso,
                count_this_hour=current,
                average_per_hour=round(average, 3),
                factor=factor,
                minimum=minimum,
            ),
        )
        alerts.append((alert, g))
    return alerts


def envelope(
    *,
    tenant: str,
    event_type: str,
    at: datetime,
    data: dict[str, Any],
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """An event envelope of the same shape as `event_envelope`'s, for an event of no batch."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "correlation_id": correlation_id,
        "tenant": tenant,
        "data": data,
    }


def alert_data(alert: Alert, fingerprint_hex: str) -> dict[str, Any]:
    return {
        "alert_id": alert.id,
        "kind": alert.kind,
        "fingerprint": fingerprint_hex,
        "message": alert.message,
        "details": alert.details,
        "created_at": alert.created_at.isoformat().replace("+00:00", "Z"),
    }


def alert_event(alert: Alert, *, tenant_id: int, tenant: str, fingerprint_hex: str) -> OutboxEvent:
    """The `bos.alert` outbox row of a saved alert (of a tenant), keyed by its fingerprint."""
    env = envelope(
        tenant=tenant, event_type=ALERT_EVENT, at=alert.created_at, data=alert_data(alert, fingerprint_hex)
    )
    return OutboxEvent(
        event_id=env["event_id"],
        tenant_id=tenant_id,
        batch=None,
        event_type=ALERT_EVENT,
        key=fingerprint_hex,
        envelope=env,
    )


def _raise_alerts(pending: list[tuple[Alert, _Group]]) -> tuple[RaisedAlert, ...]:
    if not pending:
        return ()
    Alert.objects.bulk_create([alert for alert, _ in pending])
    emit(
        alert_event(a, tenant_id=g.tenant_id, tenant=g.tenant, fingerprint_hex=g.fingerprint)
        for a, g in pending
    )
    for alert, g in pending:
        logger.warning("alert %s (%s): %s", alert.kind, g.tenant, alert.message)
    return tuple(RaisedAlert(a.id, a.kind, g.tenant, g.fingerprint, a.message) for a, g in pending)


def _save_watermarks(positions: dict[str, int]) -> None:
    at = timezone.now()
    AnalysisWatermark.objects.bulk_update(
        [AnalysisWatermark(name=name, position=pos, updated_at=at) for name, pos in positions.items()],
        ["position", "updated_at"],
    )


def analyze_errors(
    *,
    now: datetime | None = None,
    batch_limit: int = 5000,
    rising_factor: float = RISING_FACTOR,
    rising_min: int = RISING_MIN,
    phase_settle: timedelta = PHASE_SETTLE,
    settle_timeout: float = SETTLE_TIMEOUT,
) -> AnalysisReport:
    """Count the failures recorded since the last run and raise the alerts they call for.

    Reads failed ItemResults by id and failed PhaseRuns by `finished_at` after their
    watermarks, at most `batch_limit` of each, one streamed query each; upserts the
    fingerprints and hourly counts in two statements; raises `new_error_pattern` and
    `rising_error_rate` alerts with their `bos.alert` outbox events. All of it, and the
    watermarks, in one transaction: a run counts every failure exactly once, and a run
    that overlaps another (it holds the watermarks) does nothing. The number of queries
    does not depend on the number of failures.
    """
    now = now or timezone.now()
    item_horizon = _settled_item_horizon(settle_timeout)
    with transaction.atomic():
        marks = _lock_watermarks()
        if marks is None:
            return AnalysisReport(skipped=True)
        groups: Groups = {}
        items, item_position = 0, marks[ITEM_RESULTS]
        if item_horizon is not None:
            items, item_position = _read_items(
                groups, after=marks[ITEM_RESULTS], upto=item_horizon, limit=batch_limit
            )
        phases, phase_position = _read_phases(
            groups, after=marks[PHASE_RUNS], upto=now - phase_settle, limit=batch_limit
        )
        raised: tuple[RaisedAlert, ...] = ()
        stored: list[_Stored] = []
        if groups:
            stored = _store_counts(groups)
            pending = _new_pattern_alerts(stored, now)
            pending += _rising_alerts(stored, now=now, factor=rising_factor, minimum=rising_min)
            raised = _raise_alerts(pending)
        _save_watermarks({ITEM_RESULTS: item_position, PHASE_RUNS: phase_position})
    return AnalysisReport(
        item_failures=items,
        phase_failures=phases,
        fingerprints=len(stored),
        new_fingerprints=sum(1 for s in stored if s.is_new),
        alerts=raised,
        deferred=(ITEM_RESULTS,) if item_horizon is None else (),
    )


# ---------------------------------------------------------------------------------------
# Reads: the API, the admin and the report command
# ---------------------------------------------------------------------------------------


def _trends(fingerprint_ids: Sequence[int], now: datetime) -> dict[int, list[int]]:
    """Counts of the last 24 hours per fingerprint, oldest first, the current hour last."""
    end = hour_of(now)
    start = end - timedelta(hours=BASELINE_HOURS - 1)
    trends = {fid: [0] * BASELINE_HOURS for fid in fingerprint_ids}
    rows = ErrorCount.objects.filter(
        fingerprint_id__in=list(fingerprint_ids), hour__gte=start, hour__lte=end
    ).values_list("fingerprint_id", "hour", "count")
    for fid, hour, count in rows:
        trends[fid][int((hour - start) // timedelta(hours=1))] += count
    return trends


def top_errors(
    tenant_ids: Iterable[int],
    *,
    since: datetime | None = None,
    limit: int = 20,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The most frequent error fingerprints of these tenants, with their 24-hour trend.

    Without `since`: by all-time count. With it: fingerprints seen since then, counted
    (and ranked) over the hours from the one holding `since`. Two queries.
    """
    now = now or timezone.now()
    qs = ErrorFingerprint.objects.filter(tenant_id__in=list(tenant_ids))
    if since is not None:
        qs = qs.filter(last_seen__gte=since).annotate(
            total=Coalesce(Sum("counts__count", filter=Q(counts__hour__gte=hour_of(since))), 0)
        )
        qs = qs.order_by("-total", "-last_seen", "id")
    else:
        qs = qs.order_by("-count", "-last_seen", "id")
    fields = [
        "id",
        "fingerprint",
        "tenant__slug",
        "error_type",
        "error_class",
        "message",
        "pipeline",
        "phase",
        "count",
        "first_seen",
        "last_seen",
        "sample",
        "sample_batch_id",
    ]
    rows = list(qs.values(*fields, *(["total"] if since is not None else []))[:limit])
    trends = _trends([r["id"] for r in rows], now)
    return [
        {
            "fingerprint": r["fingerprint"],
            "tenant": r["tenant__slug"],
            "error_type": r["error_type"],
            "error_class": r["error_class"],
            "message": r["message"],
            "pipeline": r["pipeline"],
            "phase": r["phase"],
            "count": r["total"] if since is not None else r["count"],
            "first_seen": r["first_seen"],
            "last_seen": r["last_seen"],
            "sample": r["sample"],
            "sample_batch": str(r["sample_batch_id"]) if r["sample_batch_id"] else None,
            "trend": trends[r["id"]],
        }
        for r in rows
    ]


def recent_alerts(tenant_ids: Iterable[int], limit: int = 50) -> list[dict[str, Any]]:
    """The latest alerts of these tenants, newest first. One query."""
    rows = (
        Alert.objects.filter(tenant_id__in=list(tenant_ids))
        .order_by("-created_at", "-id")
        .values(
            "id",
            "kind",
            "tenant__slug",
            "fingerprint__fingerprint",
            "message",
            "details",
            "created_at",
            "acknowledged_at",
        )[:limit]
    )
    return [
        {
            "id": r["id"],
            "kind": r["kind"],
            "tenant": r["tenant__slug"],
            "fingerprint": r["fingerprint__fingerprint"],
            "message": r["message"],
            "details": r["details"],
            "created_at": r["created_at"],
            "acknowledged_at": r["acknowledged_at"],
        }
        for r in rows
    ]
