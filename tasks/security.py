"""Security monitoring on a schedule (Celery beat, every minute): alerts raised from the
audit log's recent refusals, failed logins, throttling, cross-tenant attempts and payload
reads (orchestrator.security.watch)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from orchestrator.security.watch import security_watch
from tasks.orchestration import RetryingTask


@shared_task(name="tasks.security.security_watch_task", base=RetryingTask)
def security_watch_task() -> dict[str, Any]:
    return security_watch().as_dict()
