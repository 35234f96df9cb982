"""Recording a batch's state change: the audit row and the outbox event, together.

Both are written in the caller's transaction, so an event and a history row exist
if and only if the change they report was committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from orchestrator.models import Batch, OutboxEvent, StateTransition
from orchestrator.states import BATCH_TERMINAL, BatchState, check_transition

SCHEMA_VERSION = 1
# The actor of the changes BOS makes by itself (operators are "user:<name>").
ORCHESTRATOR = "orchestrator"
OUTBOX_CHANNEL = "bos_outbox"


def event_envelope(
    *, batch: Batch, event_type: str, at: datetime, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    version = batch.pipeline_version
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "correlation_id": batch.correlation_id or None,
        "tenant": batch.tenant.slug,
        "data": {
            "batch_id": str(batch.id),
            "external_id": batch.external_id,
            "pipeline": version.pipeline.name,
            "pipeline_version": version.version,
            "state": batch.state,
            "items_total": batch.items_total,
            "items_succeeded": batch.items_succeeded,
            "items_failed": batch.items_failed,
            **(data or {}),
        },
    }


def outbox_event(
    *, batch: Batch, event_type: str, at: datetime, data: dict[str, Any] | None = None
) -> OutboxEvent:
    envelope = event_envelope(batch=batch, event_type=event_type, at=at, data=data)
    return OutboxEvent(
        event_id=envelope["event_id"],
        tenant_id=batch.tenant_id,
        batch_id=batch.id,
        event_type=event_type,
        key=str(batch.id),
        envelope=envelope,
    )


def emit(events: Iterable[OutboxEvent]) -> None:
    """Store outbox events and wake the publisher when the transaction commits."""
    rows = list(events)
    if not rows:
        return
    OutboxEvent.objects.bulk_create(rows)
    with connection.cursor() as cursor:
        # Delivered by PostgreSQL only on commit, so the publisher never sees a rollback.
        cursor.execute("SELECT pg_notify(%s, '')", [OUTBOX_CHANNEL])


def transition(
    batch: Batch,
    *,
    to: BatchState,
    actor: str,
    reason: str = "",
    phase: str = "",
    at: datetime | None = None,
) -> StateTransition:
    """Move a locked batch to `to` (checked), returning the unsaved audit row.

    The caller saves the batch and bulk-inserts the audit rows, so a service that
    makes several transitions pays one round trip for them all.
    """
    current = BatchState(batch.state) if batch.state else None
    check_transition(current, to)
    at = at or timezone.now()
    batch.transitions_count += 1
    row = StateTransition(
        batch_id=batch.id,
        tenant_id=batch.tenant_id,
        seq=batch.transitions_count,
        from_state=batch.state or "",
        to_state=to.value,
        phase=phase,
        reason=reason[:500],
        actor=actor[:200],
        at=at,
    )
    batch.state = to.value
    batch.finished_at = at if to in BATCH_TERMINAL else None
    return row
