"""Bulk writes on the hot path, in plain SQL: one statement per chunk, no model objects.

Building thousands of model instances costs more than the database work itself, so
items are stored with COPY and a chunk's results with one multi-row INSERT.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import connection

from orchestrator.payloads import payload_to_storage
from orchestrator.states import ItemState


def copy_items(*, batch_id: UUID, tenant_id: int, items: Iterable[dict[str, Any]]) -> None:
    """Store a batch's items, numbered from 0 in the given order."""
    copy_items_many([(batch_id, tenant_id, items)])


def copy_items_many(batches: Iterable[tuple[UUID, int, Iterable[dict[str, Any]]]]) -> None:
    """Store the items of several batches with one COPY, each numbered from 0."""
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(
            "COPY orchestrator_batchitem (batch_id, tenant_id, seq, key, payload, state, attempts,"
            " failed_phase, last_error, error_class) FROM STDIN"
        ) as copy,
    ):
        for batch_id, tenant_id, items in batches:
            for seq, item in enumerate(items):
                payload = json.dumps(payload_to_storage(item.get("payload")), separators=(",", ":"))
                copy.write_row(
                    (batch_id, tenant_id, seq, item["key"], payload, ItemState.PENDING, 0, "", "", "")
                )


def record_chunk_results(
    *,
    phase_run_id: int,
    phase: str,
    start: int,
    end: int,
    started_at: datetime,
    rows: Sequence[tuple[int, bool, Any, str, str]],
    failures: Sequence[tuple[int, str, str]],
    items: int,
    skipped: int,
    count_progress: bool,
) -> bool:
    """Record one chunk in a single statement; False when it was already recorded.

    The chunk's idempotency row is inserted first; the results, the failed items and
    the phase's progress are written only if that insert happened, all in one atomic
    statement (data-modifying CTEs): one round trip per chunk, whatever its size.
    """
    params: list[Any] = [
        phase_run_id,
        start,
        end,
        len(rows) - len(failures),
        len(failures),
        skipped,
        started_at,
    ]
    parts = [
        'WITH claim AS (INSERT INTO orchestrator_chunkrun (phase_run_id, start, "end", succeeded,'
        " failed, skipped, started_at, finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, now())"
        " ON CONFLICT (phase_run_id, start) DO NOTHING RETURNING id)"
    ]
    if rows:
        values = ",".join(["(%s::bigint, %s::boolean, %s::jsonb, %s::text, %s::text)"] * len(rows))
        parts.append(
            ", results AS (INSERT INTO orchestrator_itemresult"
            " (item_id, phase_run_id, ok, output, error, error_class, created_at)"
            " SELECT v.item_id, %s, v.ok, v.output, v.error, v.error_class, now()"
            f" FROM (VALUES {values}) AS v(item_id, ok, output, error, error_class)"
            " WHERE EXISTS (SELECT 1 FROM claim)"
            " ON CONFLICT (phase_run_id, item_id) DO NOTHING)"
        )
        params.append(phase_run_id)
        for item_id, ok, output, error, error_class in rows:
            params += [item_id, ok, None if output is None else json.dumps(output), error, error_class]
    if failures:
        values = ",".join(["(%s::bigint, %s::text, %s::text)"] * len(failures))
        parts.append(
            ", failed AS (UPDATE orchestrator_batchitem AS i"
            " SET state = %s, failed_phase = %s, last_error = f.error, error_class = f.error_class"
            f" FROM (VALUES {values}) AS f(id, error, error_class)"
            " WHERE i.id = f.id AND EXISTS (SELECT 1 FROM claim))"
        )
        params += [ItemState.FAILED, phase]
        params += [p for failure in failures for p in failure]
    if count_progress:
        parts.append(
            ", progress AS (UPDATE orchestrator_phaserun SET chunks_done = chunks_done + 1,"
            " items_done = items_done + %s, items_failed = items_failed + %s,"
            " work_started_at = LEAST(work_started_at, %s::timestamptz)"
            " WHERE id = %s AND EXISTS (SELECT 1 FROM claim))"
        )
        params += [items, len(failures), started_at, phase_run_id]
    parts.append(" SELECT count(*) FROM claim")
    with connection.cursor() as cursor:
        cursor.execute("".join(parts), params)
        row = cursor.fetchone()
    return bool(row and row[0])
