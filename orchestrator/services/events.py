"""Recording a batch's state change: the audit row and the outbox event, together.

Both are written in the caller's transaction, so an event and a history row exist
if and only if the change they report was committed.

Every event of a batch carries `sequence` (CONTRACT §3): 1 for its first event, one
more for each next one. `emit()` numbers the events it stores from `Batch.events_count`,
raised by one UPDATE … RETURNING per emit; that row lock also orders concurrent writers,
so a batch's sequence order is its commit order and its outbox id order. Events of no
batch (alerts) carry `"sequence": null`.

`emit()` also stores, on each event, the traceparent of the span storing it: the
publisher's span is its child, and its record's `traceparent` header continues the trace.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from orchestrator.masking import mask_value
from orchestrator.models import Batch, OutboxEvent, StateTransition
from orchestrator.observability import metrics, tracing
from orchestrator.states import BATCH_TERMINAL, BatchState, check_transition

SCHEMA_VERSION = 1
# The actor of the changes BOS makes by itself (operators are "user:<name>").
ORCHESTRATOR = "orchestrator"
OUTBOX_CHANNEL = "bos_outbox"


def event_envelope(
    *,
    batch: Batch,
    event_type: str,
    at: datetime,
    data: dict[str, Any] | None = None,
    sequence: int | None = None,
) -> dict[str, Any]:
    """The envelope of a batch event; `sequence` is filled in by `emit()` when stored."""
    version = batch.pipeline_version
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "correlation_id": batch.correlation_id or None,
        "tenant": batch.tenant.slug,
        "sequence": sequence,
        "data": {
            "batch_id": str(batch.id),
            "external_id": batch.external_id,
            "pipeline": version.pipeline.name,
            "pipeline_version": version.version,
            "state": batch.state,
            "items_total": batch.items_total,
            "items_succeeded": batch.items_succeeded,
            "items_failed": batch.items_failed,
            # An error or reason quoting a secret (a handler's message) goes out masked.
            **(mask_value(data) if data else {}),
        },
    }


def outbox_event(
    *, batch: Batch, event_type: str, at: datetime, data: dict[str, Any] | None = None
) -> OutboxEvent:
    envelope = event_envelope(batch=batch, event_type=event_type, at=at, data=data)
    return OutboxEvent(
        event_id=envelope["event_id"],
        tenant_id=batch.tenant_id,
        batch=batch,  # emit() gives this instance its new events_count
        event_type=event_type,
        key=str(batch.id),
        envelope=envelope,
    )


def claim_sequences(counts: Mapping[Any, int]) -> dict[Any, int]:
    """Raise each batch's `events_count` by its count with one UPDATE; the new values.

    The batch rows stay locked until the transaction ends, so the next writer of the same
    batch numbers its events after these. Several batches are locked in id order first
    (no deadlock between two emits of the same batches).
    """
    if not counts:
        return {}
    ids = sorted(counts, key=str)
    values = ", ".join(["(%s::uuid, %s::bigint)"] * len(ids))
    params: list[Any] = [p for batch_id in ids for p in (str(batch_id), counts[batch_id])]
    table = Batch._meta.db_table
    with connection.cursor() as cursor:
        if len(ids) > 1:
            # UPDATE … FROM takes its row locks in no set order: take them in id order first.
            cursor.execute(
                f"SELECT 1 FROM {table} WHERE id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE",  # noqa: S608
                [[str(i) for i in ids]],
            )
        cursor.execute(
            f"UPDATE {table} AS b SET events_count = b.events_count + v.n "  # noqa: S608
            f"FROM (VALUES {values}) AS v(id, n) WHERE b.id = v.id RETURNING b.id, b.events_count",
            params,
        )
        new = {str(batch_id): int(count) for batch_id, count in cursor.fetchall()}
    return {batch_id: new[str(batch_id)] for batch_id in ids}


def emit(events: Iterable[OutboxEvent]) -> None:
    """Number and store outbox events; wake the publisher when the transaction commits.

    The events of each batch get its next `sequence` numbers in list order: callers list
    them in the order they happened.
    """
    rows = list(events)
    if not rows:
        return
    counts = Counter(row.batch_id for row in rows if row.batch_id is not None)
    last = claim_sequences(counts)
    next_of = {batch_id: last[batch_id] - n + 1 for batch_id, n in counts.items()}
    for row in rows:
        row.traceparent = row.traceparent or _traceparent(row)
        if row.batch_id is None:
            row.envelope["sequence"] = None
            continue
        row.envelope["sequence"] = next_of[row.batch_id]
        next_of[row.batch_id] += 1
        # The caller's instance keeps the stored count, so a later batch.save() keeps it too.
        if OutboxEvent.batch.is_cached(row) and row.batch is not None:
            row.batch.events_count = last[row.batch_id]
    OutboxEvent.objects.bulk_create(rows)
    with connection.cursor() as cursor:
        # Delivered by PostgreSQL only on commit, so the publisher never sees a rollback.
        cursor.execute("SELECT pg_notify(%s, '')", [OUTBOX_CHANNEL])


def _traceparent(row: OutboxEvent) -> str:
    """The span storing the event: the current one when it is in the batch's trace, else
    the batch's stored context (beat or another batch's work stored it); for an event of
    no batch, the current span, if any."""
    if row.batch_id is not None and OutboxEvent.batch.is_cached(row) and row.batch is not None:
        return tracing.traceparent_in(row.batch.traceparent)
    return tracing.current_traceparent()


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
    if to in BATCH_TERMINAL:
        # robust: a failure to count is logged and never keeps the callbacks after it
        # (tasks to enqueue, items to settle) from running.
        transaction.on_commit(partial(_count_finished, batch, to.value), robust=True)
    return row


def _count_finished(batch: Batch, outcome: str) -> None:
    """After the commit of a batch's terminal transition: `bos_batches_finished_total` and
    its items by outcome. Every terminal state is entered through transition(), so this
    is the one place batches are counted; a rolled-back change counts nothing."""
    metrics.record_batch_finished(
        pipeline=batch.pipeline_version.pipeline.name,
        tenant=batch.tenant.slug,
        outcome=outcome,
        items_succeeded=batch.items_succeeded,
        items_failed=batch.items_failed,
    )
