"""Sub-pipelines: a phase that runs another pipeline as a child batch, and waits for it.

The child gets the parent's tenant, priority, correlation id and metadata (plus the
phase's options under `parent_options`), and the parent's items that have not failed.

A child is known by its parent phase and that phase's attempt (`parent_phase`,
`parent_attempt`, unique together), never by its external id: each attempt of the
phase has its own child, so retrying a parent whose child failed runs a new child,
and a tenant's own batch named like a child is never taken for one. The child's
external id only says where it comes from: `<parent external id>.<phase>`, with
`#<attempt>` from the second attempt on.

When the child ends — completed, failed, cancelled, rolled back, or resting in
`rollback_failed` — its parent phase completes (the child's report is the phase's
output; items that failed in the child fail in the parent too) or fails. A child
still rolling back tells its parent when the rollback ends. The news of a child of an
earlier attempt changes nothing. Cancelling the parent cancels the child.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connection, transaction

from orchestrator.models import Batch, BatchItem, PhaseRun
from orchestrator.observability import tracing
from orchestrator.selectors import pipeline_plan
from orchestrator.services.batches import BatchRequest, batch_create
from orchestrator.services.phases import phase_complete, phase_fail
from orchestrator.services.progress import lock_batch
from orchestrator.states import BatchState, ItemState, PhaseState

logger = logging.getLogger(__name__)

CHILD_SUCCEEDED = frozenset({BatchState.COMPLETED, BatchState.COMPLETED_WITH_ERRORS})
CHILD_FAILED = frozenset(
    {BatchState.FAILED, BatchState.CANCELLED, BatchState.ROLLED_BACK, BatchState.ROLLBACK_FAILED}
)


def child_external_id(parent_external_id: str, phase: str, attempt: int) -> str:
    """What a child is called (for people: it is found by its parent phase)."""
    suffix = f".{phase}" + (f"#{attempt}" if attempt > 1 else "")
    return parent_external_id[: 200 - len(suffix)] + suffix


def child_of(phase: PhaseRun) -> Batch | None:
    """The child batch of the phase's current attempt, if it has been created."""
    return Batch.objects.filter(parent_phase_id=phase.id, parent_attempt=phase.attempts).first()


def child_batch_start(*, phase_run_id: int) -> Batch | None:
    """Create (once per phase attempt) and start the child batch of a running sub-pipeline phase.

    Under the parent's lock, so two deliveries of the start make one child.
    """
    batch_id = PhaseRun.objects.filter(id=phase_run_id).values_list("batch_id", flat=True).first()
    if batch_id is None:
        return None
    with transaction.atomic():
        parent = lock_batch(batch_id)
        phase = PhaseRun.objects.get(id=phase_run_id)
        if phase.state != PhaseState.RUNNING:
            return None
        existing = child_of(phase)
        if existing is not None:
            return existing
        spec = pipeline_plan(parent.pipeline_version).phase(phase.name)
        assert spec.pipeline is not None
        items = [
            {"key": key, "payload": payload}
            for key, payload in BatchItem.objects.filter(batch_id=parent.id)
            .exclude(state=ItemState.FAILED)
            .order_by("seq")
            .values_list("key", "payload")
        ]
        if not items:
            phase_complete(
                phase_run_id=phase.id, output={"child_batch": None, "reason": "no items left to run"}
            )
            return None
        metadata = {**parent.metadata, "parent_batch": str(parent.id), "parent_phase": phase.name}
        if spec.options:
            metadata["parent_options"] = dict(spec.options)
        request = BatchRequest(
            tenant=parent.tenant.slug,
            external_id=child_external_id(parent.external_id, phase.name, phase.attempts),
            pipeline=spec.pipeline,
            items=items,
            priority=parent.priority,
            deadline=parent.deadline,
            metadata=metadata,
            correlation_id=parent.correlation_id,
            # The child's work is traced in its parent's trace.
            traceparent=tracing.traceparent_in(parent.traceparent),
        )
        return batch_create(request=request, actor=f"batch:{parent.id}", parent_phase=phase).batch


def child_batch_finished(*, child_id: Any) -> None:
    """The child of a sub-pipeline phase ended: complete or fail that phase.

    Only the child of the phase's current attempt counts, and only while the phase
    runs: a late word from an earlier child, or a second one, changes nothing.
    """
    child = Batch.objects.filter(id=child_id).first()
    if child is None or child.parent_phase_id is None or child.parent_id is None:
        return
    with transaction.atomic():
        lock_batch(child.parent_id)
        child.refresh_from_db()
        phase = PhaseRun.objects.filter(id=child.parent_phase_id).first()
        if phase is None or phase.state != PhaseState.RUNNING:
            return
        if child.parent_attempt is not None and child.parent_attempt != phase.attempts:
            logger.info(
                "child %s of attempt %s ignored: phase %s is on attempt %s",
                child.id,
                child.parent_attempt,
                phase.name,
                phase.attempts,
            )
            return
        if child.state in CHILD_SUCCEEDED:
            _fail_items_failed_in_child(child, phase)
            phase_complete(
                phase_run_id=phase.id,
                output={
                    "child_batch": str(child.id),
                    "state": child.state,
                    "items_succeeded": child.items_succeeded,
                    "items_failed": child.items_failed,
                    "report": child.report,
                },
            )
        elif child.state in CHILD_FAILED:
            phase_fail(
                phase_run_id=phase.id,
                error=f"child batch {child.id} ended {child.state}: {child.error[:500]}",
            )
        # Otherwise it has not ended (rolling back): its end tells the parent again.


def _fail_items_failed_in_child(child: Batch, phase: PhaseRun) -> None:
    """Items that failed in the child fail in the parent too, naming the phase."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE orchestrator_batchitem AS p SET state = %s, failed_phase = %s, last_error = c.last_error"
            " FROM orchestrator_batchitem AS c"
            " WHERE c.batch_id = %s AND c.state = %s AND p.batch_id = %s AND p.key = c.key AND p.state <> %s",
            [ItemState.FAILED, phase.name, child.id, ItemState.FAILED, child.parent_id, ItemState.FAILED],
        )
        failed = cursor.rowcount
    if failed:
        PhaseRun.objects.filter(id=phase.id).update(items_failed=failed)
