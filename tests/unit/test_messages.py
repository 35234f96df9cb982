"""Strict validation of inbound Kafka messages."""

from __future__ import annotations

import json

import pytest

from orchestrator.kafka.messages import BatchRequestedData, MessageRejected, parse_data, parse_envelope

pytestmark = pytest.mark.unit


def good() -> dict[str, object]:
    return {
        "event_id": "e-1",
        "event_type": "batch.requested",
        "schema_version": 1,
        "tenant": "acme",
        "data": {"external_id": "x", "pipeline": "essay-analysis", "items": [{"key": "a", "payload": {}}]},
    }


def test_good_message_parses() -> None:
    env = parse_envelope(json.dumps(good()).encode(), max_bytes=10_000)
    data = parse_data(BatchRequestedData, env.data)
    assert data.priority == 5 and data.items[0].key == "a"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b"\xff\xfe", "invalid_json"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_schema"),
        (None, "empty_message"),
        (b"x" * 20_000, "too_large"),
        (b"[" * 5_000, "invalid_json"),
    ],
)
def test_unreadable_values_are_rejected(value: bytes | None, code: str) -> None:
    with pytest.raises(MessageRejected) as err:
        parse_envelope(value, max_bytes=10_000)
    assert err.value.code == code


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.pop("event_id"),
        lambda m: m.update(event_type="batch.exploded"),
        lambda m: m.update(schema_version=99),
        lambda m: m.update(tenant="Not A Slug!"),
    ],
)
def test_bad_envelopes_are_rejected(mutate: object) -> None:
    message = good()
    mutate(message)  # type: ignore[operator]
    with pytest.raises(MessageRejected, match=".+"):
        parse_envelope(json.dumps(message).encode(), max_bytes=10_000)


@pytest.mark.parametrize(
    "data",
    [
        {"external_id": "x", "pipeline": "p", "items": []},
        {"external_id": "x", "pipeline": "p", "items": [{"key": "a"}, {"key": "a"}]},
        {"external_id": "x", "pipeline": "p", "priority": 10, "items": [{"key": "a"}]},
        {"external_id": "x", "pipeline": "p", "deadline": "2026-11-29T10:00:00", "items": [{"key": "a"}]},
        {"pipeline": "p", "items": [{"key": "a"}]},
    ],
)
def test_bad_data_is_rejected_with_the_field(data: dict[str, object]) -> None:
    with pytest.raises(MessageRejected) as err:
        parse_data(BatchRequestedData, data)
    assert err.value.code == "invalid_schema"
    assert err.value.message.startswith("data.")


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (
            '"data": {"external_id": "x\\u0000", "pipeline": "p", "items": [{"key": "a"}]}',
            "invalid_schema",
            "data.external_id: must not contain U+0000 (NUL)",
        ),
        (
            '"data": {"external_id": "x", "pipeline": "p", "items": [{"key": "a", "payload": {"n": NaN}}]}',
            "invalid_json",
            "data.items[0].payload.n: must be a finite number (NaN and Infinity are not JSON)",
        ),
        (
            '"data": {"external_id": "x", "pipeline": "p", "metadata": {"m": Infinity}, "items": [{"key": "a"}]}',
            "invalid_json",
            "data.metadata.m: must be a finite number (NaN and Infinity are not JSON)",
        ),
        (
            '"data": {"external_id": "x", "pipeline": "p", "items": [{"key": "a", "payload": '
            + "[" * 1200
            + "]" * 1200
            + "}]}",
            "invalid_json",
            "message: must not nest arrays and objects more than 100 levels deep",
        ),
        (
            '"data": {"external_id": "x", "pipeline": "p", "priority": '
            + "5" * 5000
            + ', "items": [{"key": "a"}]}',
            "invalid_json",
            "data.priority: must be an integer of at most 4300 digits",
        ),
    ],
)
def test_values_postgres_would_refuse_are_rejected_at_parse_time_with_their_path(
    raw: str, code: str, message: str
) -> None:
    value = (
        '{"event_id": "e-1", "event_type": "batch.requested", "schema_version": 1, "tenant": "acme", '
        + raw
        + "}"
    )
    with pytest.raises(MessageRejected) as err:
        parse_envelope(value.encode(), max_bytes=1_000_000)
    assert (err.value.code, err.value.message) == (code, message)
