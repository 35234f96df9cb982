"""Retention on a schedule (Celery beat, hourly by default; docs/retention.md): purge the
payloads and results of batches past their tenant's retention and audit records past the
audit log's, then write an audit record `retention.purge` (who: `system:retention`)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from orchestrator import audit
from orchestrator.audit.who import Who, system
from orchestrator.services.retention import purge, record_purge
from tasks.orchestration import StoredRetryingTask


@shared_task(name="tasks.retention.retention_purge_task", base=StoredRetryingTask)
def retention_purge_task() -> dict[str, Any]:
    with audit.acting_as(Who(actor=system("retention"))):
        done = purge()
        record_purge(done, trigger="beat")
    return done.as_dict()
