"""Bulk writes on the hot path, in plain SQL: one statement per chunk, no model objects.

Building thousands of model instances costs more than the database work itself, so
items are stored with COPY and a chunk's results with one multi-row INSERT.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from django.db import connection

from orchestrator.payloads import payload_to_storage
from orchestrator.states import ItemState


def copy_items(*, batch_id: UUID, tenant_id: int, items: Iterable[dict[str, Any]]) -> None:
    """Store a batch's items, numbered from 0 in the given order."""
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(
            "COPY orchestrator_batchitem (batch_id, tenant_id, seq, key, payload, state, attempts,"
            " failed_phase, last_error) FROM STDIN"
        ) as copy,
    ):
        for seq, item in enumerate(items):
            payload = json.dumps(payload_to_storage(item.get("payload")), separators=(",", ":"))
            copy.write_row((batch_id, tenant_id, seq, item["key"], payload, ItemState.PENDING, 0, "", ""))


def insert_item_results(*, phase_run_id: int, rows: Sequence[tuple[int, bool, Any, str]]) -> None:
    """Store (item id, ok, output, error) rows of one chunk."""
    if not rows:
        return
    values = ",".join(["(%s, %s, %s, %s::jsonb, %s, now())"] * len(rows))
    params: list[Any] = []
    for item_id, ok, output, error in rows:
        params += [item_id, phase_run_id, ok, None if output is None else json.dumps(output), error]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO orchestrator_itemresult (item_id, phase_run_id, ok, output, error, created_at)"
            f" VALUES {values}",
            params,
        )


def mark_items_failed(*, phase: str, failures: Sequence[tuple[int, str]]) -> None:
    """Mark the (item id, error) items failed in `phase`."""
    if not failures:
        return
    values = ",".join(["(%s::bigint, %s)"] * len(failures))
    params: list[Any] = [p for failure in failures for p in failure]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE orchestrator_batchitem AS i SET state = %s, failed_phase = %s, last_error = v.error"
            f" FROM (VALUES {values}) AS v(id, error) WHERE i.id = v.id",
            [ItemState.FAILED, phase, *params],
        )
