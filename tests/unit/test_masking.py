"""Masking (orchestrator/masking.py): each pattern, field names at any depth, the Luhn
check, configured patterns, and no false positives on numbers, ids, UUIDs and times."""

from __future__ import annotations

import uuid

import pytest

from orchestrator.config.registry import RUNTIME, ConfigInvalid, check_combinations, parse
from orchestrator.masking import MASK, Masker, compile_patterns, luhn_ok, masker

pytestmark = pytest.mark.unit

m = Masker()


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("user john.doe@example.com failed", "user j***@example.com failed"),
        ("to: <a.b+tag@mail.example.co.uk>", "to: <a***@mail.example.co.uk>"),
        ("card 4111 1111 1111 1111 declined", "card ****1111 declined"),
        ("card 4111-1111-1111-1111", "card ****1111"),
        ("pan=5555555555554444;", "pan=****4444;"),
        ("amex 3782 822463 10005", "amex ****0005"),
        ("Authorization: Bearer abcdefghijklmnop123", "Authorization: Bearer [masked]"),
        ("header Token 9f86d081884c7d659a2f", "header Token [masked]"),
        ("login password=hunter2&next=/", "login password=[masked]&next=/"),
        ('{"secret": "s3cr3t"}', '{"secret": "[masked]"}'),
        ("GET /x?api_key=0123456789abcdef0123 200", "GET /x?api_key=[masked] 200"),
        ("access_token: dGhpcyBpcyBhIHNlY3JldCB0b2tlbg==", "access_token: [masked]"),
        ("postgres://bos:pa55@db.internal:5432/bos", "postgres://bos:[masked]@db.internal:5432/bos"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl", "jwt [masked]"),
        ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe [masked]"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [masked]"),
    ],
)
def test_each_pattern_is_masked(text: str, masked: str) -> None:
    assert m.mask_text(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "item 42 of 10000 failed after 3 attempts",
        "order 4111111111111112 refused",  # card-shaped, Luhn fails
        "epoch ms 1733140000000 and µs 1733140000000000",  # Luhn may pass; no card starts with 1
        "stamp 20261202123000123",  # yyyymmddhhmmssfff: no card starts with 20
        "at 2026-12-02T12:30:00.123456Z",
        f"batch {uuid.UUID('12345678-1234-5678-9234-567812345678')}",
        "sha 4f2f6461b9c0d3e5a7f8",
        "phone 555-0100, room 4111",
        "key=essay-1 failed",  # an item key, short: not a secret
        "ItemFailed: text too short (9 < 20 characters)",
        "TimeoutError: scoring-service did not answer within 5.0 s",
        "j***@example.com ****1111 Bearer [masked] password=[masked]",  # masked once already
    ],
)
def test_plain_texts_and_masked_texts_are_left_alone(text: str) -> None:
    assert m.mask_text(text) == text


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112")


def test_every_uuid_is_left_alone() -> None:
    ids = " ".join(str(uuid.uuid4()) for _ in range(500))
    assert m.mask_text(ids) == ids


def test_field_names_are_masked_at_any_depth_whatever_their_case_or_separator() -> None:
    value = {
        "text": "mail me at ann@example.com",
        "Email": "ann@example.com",
        "profile": {"user-email": "x", "contacts": [{"Password": "p", "name": "Ann"}]},
        "api_key": {"nested": "values go too"},
        "tokens": 350,  # a count, not a token
        "max_tokens": 10,
        "missing_token": None,
    }
    assert m.mask_value(value) == {
        "text": "mail me at a***@example.com",
        "Email": MASK,
        "profile": {"user-email": MASK, "contacts": [{"Password": MASK, "name": "Ann"}]},
        "api_key": MASK,
        "tokens": 350,
        "max_tokens": 10,
        "missing_token": None,
    }


def test_configured_fields_and_patterns_are_masked() -> None:
    custom = Masker(fields=["phone"], patterns=[r"ACME-\d{6}"])
    assert custom.mask_value({"phone": "555", "email": "kept@example.com"}) == {
        "phone": MASK,
        "email": "k***@example.com",  # no longer a field name, still an e-mail
    }
    assert custom.mask_text("ticket ACME-123456 opened") == "ticket [masked] opened"


@pytest.mark.parametrize(
    ("patterns", "message"),
    [(["("], "not a valid regular expression"), (["a*"], "matches the empty string"), ([""], "non-empty")],
)
def test_bad_patterns_are_refused(patterns: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_patterns(patterns)


def test_the_runtime_settings_validate_fields_and_patterns() -> None:
    assert parse(RUNTIME["mask_fields"], "password, phone") == ["password", "phone"]
    assert parse(RUNTIME["mask_fields"], ["a", "b"]) == ["a", "b"]
    with pytest.raises(ConfigInvalid):
        parse(RUNTIME["mask_fields"], [1, 2])
    values = {"retry_base_seconds": 1, "retry_cap_seconds": 2, "inline_max_items": 1, "max_items": 2}
    check_combinations({**values, "mask_patterns": [r"ACME-\d+"]})
    with pytest.raises(ConfigInvalid) as refused:
        check_combinations({**values, "mask_patterns": ["(unclosed"]})
    assert refused.value.key == "mask_patterns"


def test_a_configuration_is_compiled_once() -> None:
    assert masker(("a",), ("b",)) is masker(("a",), ("b",))
