"""Scheduled upkeep (Celery beat): the reconciler (which also sends deferred work when
due), and the consumer lag alert. Celery's per-task lines about these are at DEBUG
(orchestrator/observability/logging.py)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from orchestrator.services.deferred import dispatch_due
from orchestrator.services.lag_alerts import lag_check
from orchestrator.services.reconcile import reconcile
from tasks.orchestration import RetryingTask


@shared_task(name="tasks.maintenance.reconcile_task", base=RetryingTask)
def reconcile_task() -> dict[str, object]:
    deferred_sent = dispatch_due()
    report = reconcile()
    return {
        "deferred_sent": deferred_sent,
        "started": len(report.started),
        "chunks_resent": report.chunks_resent,
        "phases_resent": len(report.phases_resent),
        "phases_completed": len(report.phases_completed),
    }


@shared_task(name="tasks.maintenance.dispatch_deferred_task", base=RetryingTask)
def dispatch_deferred_task() -> int:
    """Send due deferred work now; beat no longer schedules it (the reconciler does it),
    it stays for messages sent before that and for a manual nudge."""
    return dispatch_due()


@shared_task(name="tasks.maintenance.consumer_lag_check_task")
def consumer_lag_check_task() -> dict[str, object]:
    """Measure the consumer lag; alert once it has been over the threshold long enough."""
    return lag_check(now=timezone.now()).as_dict()
