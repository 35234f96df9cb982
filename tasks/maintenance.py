"""Scheduled upkeep (Celery beat): the reconciler (which also sends deferred work when
due), the consumer lag alert, and the clean-up of stored task results. Their results
are stored in PostgreSQL (tasks/results.py). Celery's per-task lines about these are at DEBUG
(orchestrator/observability/logging.py)."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone
from django_celery_results.models import TaskResult

from orchestrator.services.deferred import dispatch_due
from orchestrator.services.lag_alerts import lag_check
from orchestrator.services.reconcile import reconcile
from tasks.orchestration import StoredRetryingTask
from tasks.results import StoredResultTask


@shared_task(name="tasks.maintenance.reconcile_task", base=StoredRetryingTask)
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


@shared_task(name="tasks.maintenance.dispatch_deferred_task", base=StoredRetryingTask)
def dispatch_deferred_task() -> int:
    """Send due deferred work now; beat no longer schedules it (the reconciler does it),
    it stays for messages sent before that and for a manual nudge."""
    return dispatch_due()


@shared_task(name="tasks.maintenance.consumer_lag_check_task", base=StoredResultTask)
def consumer_lag_check_task() -> dict[str, object]:
    """Measure the consumer lag; alert once it has been over the threshold long enough."""
    return lag_check(now=timezone.now()).as_dict()


@shared_task(name="tasks.maintenance.task_results_cleanup_task", base=StoredRetryingTask)
def task_results_cleanup_task() -> dict[str, int]:
    """Delete stored task results older than CELERY_RESULT_EXPIRES (and their batch links).

    Celery's own `celery.backend_cleanup` cleans the app's backend, Redis, which expires
    its keys itself; the database backend needs this."""
    expired = TaskResult.objects.get_all_expired(timedelta(seconds=settings.CELERY_RESULT_EXPIRES))
    _, by_model = expired.delete()
    return {"deleted": by_model.get(TaskResult._meta.label, 0)}
