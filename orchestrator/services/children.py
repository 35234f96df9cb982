"""Sub-pipelines: a phase that runs another pipeline as a child batch, and waits for it.

The child gets the parent's tenant, priority, correlation id and metadata (plus the
phase's options under `parent_options`), and the parent's items that have not failed.
Its external id is `<parent external id>.<phase>`, so starting it twice makes one
child. When the child ends, its parent phase completes (the child's report is the
phase's output; items that failed in the child fail in the parent too) or fails.
Cancelling the parent cancels the child.
"""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction

from orchestrator.models import Batch, BatchItem, PhaseRun
from orchestrator.payloads import payload_from_storage
from orchestrator.selectors import pipeline_plan
from orchestrator.services.batches import BatchRequest, batch_create
from orchestrator.services.phases import phase_complete, phase_fail
from orchestrator.states import BatchState, ItemState, PhaseState


def child_batch_start(*, phase_run_id: int) -> Batch | None:
    """Create (once) and start the child batch of a running sub-pipeline phase."""
    phase = PhaseRun.objects.select_related("batch__tenant", "batch__pipeline_version").get(id=phase_run_id)
    if phase.state != PhaseState.RUNNING:
        return None
    parent = phase.batch
    spec = pipeline_plan(parent.pipeline_version).phase(phase.name)
    assert spec.pipeline is not None
    items = [
        {"key": key, "payload": payload_from_storage(payload)}
        for key, payload in BatchItem.objects.filter(batch_id=parent.id)
        .exclude(state=ItemState.FAILED)
        .order_by("seq")
        .values_list("key", "payload")
    ]
    if not items:
        phase_complete(phase_run_id=phase.id, output={"child_batch": None, "reason": "no items left to run"})
        return None
    metadata = {**parent.metadata, "parent_batch": str(parent.id), "parent_phase": phase.name}
    if spec.options:
        metadata["parent_options"] = dict(spec.options)
    request = BatchRequest(
        tenant=parent.tenant.slug,
        external_id=f"{parent.external_id}.{phase.name}"[:200],
        pipeline=spec.pipeline,
        items=items,
        priority=parent.priority,
        deadline=parent.deadline,
        metadata=metadata,
        correlation_id=parent.correlation_id,
    )
    return batch_create(request=request, actor=f"batch:{parent.id}", parent_phase=phase).batch


def child_batch_finished(*, child_id: Any) -> None:
    """The child of a sub-pipeline phase ended: complete or fail that phase."""
    child = Batch.objects.get(id=child_id)
    if child.parent_phase_id is None:
        return
    if child.state in (BatchState.COMPLETED, BatchState.COMPLETED_WITH_ERRORS):
        with transaction.atomic():
            _fail_items_failed_in_child(child)
            phase_complete(
                phase_run_id=child.parent_phase_id,
                output={
                    "child_batch": str(child.id),
                    "state": child.state,
                    "items_succeeded": child.items_succeeded,
                    "items_failed": child.items_failed,
                    "report": child.report,
                },
            )
    else:
        phase_fail(
            phase_run_id=child.parent_phase_id,
            error=f"child batch {child.id} ended {child.state}: {child.error[:500]}",
        )


def _fail_items_failed_in_child(child: Batch) -> None:
    """Items that failed in the child fail in the parent too, naming the phase."""
    assert child.parent_phase_id is not None
    phase = PhaseRun.objects.get(id=child.parent_phase_id)
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
