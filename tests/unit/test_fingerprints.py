"""Error texts are split, normalized and fingerprinted without a database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from orchestrator.analytics import (
    ITEM_ERROR_TYPE,
    MAX_MESSAGE,
    PHASE_ERROR_TYPE,
    Groups,
    collect_failure,
    fingerprint,
    hour_of,
    looks_like_exception,
    normalize_message,
    sparkline,
    split_error,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("try 3 failed", "try <n> failed"),
        ("text has 1 words; at least 3 are needed", "text has <n> words; at least <n> are needed"),
        ("took 2.5 s", "took <n> s"),
        ("batch 1b4e28ba-2fa1-11d2-883f-0016d3cca427 is gone", "batch <id> is gone"),
        ("object at 0x7f3a2c1b not found", "object at <id> not found"),
        ("external id ext-3f2a9c1b7d4e exists", "external id ext-<id> exists"),
        ("KeyError 'text' in payload", "KeyError <str> in payload"),
        ('no field "title"', "no field <str>"),
        ("can't read /var/lib/bos/items/17.json", "can't read <path>"),
        ("open ./data/x.csv failed", "open <path> failed"),
        ("mail to jane.doe+bos@example.com bounced", "mail to <email> bounced"),
        ("GET https://api.example.com/v1/score?id=9 returned 503", "GET <url> returned <n>"),
        ("  many   spaces\tand tabs  ", "many spaces and tabs"),
        ("first line\nTraceback (most recent call last):\n  File x", "first line"),
        ("read/write and 3/4 stay words", "read/write and <n>/<n> stay words"),
        ("", ""),
    ],
)
def test_normalize_message(text: str, expected: str) -> None:
    assert normalize_message(text) == expected


def test_normalizing_is_idempotent_and_capped() -> None:
    long = "value 12 " * 100
    once = normalize_message(long)
    assert len(once) == MAX_MESSAGE and once.endswith("…")
    assert normalize_message(once) == once
    for text in (
        "try 3 failed at /tmp/x for 'a' (id 0xff)",
        "child batch 1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    ):
        assert normalize_message(normalize_message(text)) == normalize_message(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TransientError: try 3 failed", ("TransientError", "try 3 failed")),
        (
            "text has 1 words; at least 3 are needed",
            (ITEM_ERROR_TYPE, "text has 1 words; at least 3 are needed"),
        ),
        (
            "RuntimeError: the per-batch handler blew up\nTraceback (most recent call last):\n  ...",
            ("RuntimeError", "the per-batch handler blew up"),
        ),
        ("pybreaker.CircuitBreakerError: open", ("pybreaker.CircuitBreakerError", "open")),
        ("KeyError: ", ("KeyError", "")),
        ("Note: this is not an exception", (ITEM_ERROR_TYPE, "Note: this is not an exception")),
        (
            "payload.text is missing or not a string",
            (ITEM_ERROR_TYPE, "payload.text is missing or not a string"),
        ),
    ],
)
def test_split_error(text: str, expected: tuple[str, str]) -> None:
    assert split_error(text) == expected


def test_split_error_default_type_for_phases() -> None:
    assert split_error("a chunk task of this phase failed for good", PHASE_ERROR_TYPE) == (
        PHASE_ERROR_TYPE,
        "a chunk task of this phase failed for good",
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ValueError", True),
        ("SoftTimeLimitExceeded", True),
        ("StopIteration", True),
        ("CircuitBreakerError", True),
        ("requests.exceptions.HTTPError", True),
        ("Note", False),
        ("URL", False),
        ("text has", False),
        ("valueError", False),
    ],
)
def test_looks_like_exception(name: str, expected: bool) -> None:
    assert looks_like_exception(name) is expected


def test_the_same_error_with_other_numbers_and_ids_has_the_same_fingerprint() -> None:
    a = fingerprint("TransientError", "try 3 failed for item 17 of 0x7f3a2c1b", "essays", "validate")
    b = fingerprint("TransientError", "try 5 failed for item 2 of 0xdeadbeef", "essays", "validate")
    c = fingerprint(
        ITEM_ERROR_TYPE,
        f"child batch {uuid.uuid4()} ended failed: 'x'",
        "essays",
        "validate",
    )
    d = fingerprint(ITEM_ERROR_TYPE, f"child batch {uuid.uuid4()} ended failed: 'y'", "essays", "validate")
    assert a == b
    assert c == d
    assert len(a) == 40 and int(a, 16) >= 0


def test_a_different_phase_pipeline_type_or_message_is_another_fingerprint() -> None:
    base = ("TransientError", "try 3 failed", "essays", "validate")
    others = [
        ("TransientError", "try 3 failed", "essays", "spellcheck"),
        ("TransientError", "try 3 failed", "reports", "validate"),
        ("TimeoutError", "try 3 failed", "essays", "validate"),
        ("TransientError", "try 3 succeeded", "essays", "validate"),
    ]
    assert len({fingerprint(*base), *(fingerprint(*o) for o in others)}) == 5


def test_a_fingerprint_of_a_normalized_message_is_the_same() -> None:
    raw = "text has 1 words; at least 3 are needed"
    assert fingerprint(ITEM_ERROR_TYPE, raw, "p", "q") == fingerprint(
        ITEM_ERROR_TYPE, normalize_message(raw), "p", "q"
    )


def test_sparkline() -> None:
    assert sparkline([0, 1, 10, 20]) == "▁▂▅█"
    assert sparkline([0, 1, 4, 8]) == "▁▃▅█"
    assert sparkline([0, 0, 0]) == "▁▁▁"
    assert sparkline([]) == ""
    assert len(sparkline([3] * 24)) == 24 and set(sparkline([3] * 24)) == {"█"}


def test_failures_are_grouped_by_tenant_and_fingerprint() -> None:
    groups: Groups = {}
    at = datetime(2026, 1, 2, 10, 15, tzinfo=UTC)
    later = datetime(2026, 1, 2, 11, 5, tzinfo=UTC)
    batch = uuid.uuid4()
    rows = [
        (
            1,
            "text has 1 words; at least 3 are needed",
            "bad_input",
            at,
            7,
            "acme",
            batch,
            "essays",
            "validate",
        ),
        (
            2,
            "text has 2 words; at least 3 are needed",
            "bad_input",
            later,
            7,
            "acme",
            batch,
            "essays",
            "validate",
        ),
        (
            3,
            "text has 2 words; at least 3 are needed",
            "bad_input",
            later,
            8,
            "zeta",
            batch,
            "essays",
            "validate",
        ),
        (4, "TransientError: try 3 failed", "transient", at, 7, "acme", batch, "essays", "validate"),
    ]
    for row in rows:
        collect_failure(groups, row, ITEM_ERROR_TYPE)
    assert len(groups) == 3
    group = next(g for (tenant, _), g in groups.items() if tenant == 7 and g.error_type == ITEM_ERROR_TYPE)
    assert group.count == 2
    assert (group.first_seen, group.last_seen) == (at, later)
    assert group.sample == "text has 2 words; at least 3 are needed"
    assert group.message == "text has <n> words; at least <n> are needed"
    assert dict(group.hours) == {hour_of(at): 1, hour_of(later): 1}
