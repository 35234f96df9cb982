"""Scheduled snapshots of the batches that have not ended (Celery beat, every minute)."""

from __future__ import annotations

import logging

from celery import shared_task

from orchestrator.services.snapshots import snapshot_running_batches, stalled_batches
from tasks.orchestration import StoredRetryingTask

logger = logging.getLogger(__name__)


@shared_task(name="tasks.snapshots.snapshot_task", base=StoredRetryingTask)
def snapshot_task() -> dict[str, object]:
    """Snapshot every non-terminal batch, then log the running ones that have stalled."""
    taken = snapshot_running_batches()
    stalled = stalled_batches() if taken else []
    if stalled:
        logger.warning(
            "running batches without any progress over their last snapshots",
            extra={"batch_ids": [str(batch_id) for batch_id in stalled]},
        )
    return {"snapshots": taken, "stalled": [str(batch_id) for batch_id in stalled]}
