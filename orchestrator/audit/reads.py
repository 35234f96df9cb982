"""Data-access logging: every read of item payloads or results (and of what is derived from
them: a batch's metadata and report, a phase's output) through the API, the admin or a
command is an audit record `payload_read`, with how many items were read."""

from __future__ import annotations

from orchestrator.audit.records import record
from orchestrator.models import Batch
from orchestrator.observability import metrics


def payload_read(batch: Batch, *, items: int, fields: list[str]) -> None:
    record(
        "payload_read",
        object_type="batch",
        object_id=batch.pk,
        tenant=batch.tenant_id,
        detail={"items": items, "fields": fields},
    )
    metrics.payload_items_read(items)
