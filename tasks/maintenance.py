"""Scheduled upkeep (Celery beat): the reconciler."""

from __future__ import annotations

from celery import shared_task

from orchestrator.services.reconcile import reconcile
from tasks.orchestration import RetryingTask


@shared_task(name="tasks.maintenance.reconcile_task", base=RetryingTask)
def reconcile_task() -> dict[str, object]:
    report = reconcile()
    return {
        "started": len(report.started),
        "chunks_resent": report.chunks_resent,
        "phases_resent": len(report.phases_resent),
        "phases_completed": len(report.phases_completed),
    }
