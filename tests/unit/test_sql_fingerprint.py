"""SQL fingerprints take literals out and keep the shape, without a database."""

from __future__ import annotations

import pytest

from orchestrator.observability.sql import fingerprint, fingerprint_id

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT * FROM t1 WHERE id = 42 AND name = 'o''brien'",
            "SELECT * FROM t1 WHERE id = ? AND name = ?",
        ),
        ("SELECT a FROM b WHERE x IN (%s, %s, %s) LIMIT 21", "SELECT a FROM b WHERE x IN (?, ...) LIMIT ?"),
        ("SELECT a FROM b WHERE x IN (1,2,3,4,5,6)", "SELECT a FROM b WHERE x IN (?, ...)"),
        (
            "UPDATE b SET n = b.n + v.n FROM (VALUES (%s::uuid, %s::bigint), (%s::uuid, %s::bigint)) AS v(id, n)",
            "UPDATE b SET n = b.n + v.n FROM (VALUES (?, ...), ...) AS v(id, n)",
        ),
        (
            'INSERT INTO "t" ("a", "b") VALUES (1, 2.5), (3, -4)',
            'INSERT INTO "t" ("a", "b") VALUES (?, ...), ...',
        ),
        (
            "SELECT 1 -- why\n FROM x /* note 7 */ WHERE y = $1 AND z = $$raw 'x'$$",
            "SELECT ? FROM x WHERE y = ? AND z = ?",
        ),
        ("SELECT ARRAY[1, 2, 3], E'a\\'' FROM t", "SELECT ARRAY[?, ...], ? FROM t"),
        (
            "SELECT x::text FROM t WHERE c = :name AND d = %(d)s",
            "SELECT x::text FROM t WHERE c = ? AND d = ?",
        ),
        ("SELECT a - 1 FROM t", "SELECT a - ? FROM t"),
        ("SELECT  a\n\tFROM   t", "SELECT a FROM t"),
    ],
)
def test_literals_are_replaced_and_the_shape_kept(sql: str, expected: str) -> None:
    assert fingerprint(sql) == expected


def test_identifiers_with_digits_and_quotes_are_kept() -> None:
    assert fingerprint('SELECT "col 1", t2.c3 FROM "orchestrator_batch" t2') == (
        'SELECT "col 1", t2.c3 FROM "orchestrator_batch" t2'
    )


def test_statements_of_one_shape_share_a_fingerprint_id() -> None:
    one = fingerprint_id("SELECT * FROM t WHERE id IN (1, 2) AND s = 'a'")
    other = fingerprint_id("SELECT * FROM t WHERE id IN (7, 8, 9, 10) AND s = 'bcd'")
    assert one == other and len(one) == 12
    assert fingerprint_id("SELECT * FROM u WHERE id IN (1, 2)") != one


def test_a_literal_that_looks_like_sql_is_hidden() -> None:
    text = fingerprint("SELECT 1 FROM t WHERE secret = 'p4ss -- word; DROP TABLE x'")
    assert "p4ss" not in text and "DROP" not in text
    assert text == "SELECT ? FROM t WHERE secret = ?"
