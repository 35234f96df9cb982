"""Celery canvas building: how a phase becomes tasks, and which queues they go to.

A per-item phase is a chord: one task per chunk of items (by item sequence range),
whose callback records the phase's completion; an error callback records its failure
if a chunk task fails for good, so a phase never hangs. A per-batch phase is one task;
a sub-pipeline phase is one task that creates and starts the child batch. Queues come
from the routing rules (orchestrator/routing.py); None means the task's default queue.

Tasks are named, never imported: the domain package does not depend on `tasks/`. Every
task about a phase carries the phase attempt it works for, so whatever it writes is
fenced (a leftover of an earlier attempt changes nothing).

Every task about a batch is sent within the batch's trace context (`Batch.traceparent`)
unless the sender's span is already in that trace, so work sent by beat, the reconciler
or another batch's commit is traced with its own batch (docs/observability.md#traces).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery import chord, current_app, signature
from celery.canvas import Signature
from django.conf import settings

from orchestrator.config import runtime
from orchestrator.models import Batch, PhaseRun
from orchestrator.observability import tracing
from orchestrator.observability.context import TASK_HEADER, batch_context
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


def _options(
    queue: str | None, log: Mapping[str, str] | None = None, args: tuple[Any, ...] = ()
) -> dict[str, Any]:
    options: dict[str, Any] = {"queue": queue} if queue else {}
    if log:
        # The batch's correlation context for the task's log lines (bos_project/celery.py),
        # and its batch and phase beside the ids in Flower's task list.
        options["headers"] = {TASK_HEADER: dict(log)}
        named = " ".join(f"{k}={log[k]}" for k in ("batch_id", "phase") if log.get(k))
        options["argsrepr"] = f"{args!r} {named}"
    return options


CHUNK_TASK = "tasks.phases.run_item_chunk_task"
BATCH_PHASE_TASK = "tasks.phases.run_batch_phase_task"
PHASE_COMPLETE_TASK = "tasks.orchestration.phase_complete_task"
PHASE_FAIL_TASK = "tasks.orchestration.phase_fail_task"
CHILD_START_TASK = "tasks.orchestration.child_batch_start_task"
CHILD_FINISHED_TASK = "tasks.orchestration.child_batch_finished_task"
BATCH_START_TASK = "tasks.orchestration.batch_start_task"
COMPENSATE_TASK = "tasks.orchestration.compensate_task"


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
    # The phase's attempt (PhaseRun.attempts): its tasks' writes are fenced by it.
    phase_attempt: int = 0
    # The batch's correlation context (correlation_id, batch_id, tenant, phase).
    log: tuple[tuple[str, str], ...] = ()
    # The batch's trace context (Batch.traceparent): its tasks are sent within it.
    traceparent: str = ""

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
            phase_attempt=phase.attempts,
            log=tuple(batch_context(batch, phase.name).items()),
            traceparent=batch.traceparent,
        )


class Sender:
    """Hands work to Celery: every task BOS sends leaves through `SENDER.send`.

    The one seam between the engine and the broker. Tests put a holding sender in its
    place (tests/support/sending.py) to keep batches where they are, or to lose what was
    sent, instead of patching private functions.
    """

    def send(self, work: Signature) -> None:
        work.apply_async()


SENDER = Sender()


def send(work: Signature, traceparent: str = "") -> None:
    """Send `work` about a batch whose trace context is `traceparent`: within it, unless the
    sender's span is already in that trace (orchestrator.observability.tracing.within)."""
    with tracing.within(traceparent):
        SENDER.send(work)


def runs_here(batch: Batch, mode: str, *, inline: bool) -> bool:
    """Whether a started phase runs in the caller (an orchestration task) instead of being
    sent: a small batch — at most `inline_max_items` (runtime, `BOS_INLINE_MAX_ITEMS`) items — when the caller allows it,
    because a fan-out costs more than so little work. The phase then runs through the same
    execution functions a chunk task uses (`orchestrator.services.execution`), in the
    caller's transaction; states, history, events and results are the same either way.
    Sub-pipelines are always sent."""
    return (
        inline
        and mode != "sub_pipeline"
        and batch.items_total <= runtime("inline_max_items", tenant=batch.tenant_id)
    )


def _sig(name: str, *args: Any, queue: str | None, log: Mapping[str, str] | None = None) -> Signature:
    return signature(name, args=args, immutable=True, app=current_app).set(**_options(queue, log, args))


def dispatch_phase(d: PhaseDispatch) -> None:
    log = dict(d.log)
    if d.mode == "per_batch":
        send(
            _sig(BATCH_PHASE_TASK, d.phase_run_id, d.attempt, d.phase_attempt, queue=d.work_queue, log=log),
            d.traceparent,
        )
        return
    if d.mode == "sub_pipeline":
        send(_sig(CHILD_START_TASK, d.phase_run_id, queue=d.orchestration_queue, log=log), d.traceparent)
        return
    header = [
        _sig(CHUNK_TASK, d.phase_run_id, start, end, d.attempt, d.phase_attempt, queue=d.work_queue, log=log)
        for start, end in (d.chunks or chunk_bounds(d.items_total, d.chunk_size))
    ]
    body = _sig(PHASE_COMPLETE_TASK, d.phase_run_id, d.phase_attempt, queue=d.orchestration_queue, log=log)
    body.on_error(
        _sig(
            PHASE_FAIL_TASK,
            d.phase_run_id,
            "a chunk task of this phase failed for good",
            d.phase_attempt,
            queue=d.orchestration_queue,
            log=log,
        )
    )
    send(chord(header, body), d.traceparent)


def send_chunks(
    batch: Batch, phase_run_id: int, chunks: tuple[tuple[int, int], ...], *, phase_attempt: int
) -> None:
    """Send chunks on their own, outside any chord (the rest of a chunk that was stopped
    early): the phase completes when its chunk records cover all items."""
    queue = queue_for(batch, "items")
    log = batch_context(batch)
    for start, end in chunks:
        send(
            _sig(CHUNK_TASK, phase_run_id, start, end, 1, phase_attempt, queue=queue, log=log),
            batch.traceparent,
        )


def send_phase_complete(batch: Batch, phase_run_id: int, *, phase_attempt: int) -> None:
    """Ask for a phase's completion (its items are all recorded); idempotent and fenced."""
    send(
        _sig(
            PHASE_COMPLETE_TASK,
            phase_run_id,
            phase_attempt,
            queue=queue_for(batch, "orchestration"),
            log=batch_context(batch),
        ),
        batch.traceparent,
    )


def enqueue_orchestration(task: str, args: tuple[Any, ...], batch: Batch, countdown: float = 0) -> None:
    """Send an orchestration task, by name, about `batch` to the queue its routing rules choose."""
    options = _options(queue_for(batch, "orchestration"), batch_context(batch), args)
    work = signature(task, args=args, app=current_app).set(**options)
    if countdown:
        work = work.set(countdown=countdown)
    send(work, batch.traceparent)
