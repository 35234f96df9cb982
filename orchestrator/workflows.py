"""Celery canvas building: how a phase becomes tasks, and which queues they go to.

A per-item phase is a chord: one task per chunk of items (by item sequence range),
whose callback records the phase's completion; an error callback records its failure
if a chunk task fails for good, so a phase never hangs. A per-batch phase is one task;
a sub-pipeline phase is one task that creates and starts the child batch. Queues come
from the routing rules (orchestrator/routing.py); None means the task's default queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import chord
from django.conf import settings

from orchestrator.models import Batch, PhaseRun
from orchestrator.pipelines import chunk_bounds
from orchestrator.routing import Kind, TaskFacts, route


def queue_for(batch: Batch, kind: Kind, phase: str = "") -> str | None:
    facts = TaskFacts(
        kind=kind,
        priority=batch.priority,
        pipeline=batch.pipeline_version.pipeline.name,
        tenant=batch.tenant.slug,
        phase=phase,
    )
    return route(settings.BOS_ROUTES, facts)


def _options(queue: str | None) -> dict[str, Any]:
    return {"queue": queue} if queue else {}


@dataclass(frozen=True)
class PhaseDispatch:
    """What it takes to send a started phase to the workers (built under the lock).

    `chunks`: only these item ranges (the reconciler re-sending what is missing);
    by default all of them.
    """

    phase_run_id: int
    mode: str
    items_total: int
    chunk_size: int
    work_queue: str | None
    orchestration_queue: str | None
    chunks: tuple[tuple[int, int], ...] | None = None
    # The attempt its chunk tasks start at (2 after a first try ran inline).
    attempt: int = 1

    @classmethod
    def of(
        cls,
        batch: Batch,
        phase: PhaseRun,
        chunks: tuple[tuple[int, int], ...] | None = None,
        attempt: int = 1,
    ) -> PhaseDispatch:
        return cls(
            phase_run_id=phase.id,
            mode=phase.mode,
            items_total=phase.items_total,
            chunk_size=phase.chunk_size,
            work_queue=queue_for(batch, "items" if phase.mode == "per_item" else "batch", phase.name),
            orchestration_queue=queue_for(batch, "orchestration"),
            chunks=chunks,
            attempt=attempt,
        )


def dispatch_phase(d: PhaseDispatch) -> None:
    from tasks.orchestration import child_batch_start_task, phase_complete_task, phase_fail_task
    from tasks.phases import run_batch_phase_task, run_item_chunk_task

    work, orchestration = _options(d.work_queue), _options(d.orchestration_queue)
    if d.mode == "per_batch":
        run_batch_phase_task.apply_async((d.phase_run_id, d.attempt), **work)
        return
    if d.mode == "sub_pipeline":
        child_batch_start_task.apply_async((d.phase_run_id,), **orchestration)
        return
    header = [
        run_item_chunk_task.si(d.phase_run_id, start, end, d.attempt).set(**work)
        for start, end in (d.chunks or chunk_bounds(d.items_total, d.chunk_size))
    ]
    body = phase_complete_task.si(d.phase_run_id).set(**orchestration)
    body.on_error(
        phase_fail_task.si(d.phase_run_id, "a chunk task of this phase failed for good").set(**orchestration)
    )
    chord(header)(body)


def enqueue_orchestration(task: Any, args: tuple[Any, ...], batch: Batch, countdown: float = 0) -> None:
    """Send an orchestration task about `batch` to the queue its routing rules choose."""
    task.apply_async(args, countdown=countdown, **_options(queue_for(batch, "orchestration")))
