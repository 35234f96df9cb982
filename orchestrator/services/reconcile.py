"""The reconciler: finds work that was lost and sends only what is missing again.

Lost work happens: a worker killed with `kill -9` dies with the chunks it runs; a chord
whose member died never calls back; a batch's start is lost when the broker is down at
the moment it is sent. Every `BOS_RECONCILE_INTERVAL_SECONDS` (Celery beat) this looks at

- batches `accepted` for longer than `BOS_LEASE_SECONDS` → their start is sent again
  (starting is idempotent: a batch already running is left alone);
- running phases, judged by their leases (orchestrator/services/leases.py), never by how
  long nothing was recorded:
  - work whose lease **expired without a result** is sent again (its holder died);
  - work that is **alive** (a lease being renewed, or held through a retry's countdown,
    or stored for beat) is left alone, however long it takes;
  - work with **no lease** is queued, or was lost before any worker took it up; it is
    sent again only when the phase is idle — nothing of it alive, nothing recorded for a
    heartbeat period — and its work queue is empty, so work waiting behind a backlog is
    never doubled;
  - a per-item phase whose chunk records cover all its items is completed (its callback
    was lost); a sub-pipeline's child is started, or its end reported, again.

Everything it sends is idempotent — a chunk claims its lease before its handler runs, and
records once — so running it twice, or from two beats at once, does no harm; a Redis lock
keeps two from working at the same moment anyway. `now` can be given (tests drive the
clock through the same code path).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from amqp.exceptions import ChannelError
from celery import current_app
from django.conf import settings
from django.utils import timezone

from orchestrator.config import runtime
from orchestrator.models import Batch, ChunkRun, DeferredTask, PhaseRun, WorkLease
from orchestrator.pipelines import missing_ranges
from orchestrator.services.children import child_of
from orchestrator.services.phases import phase_complete
from orchestrator.states import BATCH_TERMINAL, BatchState, PhaseState
from orchestrator.workflows import (
    BATCH_START_TASK,
    CHILD_FINISHED_TASK,
    PhaseDispatch,
    dispatch_phase,
    enqueue_orchestration,
    queue_for,
)

logger = logging.getLogger(__name__)
LOCK = "bos:reconciler"


@dataclass
class ReconcileReport:
    started: list[str] = field(default_factory=list)
    chunks_resent: int = 0
    phases_resent: list[str] = field(default_factory=list)
    phases_completed: list[str] = field(default_factory=list)
    expired_leases: int = 0
    locked_out: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.started or self.chunks_resent or self.phases_resent or self.phases_completed)


def reconcile(
    *, now: datetime | None = None, queue_depth: Callable[[str], int] | None = None
) -> ReconcileReport:
    """One pass, under a Redis lock (a second reconciler at the same moment does nothing)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    lock = client.lock(LOCK, timeout=300, blocking=False)
    if not lock.acquire():
        return ReconcileReport(locked_out=True)
    try:
        return _reconcile(now=now or timezone.now(), queue_depth=queue_depth or broker_queue_depth)
    finally:
        with contextlib.suppress(redis.exceptions.LockError):  # expired meanwhile
            lock.release()


def broker_queue_depth(queue: str) -> int:
    """Messages waiting in a Celery queue (Redis or RabbitMQ: kombu's passive declare)."""
    with current_app.connection_for_read() as conn:
        channel: Any = conn.default_channel
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except ChannelError as exc:
            # Redis keeps no empty list, and a queue never used does not exist: nothing waits.
            if getattr(exc, "reply_code", None) == 404 or "NOT_FOUND" in str(exc):
                return 0
            raise


def _lease_window(now: datetime) -> datetime:
    return now - timedelta(seconds=runtime("lease_seconds"))


def _reconcile(*, now: datetime, queue_depth: Callable[[str], int]) -> ReconcileReport:
    report = ReconcileReport()
    accepted = Batch.objects.filter(state=BatchState.ACCEPTED, updated_at__lt=_lease_window(now))
    for batch in accepted.select_related("tenant", "pipeline_version__pipeline")[:500]:
        Batch.objects.filter(id=batch.id, state=BatchState.ACCEPTED).update(updated_at=now)
        enqueue_orchestration(BATCH_START_TASK, (str(batch.id),), batch)
        report.started.append(str(batch.id))
    depths: dict[str, int] = {}

    def depth(queue: str) -> int:
        if queue not in depths:
            try:
                depths[queue] = queue_depth(queue)
            except Exception:  # noqa: BLE001 - unknown depth: assume work is queued, send nothing
                logger.warning("reconciler: depth of queue %s unknown", queue, exc_info=True)
                depths[queue] = 1
        return depths[queue]

    for phase in running_phases(now=now):
        _reconcile_phase(phase, now, depth, report)
    if report.changed:
        logger.warning("reconciler re-sent lost work: %s", report)
    return report


def running_phases(*, now: datetime) -> list[PhaseRun]:
    """Running phases of running batches dispatched more than a lease period ago."""
    return list(
        PhaseRun.objects.filter(
            state=PhaseState.RUNNING, batch__state=BatchState.RUNNING, started_at__lt=_lease_window(now)
        ).select_related("batch__tenant", "batch__pipeline_version__pipeline")[:500]
    )


def stale_phases(*, now: datetime | None = None) -> list[PhaseRun]:
    """Running phases with work to send again now (what `bos_check` reports as lost)."""
    now = now or timezone.now()
    lost = []
    for phase in running_phases(now=now):
        work = _lost_work(phase, now, lambda _queue: 0)
        if work is not None and (work.ranges or work.complete or work.resend_whole):
            lost.append(phase)
    return lost


@dataclass
class LostWork:
    ranges: tuple[tuple[int, int], ...] = ()
    complete: bool = False  # every item recorded: the phase's callback was lost
    resend_whole: bool = False  # a per-batch phase or a sub-pipeline to send again
    expired: int = 0


def _lost_work(phase: PhaseRun, now: datetime, depth: Callable[[str], int]) -> LostWork | None:
    leases = list(WorkLease.objects.filter(phase_run_id=phase.id).values_list("start", "leased_until"))
    alive = {start for start, until in leases if until >= now}
    expired = {start for start, until in leases if until < now}
    deferred = set(DeferredTask.objects.filter(phase_run_id=phase.id).values_list("start", flat=True))
    if phase.mode == "sub_pipeline":
        child = child_of(phase)
        if child is None or child.state in BATCH_TERMINAL:
            return LostWork(resend_whole=_idle(phase, now, recorded_at=child.finished_at if child else None))
        return None
    if phase.mode == "per_batch":
        if alive or deferred:
            return None
        if expired:
            return LostWork(resend_whole=True, expired=1)
        idle = _idle(phase, now, recorded_at=None)
        queue = queue_for(phase.batch, "batch", phase.name) or settings.QUEUE_BATCH
        return LostWork(resend_whole=True) if idle and depth(queue) == 0 else None
    recorded = list(ChunkRun.objects.filter(phase_run_id=phase.id).values_list("start", "end", "finished_at"))
    missing = missing_ranges([(s, e) for s, e, _ in recorded], phase.items_total, phase.chunk_size)
    if not missing:
        return LostWork(complete=True)
    candidates = [r for r in missing if r[0] not in alive and r[0] not in deferred]
    lost = [r for r in candidates if r[0] in expired]
    if len(lost) < len(candidates):
        last_recorded = max((f for _, _, f in recorded), default=None)
        queue = queue_for(phase.batch, "items", phase.name) or settings.QUEUE_ITEMS
        if not alive and not deferred and _idle(phase, now, recorded_at=last_recorded) and depth(queue) == 0:
            lost = candidates
    return LostWork(ranges=tuple(lost), expired=len([r for r in lost if r[0] in expired]))


def _idle(phase: PhaseRun, now: datetime, *, recorded_at: datetime | None) -> bool:
    """Nothing of the phase happened for a heartbeat period (a third of the lease):
    dispatched, taken up, recorded, re-sent or waiting for a retry. Work a healthy worker
    has taken from the queue starts within that; what is sent again by mistake is
    harmless anyway (it claims its lease before its handler runs)."""
    signs = (phase.started_at, phase.work_started_at, recorded_at, phase.reconciled_at, phase.next_retry_at)
    window = now - timedelta(seconds=runtime("lease_seconds") / 3)
    return max(t for t in signs if t) < window


def _reconcile_phase(
    phase: PhaseRun, now: datetime, depth: Callable[[str], int], report: ReconcileReport
) -> None:
    work = _lost_work(phase, now, depth)
    if work is None:
        return
    batch, label = phase.batch, f"{phase.batch_id}/{phase.name}"
    if work.complete:
        phase_complete(phase_run_id=phase.id, phase_attempt=phase.attempts)
        report.phases_completed.append(label)
        return
    if not (work.ranges or work.resend_whole):
        return
    PhaseRun.objects.filter(id=phase.id).update(reconciled_at=now)
    # What is sent again is queued now: judged as queued work from here on (sent again
    # only once the phase is idle and its queue empty), not as expired again and again.
    starts = [start for start, _ in work.ranges] or [0]
    WorkLease.objects.filter(phase_run_id=phase.id, start__in=starts, leased_until__lt=now).delete()
    report.expired_leases += work.expired
    if phase.mode == "sub_pipeline":
        child = child_of(phase)
        if child is not None and child.state in BATCH_TERMINAL:
            enqueue_orchestration(CHILD_FINISHED_TASK, (str(child.id),), child)
        elif child is None:
            dispatch_phase(PhaseDispatch.of(batch, phase))
        report.phases_resent.append(label)
        return
    if phase.mode == "per_item":
        report.chunks_resent += len(work.ranges)
        dispatch_phase(PhaseDispatch.of(batch, phase, work.ranges))
    else:
        dispatch_phase(PhaseDispatch.of(batch, phase))
    report.phases_resent.append(label)
