"""Scheduled insights (Celery beat): the SLA check, and anomalies and forecasts."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from orchestrator.insights.sla import sla_sweep
from orchestrator.insights.watch import watch_insights
from tasks.orchestration import RetryingTask


@shared_task(name="tasks.insights.sla_check_task", base=RetryingTask)
def sla_check_task() -> dict[str, Any]:
    """Project unfinished batches against their deadlines; raise what is due."""
    return sla_sweep().as_dict()


@shared_task(name="tasks.insights.insights_task", base=RetryingTask)
def insights_task() -> dict[str, Any]:
    """Anomalous phase runs, predicted error surges and breaker trips, as alerts."""
    return watch_insights().as_dict()
