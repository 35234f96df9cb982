"""Execution metrics and profiling of pipelines: reads only.

Three levels, each a fixed number of queries whatever the number of batches:

- `phase_run_metrics(batch_id)`: each phase run of one batch — queue wait, run time,
  total, items/s, chunks, retries, chunk run-time p50/p95.
- `version_stats(pipeline, tenant_ids=...)`: the versions of a pipeline side by side —
  batches by state, batch duration p50/p95, and per phase run time and queue wait
  p50/p95, over the batches of the given tenants (a reader sees their tenants' only).
- `profile_pipeline(pipeline, ...)`: one version over its latest finished batches —
  per phase mean/p50/p95 queue wait and run time, items/s and retries, the critical
  path through the phase DAG and the bottleneck, with the reason it was chosen.

Timings of a phase run: `started_at` is when it was dispatched, its *work start* when a
worker first took it up: `work_started_at`, or, where that is not recorded (or is older
than the dispatch: an earlier attempt's), the first chunk's `started_at` since the
dispatch for a per-item phase. Queue wait = work start − dispatch; run time
= finish − work start (finish − dispatch when the work start is unknown, whose queue
wait is then unknown); total = finish − dispatch. Negative differences (clocks of
different hosts) count as 0.

Percentiles are PostgreSQL's `percentile_cont` (linear interpolation), computed in the
database. `critical_path` and `choose_bottleneck` are pure, tested without a database.
See docs/profiling.md.
"""

from __future__ import annotations

import graphlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple
from uuid import UUID

from django.db import connection
from django.db.models import Aggregate, Count, DurationField, F, QuerySet, Value
from django.db.models.expressions import Combinable
from django.db.models.functions import Greatest

from orchestrator.errors import NotFound
from orchestrator.models import Batch, ChunkRun, PhaseRun, Pipeline, PipelineVersion
from orchestrator.pipelines import PipelineDefinitionError
from orchestrator.selectors import pipeline_plan
from orchestrator.states import PhaseState

# Phase runs that ran to an end count in the aggregate figures; skipped and cancelled
# ones did no (or no complete) work.
RAN_STATES = (PhaseState.SUCCEEDED.value, PhaseState.FAILED.value)


# --- Data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseRunMetrics:
    """One phase run of one batch. Durations in seconds; None when not known (yet)."""

    phase_run_id: int
    phase: str
    mode: str
    state: str
    dispatched_at: datetime | None
    work_started_at: datetime | None  # recorded, or the first chunk's start (per-item)
    finished_at: datetime | None
    queue_wait: float | None
    run_time: float | None
    total: float | None
    items_done: int
    items_per_second: float | None  # per-item phases only
    chunks: int
    chunks_done: int
    retries: int
    chunk_p50: float | None
    chunk_p95: float | None


@dataclass(frozen=True)
class Spread:
    """Mean, median and 95th percentile of a duration, in seconds."""

    mean: float | None = None
    p50: float | None = None
    p95: float | None = None


@dataclass(frozen=True)
class PhaseVersionStats:
    """A phase of a version over every phase run of it that ran to an end."""

    phase: str
    runs: int
    run_time_p50: float | None
    run_time_p95: float | None
    queue_wait_p50: float | None
    queue_wait_p95: float | None


@dataclass(frozen=True)
class VersionStats:
    """A pipeline version: its batches by state, their durations, its phases."""

    version: int
    created_at: datetime
    active: bool
    counts: dict[str, int]  # batches by state (states with none are left out)
    finished: int  # batches with a finished_at, over which the durations are taken
    duration_p50: float | None  # finished_at − created_at
    duration_p95: float | None
    phases: tuple[PhaseVersionStats, ...]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


@dataclass(frozen=True)
class PhaseProfile:
    """A phase of a version over the profiled batches."""

    phase: str
    mode: str
    after: tuple[str, ...]
    runs: int
    queue_wait: Spread
    run_time: Spread
    total_mean: float | None  # mean of finish − dispatch: the critical path's weight
    items_per_second: float | None  # items done / run time, summed over the runs
    retries: int  # sum over the runs of attempts − 1
    chunk_p50: float | None
    chunk_p95: float | None
    critical: bool = False


@dataclass(frozen=True)
class Bottleneck:
    phase: str
    cause: Literal["run_time", "queue_wait"]
    reason: str


@dataclass(frozen=True)
class PipelineProfile:
    pipeline: str
    version: int
    since: datetime | None
    limit_batches: int
    batches: int  # finished batches profiled
    phases: tuple[PhaseProfile, ...]  # in plan order
    critical_path: tuple[str, ...]
    critical_path_seconds: float
    bottleneck: Bottleneck | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- Pure helpers --------------------------------------------------------------------------


def format_seconds(value: float | None) -> str:
    """`3.00 s`, `2 min 05 s`, `1.5 h`; an em dash when unknown."""
    if value is None:
        return "—"
    if value < 60:
        return f"{value:.2f} s"
    if value < 3600:
        minutes, seconds = divmod(round(value), 60)
        return f"{minutes} min {seconds:02d} s"
    return f"{value / 3600:.1f} h"


def critical_path(dependencies: Mapping[str, Iterable[str]], weights: Mapping[str, float]) -> tuple[str, ...]:
    """The heaviest path through a DAG whose nodes weigh `weights` (missing: 0).

    `dependencies` maps each node to those it runs after. Between predecessors whose
    paths weigh the same, the heavier node wins (so a phase that never ran, weighing 0,
    does not displace one that did), then the one first in `dependencies`; between
    equally heavy ends, the last one, so ties still yield a source-to-sink path.
    """
    deps = {name: tuple(after) for name, after in dependencies.items()}
    if not deps:
        return ()
    order = {name: i for i, name in enumerate(deps)}
    heaviest: dict[str, float] = {}
    previous: dict[str, str | None] = {}
    for name in graphlib.TopologicalSorter(deps).static_order():
        before = max(
            deps.get(name, ()),
            key=lambda d: (heaviest[d], weights.get(d, 0.0), -order.get(d, len(order))),
            default=None,
        )
        previous[name] = before
        heaviest[name] = weights.get(name, 0.0) + (heaviest[before] if before is not None else 0.0)
    node: str | None = max(heaviest, key=lambda n: (heaviest[n], order.get(n, -1)))
    path: list[str] = []
    while node is not None:
        path.append(node)
        node = previous[node]
    return tuple(reversed(path))


def choose_bottleneck(
    path: Sequence[str],
    run_time: Mapping[str, float | None],
    queue_wait: Mapping[str, float | None],
    path_seconds: float,
) -> Bottleneck | None:
    """The phase that limits the pipeline, with a one-sentence reason.

    A phase that waits longer for a worker than it runs (mean queue wait > mean run
    time: workers are starved) wins, the longest wait first; otherwise the phase of the
    critical `path` with the longest mean run time. None when nothing has run.
    """
    starved = [
        (wait, -i, name)
        for i, name in enumerate(queue_wait)
        if (wait := queue_wait[name]) is not None and (run := run_time.get(name)) is not None and wait > run
    ]
    if starved:
        wait, _, name = max(starved)
        return Bottleneck(
            phase=name,
            cause="queue_wait",
            reason=(
                f"{name} waits longer for a worker than it runs: mean queue wait "
                f"{format_seconds(wait)} against a mean run time of {format_seconds(run_time[name])}."
            ),
        )
    timed = [(run, -i, name) for i, name in enumerate(path) if (run := run_time.get(name)) is not None]
    if not timed:
        return None
    run, _, name = max(timed)
    return Bottleneck(
        phase=name,
        cause="run_time",
        reason=(
            f"{name} has the longest mean run time on the critical path: "
            f"{format_seconds(run)} of {format_seconds(path_seconds)} end to end."
        ),
    )


# --- SQL -----------------------------------------------------------------------------------


class PercentileCont(Aggregate):
    """PostgreSQL `percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)`."""

    function = "percentile_cont"
    name = "PercentileCont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, fraction: float, expression: Combinable | str, **extra: Any) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"a percentile's fraction is between 0 and 1, not {fraction}")
        super().__init__(expression, fraction=float(fraction), **extra)


_PHASE = PhaseRun._meta.db_table
_CHUNK = ChunkRun._meta.db_table
_BATCH = Batch._meta.db_table


def _seconds(later: str, earlier: str) -> str:
    """SQL: `later − earlier` in seconds, 0 if negative, NULL if either is NULL."""
    return (
        f"(CASE WHEN {later} >= {earlier} THEN EXTRACT(EPOCH FROM {later} - {earlier})::float8"
        f" WHEN {later} < {earlier} THEN 0.0 END)"
    )


def _timed_phase_runs(where: str) -> str:
    """SQL: the phase runs matching `where` (over `pr` and `b`) with their timings.

    A work start before the dispatch belongs to an earlier attempt of a retried phase
    and is ignored, as are the chunks of earlier attempts.
    """
    first_chunk = (
        f"(SELECT MIN(c.started_at) FROM {_CHUNK} c"
        " WHERE c.phase_run_id = pr.id AND c.started_at >= pr.started_at)"
    )
    return f"""
        SELECT pr.id, pr.batch_id, b.pipeline_version_id, pr.name, pr.mode, pr.state, pr.position,
               pr.items_done, pr.chunks_total, pr.chunks_done,
               GREATEST(pr.attempts - 1, 0) AS retries,
               pr.started_at, ws.work_start, pr.finished_at,
               {_seconds("ws.work_start", "pr.started_at")} AS queue_wait,
               {_seconds("pr.finished_at", "COALESCE(ws.work_start, pr.started_at)")} AS run_time,
               {_seconds("pr.finished_at", "pr.started_at")} AS total
        FROM {_PHASE} pr
        JOIN {_BATCH} b ON b.id = pr.batch_id
        CROSS JOIN LATERAL (
            SELECT COALESCE(
                CASE WHEN pr.work_started_at >= pr.started_at THEN pr.work_started_at END,
                CASE WHEN pr.mode = 'per_item' THEN {first_chunk} END
            ) AS work_start
        ) ws
        WHERE {where}"""


def _percentiles(column: str, name: str) -> str:
    """SQL: the median and 95th percentile of `column`, as `<name>_p50`, `<name>_p95`."""
    return (
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {column}) AS {name}_p50,"
        f" percentile_cont(0.95) WITHIN GROUP (ORDER BY {column}) AS {name}_p95"
    )


def _elapsed(later: str, earlier: str) -> Greatest:
    """ORM: `later − earlier` (two non-null date-times) as an interval, 0 if negative."""
    return Greatest(F(later) - F(earlier), Value(timedelta(0)), output_field=DurationField())


def _fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _ran(alias: str = "t") -> str:
    states = ", ".join(f"'{s}'" for s in RAN_STATES)
    return f"{alias}.state IN ({states}) AND {alias}.total IS NOT NULL"


def _rate(items: int | float | None, seconds: float | None) -> float | None:
    return float(items) / seconds if items is not None and seconds else None


def _as_seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


class _Shape(NamedTuple):
    name: str
    mode: str
    after: tuple[str, ...]


def _phase_shapes(version: PipelineVersion) -> list[_Shape]:
    """A version's phases in plan order; in definition order when the stored definition
    no longer parses (a handler removed since), so old versions can still be profiled."""
    try:
        return [_Shape(s.name, s.mode, s.after) for s in pipeline_plan(version).phases]
    except PipelineDefinitionError:
        phases = version.definition.get("phases", []) if isinstance(version.definition, dict) else []
        return [_Shape(p["name"], p.get("mode", ""), tuple(p.get("after", []))) for p in phases]


# --- Per phase run -------------------------------------------------------------------------


def phase_run_metrics(batch_id: UUID | str) -> list[PhaseRunMetrics]:
    """Every phase run of a batch, in plan order, with its timings: one query."""
    sql = f"""
        WITH t AS ({_timed_phase_runs("pr.batch_id = %s")}),
        ch AS (
            SELECT c.phase_run_id, {_percentiles(_seconds("c.finished_at", "c.started_at"), "chunk")}
            FROM {_CHUNK} c JOIN t ON t.id = c.phase_run_id
            GROUP BY c.phase_run_id
        )
        SELECT t.id, t.name, t.mode, t.state, t.started_at, t.work_start, t.finished_at,
               t.queue_wait, t.run_time, t.total, t.items_done, t.chunks_total, t.chunks_done,
               t.retries, ch.chunk_p50, ch.chunk_p95
        FROM t LEFT JOIN ch ON ch.phase_run_id = t.id
        ORDER BY t.position"""
    return [_phase_run_row(row) for row in _fetch(sql, [UUID(str(batch_id))])]


def _phase_run_row(row: tuple[Any, ...]) -> PhaseRunMetrics:
    (id_, name, mode, state, dispatched, work_start, finished, wait, run, total) = row[:10]
    items_done, chunks, chunks_done, retries, chunk_p50, chunk_p95 = row[10:]
    return PhaseRunMetrics(
        phase_run_id=id_,
        phase=name,
        mode=mode,
        state=state,
        dispatched_at=dispatched,
        work_started_at=work_start,
        finished_at=finished,
        queue_wait=wait,
        run_time=run,
        total=total,
        items_done=items_done,
        items_per_second=_rate(items_done, run) if mode == "per_item" else None,
        chunks=chunks,
        chunks_done=chunks_done,
        retries=retries,
        chunk_p50=chunk_p50,
        chunk_p95=chunk_p95,
    )


# --- Per version ---------------------------------------------------------------------------


def _pipeline(name: str) -> Pipeline:
    try:
        return Pipeline.objects.get(name=name)
    except Pipeline.DoesNotExist as exc:
        raise NotFound("pipeline_not_found", f"pipeline {name!r} does not exist") from exc


def _batches(version_ids: list[int], tenant_ids: Collection[int] | None) -> QuerySet[Batch]:
    """The versions' batches; of the given tenants only, unless `tenant_ids` is None."""
    batches = Batch.objects.filter(pipeline_version_id__in=version_ids)
    return batches if tenant_ids is None else batches.filter(tenant_id__in=list(tenant_ids))


def _batch_counts(version_ids: list[int], tenant_ids: Collection[int] | None) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {}
    rows = (
        _batches(version_ids, tenant_ids)
        .values_list("pipeline_version_id", "state")
        .annotate(n=Count("id"))
        .order_by()
    )
    for version_id, state, n in rows:
        counts.setdefault(version_id, {})[state] = n
    return counts


def _batch_durations(
    version_ids: list[int], tenant_ids: Collection[int] | None
) -> dict[int, tuple[int, float | None, float | None]]:
    """(finished batches, p50, p95 of finished_at − created_at) per version: one query."""
    duration = _elapsed("finished_at", "created_at")
    rows = (
        _batches(version_ids, tenant_ids)
        .filter(finished_at__isnull=False)
        .values("pipeline_version_id")
        .annotate(
            n=Count("id"),
            p50=PercentileCont(0.5, duration, output_field=DurationField()),
            p95=PercentileCont(0.95, duration, output_field=DurationField()),
        )
        .order_by()
    )
    return {r["pipeline_version_id"]: (r["n"], _as_seconds(r["p50"]), _as_seconds(r["p95"])) for r in rows}


def _phase_stats_by_version(
    version_ids: list[int], tenant_ids: Collection[int] | None
) -> dict[tuple[int, str], tuple[Any, ...]]:
    """(runs, run p50, run p95, wait p50, wait p95) per (version, phase): one query."""
    where, params = "b.pipeline_version_id = ANY(%s)", [version_ids]
    if tenant_ids is not None:
        where, params = f"{where} AND b.tenant_id = ANY(%s)", [version_ids, list(tenant_ids)]
    sql = f"""
        SELECT t.pipeline_version_id, t.name, COUNT(*),
               {_percentiles("t.run_time", "run")}, {_percentiles("t.queue_wait", "wait")}
        FROM ({_timed_phase_runs(where)}) t
        WHERE {_ran()}
        GROUP BY t.pipeline_version_id, t.name"""
    return {(row[0], row[1]): row[2:] for row in _fetch(sql, params)}


def version_stats(pipeline_name: str, *, tenant_ids: Collection[int] | None = None) -> list[VersionStats]:
    """The pipeline's versions side by side, newest first: five queries, whatever the
    number of versions and batches. Raises `NotFound` for an unknown pipeline.

    Counts and durations are over the batches of `tenant_ids` only (a reader's tenants:
    `orchestrator.access.tenant_ids`); None counts every tenant's (a superuser, a command).
    """
    pipeline = _pipeline(pipeline_name)
    versions = list(PipelineVersion.objects.filter(pipeline=pipeline).order_by("-version"))
    ids = [v.id for v in versions]
    if not ids:
        return []
    counts = _batch_counts(ids, tenant_ids)
    durations = _batch_durations(ids, tenant_ids)
    phases = _phase_stats_by_version(ids, tenant_ids)
    result = []
    for v in versions:
        finished, p50, p95 = durations.get(v.id, (0, None, None))
        result.append(
            VersionStats(
                version=v.version,
                created_at=v.created_at,
                active=v.id == pipeline.active_version_id,
                counts=counts.get(v.id, {}),
                finished=finished,
                duration_p50=p50,
                duration_p95=p95,
                phases=tuple(
                    _phase_version_stats(spec.name, phases.get((v.id, spec.name)))
                    for spec in _phase_shapes(v)
                ),
            )
        )
    return result


def _phase_version_stats(name: str, row: tuple[Any, ...] | None) -> PhaseVersionStats:
    runs, run50, run95, wait50, wait95 = row or (0, None, None, None, None)
    return PhaseVersionStats(
        phase=name,
        runs=runs,
        run_time_p50=run50,
        run_time_p95=run95,
        queue_wait_p50=wait50,
        queue_wait_p95=wait95,
    )


# --- Profile -------------------------------------------------------------------------------


def _profiled_version(pipeline: Pipeline, version: int | None) -> PipelineVersion:
    """The version asked for; else the active one; else the latest."""
    versions = PipelineVersion.objects.filter(pipeline=pipeline)
    if version is not None:
        found = versions.filter(version=version).first()
    elif pipeline.active_version_id is not None:
        found = versions.filter(id=pipeline.active_version_id).first()
    else:
        found = versions.order_by("-version").first()
    if found is None:
        raise NotFound(
            "pipeline_version_not_found", f"pipeline {pipeline.name!r} has no version {version or ''}".strip()
        )
    return found


def _phase_aggregates(batch_sql: str, params: Sequence[Any]) -> dict[str, tuple[Any, ...]]:
    """Per phase over the profiled batches: runs, queue wait and run time (mean, p50,
    p95), mean total, items and seconds of per-item runs, retries: one query."""
    sql = f"""
        SELECT t.name, COUNT(*),
               AVG(t.queue_wait), {_percentiles("t.queue_wait", "wait")},
               AVG(t.run_time), {_percentiles("t.run_time", "run")},
               AVG(t.total),
               SUM(t.items_done) FILTER (WHERE t.mode = 'per_item' AND t.run_time > 0),
               SUM(t.run_time) FILTER (WHERE t.mode = 'per_item' AND t.run_time > 0),
               SUM(t.retries)
        FROM ({_timed_phase_runs(f"pr.batch_id IN ({batch_sql})")}) t
        WHERE {_ran()}
        GROUP BY t.name"""
    return {row[0]: row[1:] for row in _fetch(sql, params)}


def _chunk_percentiles(
    batches: QuerySet[Batch, Any],
) -> dict[str, tuple[float | None, float | None]]:
    """Chunk run-time p50/p95 per phase over the profiled batches: one query."""
    duration = _elapsed("finished_at", "started_at")
    rows = (
        ChunkRun.objects.filter(phase_run__batch_id__in=batches)
        .values("phase_run__name")
        .annotate(
            p50=PercentileCont(0.5, duration, output_field=DurationField()),
            p95=PercentileCont(0.95, duration, output_field=DurationField()),
        )
        .order_by()
    )
    return {r["phase_run__name"]: (_as_seconds(r["p50"]), _as_seconds(r["p95"])) for r in rows}


# A phase without runs: the row `_phase_aggregates` would have given it.
_NO_RUNS: tuple[Any, ...] = (0, None, None, None, None, None, None, None, None, None, 0)


def _phase_profile(
    spec: _Shape, row: tuple[Any, ...] | None, chunks: Mapping[str, tuple[float | None, float | None]]
) -> PhaseProfile:
    runs, w_mean, w50, w95, r_mean, r50, r95, total, items, item_seconds, retries = row or _NO_RUNS
    chunk_p50, chunk_p95 = chunks.get(spec.name, (None, None))
    return PhaseProfile(
        phase=spec.name,
        mode=spec.mode,
        after=spec.after,
        runs=runs,
        queue_wait=Spread(w_mean, w50, w95),
        run_time=Spread(r_mean, r50, r95),
        total_mean=total,
        items_per_second=_rate(items, item_seconds) if spec.mode == "per_item" else None,
        retries=int(retries or 0),
        chunk_p50=chunk_p50,
        chunk_p95=chunk_p95,
    )


def profile_pipeline(
    pipeline_name: str,
    *,
    version: int | None = None,
    since: datetime | None = None,
    limit_batches: int = 200,
) -> PipelineProfile:
    """Profile a version (default: the active one) over its latest `limit_batches`
    finished batches (finished at or after `since`, if given): five queries.

    Raises `NotFound` for an unknown pipeline or version. With no finished batches the
    profile has `batches == 0`, empty figures and no bottleneck.
    """
    if limit_batches < 1:
        raise ValueError("limit_batches must be at least 1")
    pipeline = _pipeline(pipeline_name)
    found = _profiled_version(pipeline, version)
    shapes = _phase_shapes(found)
    batches = Batch.objects.filter(pipeline_version=found, finished_at__isnull=False)
    if since is not None:
        batches = batches.filter(finished_at__gte=since)
    selected = batches.order_by("-finished_at").values("id")[:limit_batches]
    count = len(selected)
    batch_sql, params = selected.query.sql_with_params()
    rows = _phase_aggregates(batch_sql, params) if count else {}
    chunks = _chunk_percentiles(selected) if count else {}
    phases = [_phase_profile(spec, rows.get(spec.name), chunks) for spec in shapes]
    weights = {p.phase: p.total_mean or 0.0 for p in phases}
    path = critical_path({spec.name: spec.after for spec in shapes}, weights) if count else ()
    seconds = sum(weights[name] for name in path)
    bottleneck = choose_bottleneck(
        path,
        {p.phase: p.run_time.mean for p in phases},
        {p.phase: p.queue_wait.mean for p in phases},
        seconds,
    )
    on_path = set(path)
    return PipelineProfile(
        pipeline=pipeline.name,
        version=found.version,
        since=since,
        limit_batches=limit_batches,
        batches=count,
        phases=tuple(replace(p, critical=p.phase in on_path) for p in phases),
        critical_path=path,
        critical_path_seconds=seconds,
        bottleneck=bottleneck,
    )
