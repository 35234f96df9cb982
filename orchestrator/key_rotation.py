"""Key rotation (`manage.py bos_rotate_keys`, docs/encryption.md): find the stored values
that are not under the newest of BOS_ENCRYPTION_KEYS (under an older key, or plain JSON
of rows written before encryption) and re-encrypt them under it.

Safe while the service runs: each encrypted column is read in keyset pages by primary key
(no transaction held), and each page's stale rows are rewritten in one short transaction
that locks them with `FOR UPDATE SKIP LOCKED` and decides from the locked value: a row a
writer holds is never waited for (no deadlock with the engine) and is retried after the
scan; a value a writer changed meanwhile is what gets re-encrypted, never an older one.
Resumable: every page commits, and a rerun rewrites only what is still stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from django.db import connection, transaction

from orchestrator import payloads

# Rounds for the rows a writer held during the scan, and the pause before each.
RETRY_ROUNDS = 5
RETRY_PAUSE_SECONDS = 0.5


@dataclass(frozen=True)
class Column:
    """One encrypted column: its model field, table and primary key type."""

    label: str
    table: str
    column: str
    id_type: str


COLUMNS = (
    Column("Batch.metadata", "orchestrator_batch", "metadata", "uuid"),
    Column("Batch.report", "orchestrator_batch", "report", "uuid"),
    Column("PhaseRun.output", "orchestrator_phaserun", "output", "bigint"),
    Column("BatchItem.payload", "orchestrator_batchitem", "payload", "bigint"),
    Column("ItemResult.output", "orchestrator_itemresult", "output", "bigint"),
)


@dataclass
class Counts:
    """What one column holds (values, not SQL NULLs), and what a rotation did to it."""

    values: int = 0
    newest: int = 0  # under the newest key
    older: int = 0  # under an older key of BOS_ENCRYPTION_KEYS
    plaintext: int = 0  # plain JSON of a row written before encryption
    unreadable: int = 0  # no configured key opens it
    rewritten: int = 0
    left: int = 0  # still stale after the retries (a writer held it, or wrote an older key)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def kind(stored: str) -> str:
    """`newest`, `older`, `plaintext` or `unreadable`."""
    if not payloads.is_token(stored):
        return "plaintext"
    if payloads.under_newest_key(stored):
        return "newest"
    try:
        payloads.decrypt(stored)
    except payloads.UnreadableData:
        return "unreadable"
    return "older"


def values_count(column: Column) -> int:
    """How many non-null values the column holds (the progress bar's total)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {column.table} WHERE {column.column} IS NOT NULL")  # noqa: S608
        return int(cursor.fetchone()[0])


def pages(column: Column, size: int) -> Iterator[list[tuple[object, str]]]:
    """(id, stored value) of every non-null value, `size` a page, in id order."""
    base = f"SELECT id, {column.column} FROM {column.table} WHERE {column.column} IS NOT NULL"  # noqa: S608
    last: Any = None
    while True:
        with connection.cursor() as cursor:
            if last is None:
                cursor.execute(f"{base} ORDER BY id LIMIT %s", [size])
            else:
                cursor.execute(f"{base} AND id > %s::{column.id_type} ORDER BY id LIMIT %s", [last, size])
            rows = cursor.fetchall()
        if rows:
            yield rows
        if len(rows) < size:
            return
        last = rows[-1][0]


def rewrite(column: Column, ids: list[object]) -> tuple[int, list[object]]:
    """Re-encrypt the stale values among rows `ids` under the newest key, in one short
    transaction: (rows rewritten, ids a writer held, to try again)."""
    if not ids:
        return 0, []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, {column.column} FROM {column.table} WHERE id = ANY(%s::{column.id_type}[])"  # noqa: S608
            f" AND {column.column} IS NOT NULL ORDER BY id FOR UPDATE SKIP LOCKED",
            [ids],
        )
        locked = cursor.fetchall()
        new_ids: list[object] = []
        new_values: list[str | None] = []
        for row_id, stored in locked:
            if kind(stored) in ("older", "plaintext"):
                new_ids.append(row_id)
                new_values.append(payloads.reencrypt(stored))
        if new_ids:
            cursor.execute(
                f"UPDATE {column.table} AS t SET {column.column} = v.value"  # noqa: S608
                f" FROM unnest(%s::{column.id_type}[], %s::text[]) AS v(id, value) WHERE t.id = v.id",
                [new_ids, new_values],
            )
    seen = {row_id for row_id, _ in locked}
    return len(new_ids), [row_id for row_id in ids if row_id not in seen]


def still_stale(column: Column, ids: list[object]) -> int:
    """How many of rows `ids` (read without a lock) are still not under the newest key."""
    if not ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {column.column} FROM {column.table} WHERE id = ANY(%s::{column.id_type}[])"  # noqa: S608
            f" AND {column.column} IS NOT NULL",
            [ids],
        )
        return sum(1 for (stored,) in cursor.fetchall() if kind(stored) in ("older", "plaintext"))


def process(
    column: Column,
    *,
    execute: bool,
    size: int = 500,
    advance: Callable[[int], None] = lambda n: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Counts:
    """Count what `column` holds by kind; with `execute`, also rewrite what is stale."""
    counts = Counts()
    held: list[object] = []
    for page in pages(column, size):
        stale: list[object] = []
        for row_id, stored in page:
            found = kind(stored)
            setattr(counts, found, getattr(counts, found) + 1)
            if found in ("older", "plaintext"):
                stale.append(row_id)
        counts.values += len(page)
        if execute:
            rewritten, missed = rewrite(column, stale)
            counts.rewritten += rewritten
            held += missed
        advance(len(page))
    for round_ in range(RETRY_ROUNDS):
        if not held:
            break
        sleep(RETRY_PAUSE_SECONDS * (round_ + 1))
        again: list[object] = []
        for start in range(0, len(held), size):
            rewritten, missed = rewrite(column, held[start : start + size])
            counts.rewritten += rewritten
            again += missed
        held = again
    counts.left = still_stale(column, held)
    return counts
