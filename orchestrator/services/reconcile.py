"""The reconciler: finds work that was lost and sends only what is missing again.

Lost work happens: a worker killed with `kill -9` holds tasks that the Redis broker gives
back only after its visibility timeout; a chord whose member died never calls back.
Every `BOS_RECONCILE_INTERVAL_SECONDS` (Celery beat) this looks for

- batches `accepted` for longer than `BOS_STALE_AFTER_SECONDS` → their start is sent again;
- running phases with no progress for that long → for a per-item phase, the chunks
  without a recorded result are sent again in a new chord (a chunk recorded twice is
  recorded once), or, if every chunk is recorded, the phase is completed (its callback
  was lost); a per-batch phase's task is sent again; a sub-pipeline's child is started,
  or its end reported, again.

Everything it sends is idempotent, so running it twice, or from two beats at once, does no
harm; a Redis lock keeps two from working at the same moment anyway.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from orchestrator.models import Batch, ChunkRun, PhaseRun
from orchestrator.pipelines import chunk_bounds
from orchestrator.services.phases import phase_complete
from orchestrator.states import BATCH_TERMINAL, BatchState, PhaseState
from orchestrator.workflows import PhaseDispatch, dispatch_phase, enqueue_orchestration

logger = logging.getLogger(__name__)
LOCK = "bos:reconciler"


@dataclass
class ReconcileReport:
    started: list[str] = field(default_factory=list)
    chunks_resent: int = 0
    phases_resent: list[str] = field(default_factory=list)
    phases_completed: list[str] = field(default_factory=list)
    locked_out: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.started or self.chunks_resent or self.phases_resent or self.phases_completed)


def reconcile(*, stale_after: float | None = None, now: datetime | None = None) -> ReconcileReport:
    """One pass, under a Redis lock (a second reconciler at the same moment does nothing)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    lock = client.lock(LOCK, timeout=300, blocking=False)
    if not lock.acquire():
        return ReconcileReport(locked_out=True)
    try:
        return _reconcile(stale_after=stale_after, now=now)
    finally:
        with contextlib.suppress(redis.exceptions.LockError):  # expired meanwhile
            lock.release()


def _reconcile(*, stale_after: float | None, now: datetime | None) -> ReconcileReport:
    from tasks.orchestration import batch_start_task

    now = now or timezone.now()
    cutoff = _cutoff(stale_after, now)
    report = ReconcileReport()
    accepted = Batch.objects.filter(state=BatchState.ACCEPTED, updated_at__lt=cutoff)
    for batch in accepted.select_related("tenant", "pipeline_version__pipeline")[:500]:
        Batch.objects.filter(id=batch.id, state=BatchState.ACCEPTED).update(updated_at=now)
        enqueue_orchestration(batch_start_task, (str(batch.id),), batch)
        report.started.append(str(batch.id))
    for phase in stale_phases(stale_after=stale_after, now=now):
        PhaseRun.objects.filter(id=phase.id).update(reconciled_at=now)
        _resend(phase, report)
    if report.changed:
        logger.warning("reconciler re-sent lost work: %s", report)
    return report


def stale_phases(*, stale_after: float | None = None, now: datetime | None = None) -> list[PhaseRun]:
    """Running phases of running batches with no sign of progress for `stale_after` s.

    Progress is the latest of: dispatch, a worker taking it up, a chunk recorded, the
    reconciler re-sending it, a retry it is waiting for (which may lie in the future).
    """
    cutoff = _cutoff(stale_after, now)
    candidates = (
        PhaseRun.objects.filter(
            state=PhaseState.RUNNING, batch__state=BatchState.RUNNING, started_at__lt=cutoff
        )
        .annotate(last_chunk=Max("chunks__finished_at"))
        .select_related("batch__tenant", "batch__pipeline_version__pipeline")
    )
    return [
        phase
        for phase in candidates[:500]
        if max(
            t
            for t in (
                phase.started_at,
                phase.work_started_at,
                phase.last_chunk,
                phase.reconciled_at,
                phase.next_retry_at,
            )
            if t
        )
        < cutoff
    ]


def _cutoff(stale_after: float | None, now: datetime | None) -> datetime:
    seconds = settings.BOS_STALE_AFTER_SECONDS if stale_after is None else stale_after
    return (now or timezone.now()) - timedelta(seconds=seconds)


def _resend(phase: PhaseRun, report: ReconcileReport) -> None:
    from tasks.orchestration import child_batch_finished_task

    batch, label = phase.batch, f"{phase.batch_id}/{phase.name}"
    if phase.mode == "sub_pipeline":
        child = phase.child_batches.first()
        if child is not None and child.state in BATCH_TERMINAL:
            enqueue_orchestration(child_batch_finished_task, (str(child.id),), child)
        elif child is None:
            dispatch_phase(PhaseDispatch.of(batch, phase))
        report.phases_resent.append(label)
        return
    missing: tuple[tuple[int, int], ...] | None = None
    if phase.mode == "per_item":
        recorded = set(ChunkRun.objects.filter(phase_run_id=phase.id).values_list("start", flat=True))
        missing = tuple(b for b in chunk_bounds(phase.items_total, phase.chunk_size) if b[0] not in recorded)
        if not missing:
            phase_complete(phase_run_id=phase.id)
            report.phases_completed.append(label)
            return
        report.chunks_resent += len(missing)
    dispatch_phase(PhaseDispatch.of(batch, phase, missing))
    report.phases_resent.append(label)
