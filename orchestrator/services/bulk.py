"""Bulk writes on the hot path, in plain SQL: one statement per chunk, no model objects.

Building thousands of model instances costs more than the database work itself, so
items are stored with COPY and a chunk's results with one multi-row INSERT. Payloads and
outputs are encrypted here as the ORM's EncryptedJSONField would (orchestrator.payloads).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import connection

from orchestrator.payloads import encrypt
from orchestrator.states import ItemState, PhaseState


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
                payload = encrypt(item.get("payload"))
                copy.write_row(
                    (batch_id, tenant_id, seq, item["key"], payload, ItemState.PENDING, 0, "", "", "")
                )


@dataclass(frozen=True)
class Recorded:
    """What recording a chunk did: `stored` False when it was already recorded, or its
    phase is no longer running at the writer's attempt (a stale write changes nothing);
    `phase_covered` when this chunk was the one that completed the phase's items."""

    stored: bool
    phase_covered: bool = False


def record_chunk_results(
    *,
    phase_run_id: int,
    phase: str,
    start: int,
    end: int,
    started_at: datetime,
    rows: Sequence[tuple[int, bool, Any, str, str]],
    failures: Sequence[tuple[int, str, str]],
    skipped: int,
    count_progress: bool,
    attempt: int = 0,
) -> Recorded:
    """Record one chunk in a single statement, fenced by the phase's state and attempt.

    The phase row is locked and must be `running` at `attempt` (0: any attempt), so a
    write from a stale task (an attempt that was retried, a cancelled batch) changes
    nothing, and a cancel that commits first is seen. The chunk's idempotency row is
    inserted next; the results, the failed items, the phase's progress and the release of
    the chunk's lease are written only if that insert happened, all in one atomic
    statement (data-modifying CTEs): one round trip per chunk, whatever its size.
    """
    params: list[Any] = [
        phase_run_id,
        PhaseState.RUNNING.value,
        attempt,
        attempt,
        start,
        end,
        len(rows) - len(failures),
        len(failures),
        skipped,
        started_at,
        attempt,
    ]
    parts = [
        "WITH phase AS (SELECT id, attempts FROM orchestrator_phaserun WHERE id = %s AND state = %s"
        " AND (%s = 0 OR attempts = %s) FOR UPDATE),"
        ' claim AS (INSERT INTO orchestrator_chunkrun (phase_run_id, start, "end", succeeded,'
        " failed, skipped, started_at, finished_at, attempt)"
        " SELECT phase.id, %s, %s, %s, %s, %s, %s, now(), GREATEST(%s, phase.attempts) FROM phase"
        " ON CONFLICT (phase_run_id, start) DO NOTHING RETURNING id)"
    ]
    if rows:
        values = ",".join(["(%s::bigint, %s::boolean, %s::text, %s::text, %s::text)"] * len(rows))
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
            params += [item_id, ok, encrypt(output), error, error_class]
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
    parts.append(
        ", released AS (DELETE FROM orchestrator_worklease WHERE phase_run_id = %s AND start = %s"
        " AND EXISTS (SELECT 1 FROM claim))"
    )
    params += [phase_run_id, start]
    if count_progress:
        parts.append(
            ", progress AS (UPDATE orchestrator_phaserun SET chunks_done = chunks_done + 1,"
            " items_done = items_done + %s, items_failed = items_failed + %s,"
            " work_started_at = LEAST(work_started_at, %s::timestamptz)"
            " WHERE id = %s AND EXISTS (SELECT 1 FROM claim) RETURNING items_done >= items_total AS covered)"
            " SELECT (SELECT count(*) FROM claim), COALESCE((SELECT covered FROM progress), false)"
        )
        params += [end - start, len(failures), started_at, phase_run_id]
    else:
        parts.append(" SELECT (SELECT count(*) FROM claim), false")
    with connection.cursor() as cursor:
        cursor.execute("".join(parts), params)
        row = cursor.fetchone()
    return Recorded(stored=bool(row and row[0]), phase_covered=bool(row and row[1]))
