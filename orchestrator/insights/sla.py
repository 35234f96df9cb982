"""SLA of running batches: projected finishes, `batch.sla_at_risk` and `batch.sla_breached`.

A batch's effective deadline is its own `deadline`, else its pipeline's
`sla.target_seconds` after its creation. `sla_review` (with the batch locked) projects
its finish (`projection.project_finish`, with the pipeline's history for phases that
have not measured a rate of their own) and raises, each once per batch:

- `batch.sla_at_risk` when the projection is later than the deadline minus
  `BOS_SLA_RISK_MARGIN_SECONDS`, while the deadline is still ahead;
- `batch.sla_breached` when the deadline passed before the batch reached a terminal state.

Each is an outbox event of the batch (its next `sequence`) and an `Alert` of the same
kind, in the transaction that records it. `sla_sweep` (beat, every
`BOS_SLA_CHECK_INTERVAL_SECONDS`) reviews every unfinished batch with a deadline; it
projects without a lock and takes the batch lock only when an event is due. A phase that
ends reviews its batch too (`orchestrator.services.phases`). `sla_summary` is the read
behind the API's `sla` object.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from orchestrator.config import runtime
from orchestrator.insights.projection import (
    PhaseHistory,
    PhaseProgress,
    Projection,
    SlaState,
    effective_deadline,
    project_finish,
    sla_state,
)
from orchestrator.insights.robust import median
from orchestrator.models import Alert, Batch, OutboxEvent, PhaseRun
from orchestrator.selectors import pipeline_plan
from orchestrator.services.events import emit, outbox_event
from orchestrator.states import BATCH_TERMINAL, BatchState, PhaseState

logger = logging.getLogger(__name__)

AT_RISK = "batch.sla_at_risk"
BREACHED = "batch.sla_breached"
# Finished runs of a phase (same pipeline) whose median makes its history.
HISTORY_RUNS = 20
UNFINISHED = [s.value for s in BatchState if s not in BATCH_TERMINAL]


def iso_or_none(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


def batch_deadline(batch: Batch) -> datetime | None:
    """The batch's deadline, else its pipeline's `sla.target_seconds` after its creation."""
    plan = pipeline_plan(batch.pipeline_version)
    return effective_deadline(batch.deadline, batch.created_at, plan.sla_target_seconds)


def phase_history(
    pipeline_id: int, names: Sequence[str], *, exclude_batch: Any = None
) -> dict[str, PhaseHistory]:
    """Per phase name: the median seconds per item and duration of its recent successful runs
    in batches of this pipeline (any version). One query."""
    rows = (
        PhaseRun.objects.filter(
            batch__pipeline_version__pipeline_id=pipeline_id,
            name__in=list(names),
            state=PhaseState.SUCCEEDED,
            started_at__isnull=False,
            finished_at__isnull=False,
        )
        .exclude(batch_id=exclude_batch)
        .order_by("-finished_at")
        .values_list("name", "mode", "items_total", "started_at", "work_started_at", "finished_at")[
            : HISTORY_RUNS * max(len(names), 1)
        ]
    )
    per_item: dict[str, list[float]] = defaultdict(list)
    whole: dict[str, list[float]] = defaultdict(list)
    for name, mode, items, started, work_started, finished in rows:
        if len(whole[name]) >= HISTORY_RUNS:
            continue
        began = work_started or started
        if began is None or finished is None:
            continue
        seconds = max(0.0, (finished - began).total_seconds())
        whole[name].append(seconds)
        if mode == "per_item" and items > 0:
            per_item[name].append(seconds / items)
    return {
        name: PhaseHistory(
            seconds_per_item=median(per_item[name]) if per_item[name] else None,
            seconds=median(whole[name]),
        )
        for name in whole
    }


def progress_of(batch: Batch, phases: Iterable[PhaseRun]) -> list[PhaseProgress]:
    plan = pipeline_plan(batch.pipeline_version)
    after = {spec.name: spec.after for spec in plan.phases}
    return [
        PhaseProgress(
            name=p.name,
            state=p.state,
            mode=p.mode,
            after=after.get(p.name, ()),
            items_total=p.items_total,
            items_done=p.items_done,
            started_at=p.work_started_at or p.started_at,
            finished_at=p.finished_at,
        )
        for p in phases
    ]


def project(
    batch: Batch, phases: Sequence[PhaseRun], *, now: datetime, history: dict[str, PhaseHistory] | None = None
) -> Projection:
    if history is None:
        history = phase_history(
            batch.pipeline_version.pipeline_id, [p.name for p in phases], exclude_batch=batch.id
        )
    return project_finish(progress_of(batch, phases), history, now=now)


@dataclass(frozen=True)
class Due:
    """What a review found due: which event, with what projection."""

    event_type: str | None
    projection: Projection
    deadline: datetime


def _due(batch: Batch, deadline: datetime, projection: Projection, now: datetime) -> str | None:
    if batch.sla_breached_at is None and now >= deadline:
        return BREACHED
    if batch.sla_at_risk_at is None and batch.sla_breached_at is None and now < deadline:
        margin = runtime("sla_risk_margin_seconds")
        if projection.finish_at.timestamp() > deadline.timestamp() - margin:
            return AT_RISK
    return None


def _sla_data(deadline: datetime, projection: Projection) -> dict[str, Any]:
    return {
        "deadline": iso_or_none(deadline),
        "projected_finish_at": iso_or_none(projection.finish_at),
        "slowest_phase": projection.slowest_phase,
    }


def _record(
    batch: Batch, event_type: str, deadline: datetime, projection: Projection, now: datetime
) -> OutboxEvent:
    """Mark the batch and store the alert; the caller emits the returned event."""
    data = _sla_data(deadline, projection)
    pipeline = batch.pipeline_version.pipeline.name
    if event_type == AT_RISK:
        batch.sla_at_risk_at = now
        message = (
            f"Batch {batch.external_id} ({pipeline}) is projected to finish at {data['projected_finish_at']}, "
            f"after its deadline {data['deadline']} (slowest phase: {projection.slowest_phase})"
        )
    else:
        batch.sla_breached_at = now
        message = f"Batch {batch.external_id} ({pipeline}) passed its deadline {data['deadline']} unfinished"
    Batch.objects.filter(id=batch.id).update(
        sla_at_risk_at=batch.sla_at_risk_at,
        sla_breached_at=batch.sla_breached_at,
        sla_projected_finish_at=projection.finish_at,
    )
    batch.sla_projected_finish_at = projection.finish_at
    Alert.objects.create(
        tenant_id=batch.tenant_id,
        kind=event_type,
        message=message,
        details={"batch_id": str(batch.id), "external_id": batch.external_id, "pipeline": pipeline, **data},
    )
    logger.warning("%s: %s", event_type, message)
    # Named literally, so the contract test's scan of emitted types sees both.
    if event_type == AT_RISK:
        return outbox_event(batch=batch, event_type=AT_RISK, at=now, data=data)
    return outbox_event(batch=batch, event_type=BREACHED, at=now, data=data)


def sla_review(batch: Batch, phases: Sequence[PhaseRun], *, now: datetime) -> list[OutboxEvent]:
    """With the batch locked: the SLA events now due for it (unsaved; the caller emits
    them in order with its own). Nothing for a batch with no deadline or already ended."""
    if batch.is_terminal or (batch.sla_at_risk_at is not None and batch.sla_breached_at is not None):
        return []
    deadline = batch_deadline(batch)
    if deadline is None:
        return []
    # No projection is needed to see a deadline has passed, nor once a batch is at risk.
    if batch.sla_at_risk_at is not None and now < deadline:
        return []
    projection = project(batch, phases, now=now)
    event_type = _due(batch, deadline, projection, now)
    return [_record(batch, event_type, deadline, projection, now)] if event_type else []


def sla_check(*, batch_id: Any, now: datetime | None = None) -> list[str]:
    """Review one batch under its lock and emit what is due; the event types emitted."""
    from orchestrator.services.progress import lock_batch

    now = now or timezone.now()
    with transaction.atomic():
        batch = lock_batch(batch_id)
        phases = list(batch.phases.order_by("position"))
        events = sla_review(batch, phases, now=now)
        emit(events)
    return [e.event_type for e in events]


@dataclass(frozen=True)
class SweepReport:
    reviewed: int = 0
    at_risk: tuple[str, ...] = ()
    breached: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"reviewed": self.reviewed, "at_risk": list(self.at_risk), "breached": list(self.breached)}


def sla_sweep(*, now: datetime | None = None, limit: int = 1000) -> SweepReport:
    """Review every unfinished batch with an effective deadline (at most `limit`, oldest
    first). Projects without a lock; locks a batch only to raise its event."""
    now = now or timezone.now()
    batches = list(
        Batch.objects.filter(state__in=UNFINISHED, sla_breached_at__isnull=True)
        # Only batches that can have a deadline: their own, or their pipeline version's target.
        .filter(Q(deadline__isnull=False) | Q(pipeline_version__definition__has_key="sla"))
        .select_related("tenant", "pipeline_version__pipeline")
        .prefetch_related("phases")
        .order_by("created_at")[:limit]
    )
    histories: dict[int, dict[str, PhaseHistory]] = {}
    reviewed, raised = 0, defaultdict(list)
    projected: list[tuple[Any, datetime]] = []
    for batch in batches:
        deadline = batch_deadline(batch)
        if deadline is None:
            continue
        reviewed += 1
        phases = sorted(batch.phases.all(), key=lambda p: p.position)
        pipeline_id = batch.pipeline_version.pipeline_id
        if pipeline_id not in histories:
            histories[pipeline_id] = phase_history(pipeline_id, [p.name for p in phases])
        projection = project(batch, phases, now=now, history=histories[pipeline_id])
        if _due(batch, deadline, projection, now) is None:
            projected.append((batch.id, projection.finish_at))
            continue
        for event_type in sla_check(batch_id=batch.id, now=now):
            raised[event_type].append(str(batch.id))
    for batch_id, finish_at in projected:
        Batch.objects.filter(id=batch_id, state__in=UNFINISHED).update(sla_projected_finish_at=finish_at)
    return SweepReport(reviewed, tuple(raised[AT_RISK]), tuple(raised[BREACHED]))


def sla_summary(batch: Batch) -> dict[str, Any] | None:
    """The batch's `sla` object for the API: None when it has no (effective) deadline."""
    deadline = batch_deadline(batch)
    state = sla_state(
        deadline=deadline,
        terminal=batch.is_terminal,
        finished_at=batch.finished_at,
        at_risk_at=batch.sla_at_risk_at,
        breached_at=batch.sla_breached_at,
    )
    if state is None:
        return None
    return {
        "deadline": deadline,
        "state": state.value,
        "projected_finish_at": batch.finished_at
        if state in (SlaState.MET, SlaState.MISSED)
        else batch.sla_projected_finish_at,
        "at_risk_at": batch.sla_at_risk_at,
        "breached_at": batch.sla_breached_at,
    }
