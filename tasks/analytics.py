"""Scheduled error analytics (Celery beat, every minute): fingerprints, counts and alerts."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from orchestrator.analytics import analyze_errors
from tasks.orchestration import StoredRetryingTask


@shared_task(name="tasks.analytics.analyze_errors_task", base=StoredRetryingTask)
def analyze_errors_task() -> dict[str, Any]:
    """Count the failures recorded since the last run and raise the alerts they call for."""
    return analyze_errors().as_dict()
