"""Retries that must wait longer than a broker countdown may: stored, then sent by beat.

A Celery countdown lives in the broker as an unacknowledged message; Redis hands such a
message to another worker once its visibility timeout passes, so a wait longer than
`BOS_MAX_COUNTDOWN_SECONDS` is stored here instead and `dispatch_due` (beat, every few
seconds) sends the work when it is due. A chunk sent this way comes with its own
callback; the phase completes once every chunk is recorded.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

from django.db import transaction
from django.utils import timezone

from orchestrator.models import DeferredTask
from orchestrator.states import BatchState, PhaseState
from orchestrator.workflows import PhaseDispatch, dispatch_phase


def defer(
    *,
    phase_run_id: int,
    kind: str,
    delay: float,
    attempt: int,
    start: int = 0,
    end: int = 0,
    reason: str = "",
) -> None:
    DeferredTask.objects.create(
        phase_run_id=phase_run_id,
        kind=kind,
        start=start,
        end=end,
        attempt=attempt,
        due_at=timezone.now() + timedelta(seconds=delay),
        reason=reason[:2000],
    )


def dispatch_due(*, now: datetime | None = None, limit: int = 500) -> int:
    """Send the deferred work that is due; the number sent. Safe from several beats."""
    now = now or timezone.now()
    with transaction.atomic():
        due = list(
            DeferredTask.objects.select_for_update(skip_locked=True)
            .filter(due_at__lte=now)
            .select_related("phase_run__batch__tenant", "phase_run__batch__pipeline_version__pipeline")
            .order_by("due_at")[:limit]
        )
        for task in due:
            phase = task.phase_run
            if phase.state != PhaseState.RUNNING or phase.batch.state != BatchState.RUNNING:
                continue  # cancelled or finished meanwhile: nothing to send
            chunks = ((task.start, task.end),) if task.kind == DeferredTask.Kind.CHUNK else None
            dispatch = PhaseDispatch.of(phase.batch, phase, chunks=chunks, attempt=task.attempt)
            transaction.on_commit(partial(dispatch_phase, dispatch))
        DeferredTask.objects.filter(id__in=[t.id for t in due]).delete()
    return len(due)
