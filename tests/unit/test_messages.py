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
