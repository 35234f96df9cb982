"""Hand-written Celery baselines for the benchmark, run by the same worker as BOS.

(b) `naive_*`: one task per item per phase, each storing its result with one INSERT.
(c) `chunked_*`: one task per 100 items, each storing its chunk's results with one
multi-row INSERT: what a careful engineer would write by hand without BOS.
Both run the demo pipeline's real handlers (validate → spellcheck ‖ text_stats →
aggregate) so only the orchestration differs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from celery import chord, group, shared_task
from django.db import connection

from orchestrator.handlers import BatchContext, ItemContext, ItemFailed, get_handler

TABLE = "bench_results"
PHASES = ("spellcheck", "text_stats")
HANDLERS = {
    "validate": "essays.validate",
    "spellcheck": "essays.spellcheck",
    "text_stats": "essays.text_stats",
}


def create_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (run text, phase text, key text, ok boolean, output jsonb)"
        )
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE}_done (run text primary key, report jsonb)")


def drop_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}_done")


def _apply(phase: str, key: str, text: str) -> tuple[bool, Any]:
    ctx = ItemContext(key=key, payload={"text": text}, metadata={}, options={})
    try:
        return True, dict(get_handler(HANDLERS[phase]).func(ctx))
    except ItemFailed as exc:
        return False, {"error": str(exc)}


def _store(run: str, phase: str, rows: Iterable[tuple[str, bool, Any]]) -> None:
    values = [(run, phase, key, ok, json.dumps(out)) for key, ok, out in rows]
    if not values:
        return
    placeholders = ",".join(["(%s,%s,%s,%s,%s)"] * len(values))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} VALUES {placeholders}",  # noqa: S608 - placeholders only
            [v for row in values for v in row],
        )


def _aggregate(run: str) -> None:
    def results(phase: str) -> Iterable[tuple[str, bool, Any]]:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT key, ok, output FROM {TABLE} WHERE run=%s AND phase=%s", [run, phase])  # noqa: S608
            return [
                (k, ok, out if isinstance(out, dict) else json.loads(out)) for k, ok, out in cursor.fetchall()
            ]

    ctx = BatchContext(
        batch_id=run,
        tenant="bench",
        external_id=run,
        metadata={},
        options={},
        items_total=0,
        phase_outputs={},
        iter_item_results=lambda phase: iter(results(phase)),
    )
    report = get_handler("essays.aggregate").func(ctx)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {TABLE}_done VALUES (%s, %s)", [run, json.dumps(report)])  # noqa: S608


# (b) one task per item per phase ------------------------------------------------------


@shared_task(name="bench.naive_item")
def naive_item(run: str, phase: str, key: str, text: str) -> list[Any]:
    ok, out = _apply(phase, key, text)
    _store(run, phase, [(key, ok, out)])
    return [key, text] if ok else []


@shared_task(name="bench.naive_after_validate")
def naive_after_validate(results: list[list[Any]], run: str) -> None:
    valid = [r for r in results if r]
    header = [naive_item.si(run, phase, key, text) for phase in PHASES for key, text in valid]
    chord(header)(naive_aggregate.si(run))


@shared_task(name="bench.naive_aggregate")
def naive_aggregate(run: str) -> None:
    _aggregate(run)


def start_naive(run: str, items: list[tuple[str, str]]) -> None:
    chord(group(naive_item.si(run, "validate", k, t) for k, t in items))(naive_after_validate.s(run))


# (c) one task per chunk of 100 items, one write per chunk ------------------------------


@shared_task(name="bench.chunk")
def chunk_task(run: str, phase: str, items: list[list[str]]) -> list[list[str]]:
    rows = []
    passed = []
    for key, text in items:
        ok, out = _apply(phase, key, text)
        rows.append((key, ok, out))
        if ok:
            passed.append([key, text])
    _store(run, phase, rows)
    return passed


@shared_task(name="bench.chunked_after_validate")
def chunked_after_validate(results: list[list[list[str]]], run: str, size: int) -> None:
    valid = [item for chunk in results for item in chunk]
    chunks = [valid[i : i + size] for i in range(0, len(valid), size)]
    header = [chunk_task.si(run, phase, chunk) for phase in PHASES for chunk in chunks]
    chord(header)(chunked_aggregate.si(run))


@shared_task(name="bench.chunked_aggregate")
def chunked_aggregate(run: str) -> None:
    _aggregate(run)


def start_chunked(run: str, items: list[tuple[str, str]], size: int = 100) -> None:
    chunks = [[list(i) for i in items[s : s + size]] for s in range(0, len(items), size)]
    chord(group(chunk_task.si(run, "validate", c) for c in chunks))(chunked_after_validate.s(run, size))
