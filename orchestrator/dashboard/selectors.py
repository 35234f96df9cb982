"""The dashboard's reads of the database, every one cut to the viewer's tenants
(`Viewer.scope`, through `orchestrator.access.scope`: a superuser sees every tenant and
what belongs to none; anyone may narrow the page to one of their tenants).

Every query is bounded by the window (on an indexed time column: `PhaseRun.finished_at`,
`OutboxEvent.created_at`, `Alert.created_at`, `ErrorFingerprint.last_seen`), by the
batches still at work (a partial index), or by a LIMIT; each is one round trip whatever
the number of rows, and none runs per row shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.contrib.postgres.aggregates import StringAgg
from django.db.models import (
    Aggregate,
    Case,
    Count,
    DateTimeField,
    F,
    FloatField,
    Func,
    IntegerField,
    Model,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from orchestrator import access
from orchestrator.access import User
from orchestrator.analytics import top_errors
from orchestrator.models import Alert, AuditRecord, Batch, ChunkRun, OutboxEvent, PhaseRun, Tenant
from orchestrator.security.watch import EVENT_KIND, EVENT_RECORDS
from orchestrator.states import BATCH_TERMINAL, PHASE_DONE, BatchState, PhaseState

# The event that ends a batch, per terminal state: `batch.completed` → `completed`, ….
FINISH_EVENTS = {f"batch.{state.value}": state.value for state in BATCH_TERMINAL}
# Batches still at work (the states of the `batch_active_by_age` partial index).
ACTIVE_STATES = (BatchState.RECEIVED, BatchState.ACCEPTED, BatchState.RUNNING)
SLA_AT_RISK = "batch.sla_at_risk"
SLA_BREACHED = "batch.sla_breached"
SLA_KINDS = (SLA_AT_RISK, SLA_BREACHED)
ANOMALY = "anomaly"
PREDICTED_ERROR_SURGE = "predicted_error_surge"
PREDICTED_BREAKER_TRIP = "predicted_breaker_trip"
INSIGHT_KINDS = (ANOMALY, PREDICTED_ERROR_SURGE, PREDICTED_BREAKER_TRIP)
ROWS = 20  # rows of a table
M = TypeVar("M", bound=Model)


class DateBin(Func):
    """PostgreSQL's `date_bin(step, at, origin)`: the start of the bucket holding `at`."""

    function = "date_bin"
    output_field = DateTimeField()

    def __init__(self, step: timedelta, expression: str, origin: datetime) -> None:
        super().__init__(Value(step), F(expression), Value(origin))


class PercentileCont(Aggregate):
    """PostgreSQL's `percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)`."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, fraction: float) -> None:
        super().__init__(expression, fraction=float(fraction))


class Seconds(Func):
    """The seconds of an interval (`EXTRACT(EPOCH FROM …)`)."""

    template = "EXTRACT(EPOCH FROM %(expressions)s)"
    output_field = FloatField()


@dataclass(frozen=True)
class Viewer:
    """Whose data the page shows: what `user` may read (`orchestrator.access`), cut to
    one of those tenants when `tenant_id` is set."""

    user: User
    tenant_id: int | None = None

    def scope(self, queryset: QuerySet[M]) -> QuerySet[M]:
        """`queryset` (of a model with a `tenant` field) cut to what this viewer sees."""
        scoped = access.scope(queryset, self.user, "tenant_id")
        return scoped if self.tenant_id is None else scoped.filter(tenant_id=self.tenant_id)


def visible_tenant_ids(viewer: Viewer) -> list[int]:
    """The ids of the tenants the viewer sees (all of them for a superuser)."""
    if viewer.tenant_id is not None:
        return [viewer.tenant_id] if access.may(viewer.user, access.Do.READ, viewer.tenant_id) else []
    ids = access.tenant_ids(viewer.user)
    return list(Tenant.objects.values_list("id", flat=True)) if ids is None else ids


def item_throughput(viewer: Viewer, *, start: datetime, step: timedelta) -> dict[datetime, dict[str, int]]:
    """Items processed per bucket, by outcome (`succeeded`, `failed`, `skipped`), from the
    chunks recorded since `start` (every per-item phase records its items in chunks,
    inline batches included). The chunks are found through their phases, those finished
    since `start` or running now (both indexed)."""
    phases = viewer.scope(PhaseRun.objects.filter(Q(finished_at__gte=start) | Q(state=PhaseState.RUNNING)))
    rows = (
        ChunkRun.objects.filter(phase_run_id__in=Subquery(phases.values("id")), finished_at__gte=start)
        .annotate(at=DateBin(step, "finished_at", start))
        .values("at")
        .annotate(succeeded=Sum("succeeded"), failed=Sum("failed"), skipped=Sum("skipped"))
        .order_by("at")
    )
    return {
        r["at"]: {"succeeded": r["succeeded"], "failed": r["failed"], "skipped": r["skipped"]} for r in rows
    }


def batches_finished(viewer: Viewer, *, start: datetime, step: timedelta) -> dict[tuple[datetime, str], int]:
    """Batches that reached a terminal state, per bucket and state, counted from the
    events that say so (the outbox holds one per change, written with it)."""
    rows = (
        viewer.scope(OutboxEvent.objects.filter(created_at__gte=start, event_type__in=list(FINISH_EVENTS)))
        .annotate(at=DateBin(step, "created_at", start))
        .values("at", "event_type")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {(r["at"], FINISH_EVENTS[r["event_type"]]): r["n"] for r in rows}


def phase_durations(viewer: Viewer, *, start: datetime, limit: int = ROWS) -> list[dict[str, Any]]:
    """p50 and p95 of the duration (dispatch to finish) of the phases that succeeded since
    `start`, per pipeline and phase, the slowest (by p95) first."""
    duration = Seconds(F("finished_at") - F("started_at"))
    rows = (
        viewer.scope(
            PhaseRun.objects.filter(
                finished_at__gte=start, state=PhaseState.SUCCEEDED, started_at__isnull=False
            )
        )
        .values(pipeline=F("batch__pipeline_version__pipeline__name"), phase=F("name"))
        .annotate(runs=Count("id"), p50=PercentileCont(duration, 0.5), p95=PercentileCont(duration, 0.95))
        .order_by("-p95", "pipeline", "phase")[:limit]
    )
    return [dict(r) for r in rows]


def error_fingerprints(viewer: Viewer, *, start: datetime, limit: int = 10) -> list[dict[str, Any]]:
    """The most frequent error fingerprints seen since `start` (analytics.top_errors)."""
    return top_errors(visible_tenant_ids(viewer), since=start, limit=limit)


def alerts(
    viewer: Viewer, *, start: datetime, kinds: tuple[str, ...], limit: int = ROWS
) -> list[dict[str, Any]]:
    """The newest alerts of these kinds raised since `start`."""
    rows = (
        viewer.scope(Alert.objects.filter(created_at__gte=start, kind__in=kinds))
        .order_by("-created_at", "-id")
        .values("id", "kind", "tenant__slug", "message", "details", "created_at", "acknowledged_at")[:limit]
    )
    return [dict(r) for r in rows]


def _audit_of(viewer: Viewer) -> QuerySet[AuditRecord]:
    """The audit records the viewer may read: those of tenants they administer (the audit
    log's rule, `GET /api/v1/audit/`); what belongs to no tenant, superusers only."""
    scoped = access.scope(AuditRecord.objects.all(), viewer.user, "tenant_id", access.Do.ADMINISTER)
    return scoped if viewer.tenant_id is None else scoped.filter(tenant_id=viewer.tenant_id)


def security_events(viewer: Viewer, *, start: datetime, step: timedelta) -> dict[tuple[datetime, str], int]:
    """Security events since `start` (refusals, failed logins, lockouts, throttled minutes,
    cross-tenant attempts, new token addresses: `security.watch.EVENT_KIND`), per bucket
    and kind, from the audit log (indexed on its time)."""
    rows = (
        _audit_of(viewer)
        .filter(EVENT_RECORDS, at__gte=start)
        .annotate(kind=EVENT_KIND, bucket=DateBin(step, "at", start))
        .values("bucket", "kind")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {(r["bucket"], r["kind"]): r["n"] for r in rows if r["kind"]}


def payload_items_read(viewer: Viewer, *, start: datetime) -> int:
    """Items whose payloads or results were read since `start` (`payload_read` records)."""
    items = Cast(KT("detail__items"), IntegerField())
    found = _audit_of(viewer).filter(action="payload_read", at__gte=start).aggregate(n=Sum(items))
    return int(found["n"] or 0)


def alert_counts(viewer: Viewer, *, start: datetime, step: timedelta) -> dict[tuple[datetime, str], int]:
    """Alerts of every kind raised since `start`, per bucket and kind."""
    rows = (
        viewer.scope(Alert.objects.filter(created_at__gte=start))
        .annotate(at=DateBin(step, "created_at", start))
        .values("at", "kind")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {(r["at"], r["kind"]): r["n"] for r in rows}


def _per_item(then: Any, otherwise: Any) -> Case:
    return Case(When(mode="per_item", then=then), default=otherwise, output_field=IntegerField())


def _progress(batches: QuerySet[Batch]) -> QuerySet[Batch]:
    """Batches with their progress over their phases (`units_done` of `units_total`: items
    for per-item phases, one for a per-batch phase) and the names of their running
    phases, computed in the same query (correlated subqueries on each batch's phases)."""
    phases = PhaseRun.objects.filter(batch_id=OuterRef("pk")).order_by().values("batch_id")
    total = phases.annotate(n=Sum(_per_item(F("items_total"), Value(1)))).values("n")
    done = phases.annotate(
        n=Sum(
            Case(
                When(state__in=list(PHASE_DONE), then=_per_item(F("items_total"), Value(1))),
                When(mode="per_item", then=F("items_done")),
                default=Value(0),
                output_field=IntegerField(),
            )
        )
    ).values("n")
    running = (
        phases.filter(state=PhaseState.RUNNING)
        .annotate(names=StringAgg("name", ", ", order_by="position"))
        .values("names")
    )
    return batches.annotate(
        units_total=Subquery(total, output_field=IntegerField()),
        units_done=Subquery(done, output_field=IntegerField()),
        running_phases=Subquery(running),
    )


def _batches(viewer: Viewer) -> QuerySet[Batch]:
    return viewer.scope(Batch.objects.select_related("tenant", "pipeline_version__pipeline"))


def active_batches(viewer: Viewer, *, limit: int = ROWS) -> list[Batch]:
    """The newest batches still at work, with their progress."""
    return list(_progress(_batches(viewer).filter(state__in=ACTIVE_STATES)).order_by("-created_at")[:limit])


def active_batches_count(viewer: Viewer) -> int:
    return viewer.scope(Batch.objects.filter(state__in=ACTIVE_STATES)).count()


def finished_batches(viewer: Viewer, *, start: datetime, limit: int = ROWS) -> list[Batch]:
    """The batches that finished last since `start` (by their finishing events)."""
    recent = (
        viewer.scope(OutboxEvent.objects.filter(created_at__gte=start, event_type__in=list(FINISH_EVENTS)))
        .order_by("-created_at")
        .values("batch_id")[:limit]
    )
    found = _batches(viewer).filter(id__in=Subquery(recent), state__in=[s.value for s in BATCH_TERMINAL])
    return list(_progress(found).order_by(F("finished_at").desc(nulls_last=True))[:limit])


def deadline_batches(viewer: Viewer, *, limit: int = ROWS) -> list[Batch]:
    """Batches with a deadline still at work, the nearest deadline first."""
    return list(
        _batches(viewer)
        .filter(state__in=ACTIVE_STATES, deadline__isnull=False)
        .order_by("deadline", "id")[:limit]
    )


def sla_alert_kinds(viewer: Viewer, batches: list[Batch]) -> dict[str, set[str]]:
    """batch id → the SLA alert kinds raised about it (read since the oldest of them began)."""
    if not batches:
        return {}
    since = min(b.created_at for b in batches)
    ids = [str(b.id) for b in batches]
    rows = viewer.scope(
        Alert.objects.filter(created_at__gte=since, kind__in=SLA_KINDS, details__batch_id__in=ids)
    ).values_list("details__batch_id", "kind")
    found: dict[str, set[str]] = {}
    for batch_id, kind in rows:
        found.setdefault(str(batch_id), set()).add(kind)
    return found
