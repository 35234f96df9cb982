"""The inbound JSON Schemas and the pydantic models of orchestrator/kafka/messages.py agree.

The consumer checks a message against its schema first, then parses it with the models.
On each example below both must give the verdict written next to it. Where they differ,
the difference is deliberate and listed: the schema is stricter about JSON types (pydantic
would coerce "5" to 5), and the models check what JSON Schema cannot say (unique item
keys). A change to one side only makes a case here fail.
"""

from __future__ import annotations

import json
from copy import deepcopy
from typing import Any

import pytest

from orchestrator.contracts import validate_inbound
from orchestrator.kafka.messages import (
    BatchRefData,
    BatchRequestedData,
    Envelope,
    MessageRejected,
    parse_data,
    parse_envelope,
)
from tests.support.contracts import example_for

pytestmark = pytest.mark.contract

BOTH = "both accept"
NEITHER = "both reject"
SCHEMA_REJECTS = "only the schema rejects"  # pydantic would coerce the value
MODELS_REJECT = "only the models reject"  # a rule JSON Schema cannot express

MODELS = {"batch.requested": BatchRequestedData}


def requested(**data: Any) -> dict[str, Any]:
    doc = example_for("batch.requested")
    doc["data"].update(data)
    return doc


def requested_without(name: str) -> dict[str, Any]:
    doc = example_for("batch.requested")
    del doc["data"][name]
    return doc


def envelope(**fields: Any) -> dict[str, Any]:
    return example_for("batch.requested") | fields


def envelope_without(name: str) -> dict[str, Any]:
    doc = example_for("batch.requested")
    del doc[name]
    return doc


def cancel(**data: Any) -> dict[str, Any]:
    doc = example_for("batch.cancel_requested")
    doc["data"] = data
    return doc


ITEM = {"key": "a"}
CASES: list[tuple[str, dict[str, Any], str]] = [
    # Accepted by both.
    ("the requested example", example_for("batch.requested"), BOTH),
    ("the cancel example", example_for("batch.cancel_requested"), BOTH),
    ("the retry example", example_for("batch.retry_requested"), BOTH),
    (
        "only the required fields",
        {
            "event_id": "e",
            "event_type": "batch.requested",
            "schema_version": 1,
            "tenant": "acme",
            "data": {"external_id": "x", "pipeline": "p", "items": [ITEM]},
        },
        BOTH,
    ),
    ("unknown fields everywhere", envelope(extra=1) | {"data": {**requested()["data"], "x": 1}}, BOTH),
    ("an item with unknown fields", requested(items=[{"key": "a", "weight": 3}]), BOTH),
    (
        "payloads of any JSON type",
        requested(
            items=[{"key": "a", "payload": v} for v in ["s"]]
            + [{"key": "b", "payload": [1]}, {"key": "c", "payload": None}]
        ),
        BOTH,
    ),
    ("priority 0", requested(priority=0), BOTH),
    ("priority 9", requested(priority=9), BOTH),
    ("an integral float priority", requested(priority=5.0), BOTH),
    ("pipeline version 3", requested(pipeline_version=3), BOTH),
    ("a deadline with an offset", requested(deadline="2026-11-29T11:00:00+01:00"), BOTH),
    ("a deadline with fractions", requested(deadline="2026-11-29T11:00:00.123456Z"), BOTH),
    ("a null deadline", requested(deadline=None), BOTH),
    ("null occurred_at and correlation_id", envelope(occurred_at=None, correlation_id=None), BOTH),
    ("tenant of 63 characters", envelope(tenant="a" * 63), BOTH),
    ("item key of 200 characters", requested(items=[{"key": "k" * 200}]), BOTH),
    ("an external id with surrounding blanks", requested(external_id="  x  "), BOTH),
    ("cancel without a reason", cancel(external_id="x"), BOTH),
    # Rejected by both.
    ("no event_id", envelope_without("event_id"), NEITHER),
    ("a blank event_id", envelope(event_id="  "), NEITHER),
    ("an event_id of 101 characters", envelope(event_id="e" * 101), NEITHER),
    ("an unknown event_type", envelope(event_type="batch.exploded"), NEITHER),
    ("schema_version 2", envelope(schema_version=2), NEITHER),
    ("no schema_version", envelope_without("schema_version"), NEITHER),
    ("an upper-case tenant", envelope(tenant="Acme"), NEITHER),
    ("a tenant of 64 characters", envelope(tenant="a" * 64), NEITHER),
    ("a correlation_id of 201 characters", envelope(correlation_id="c" * 201), NEITHER),
    ("no data", envelope_without("data"), NEITHER),
    ("data that is a list", envelope(data=[]), NEITHER),
    ("no external_id", requested_without("external_id"), NEITHER),
    ("a blank external_id", requested(external_id=" "), NEITHER),
    ("an external_id that is a number", requested(external_id=5), NEITHER),
    ("an external_id of 201 characters", requested(external_id="x" * 201), NEITHER),
    ("no pipeline", requested_without("pipeline"), NEITHER),
    ("a pipeline of 101 characters", requested(pipeline="p" * 101), NEITHER),
    ("no items", requested_without("items"), NEITHER),
    ("an empty item list", requested(items=[]), NEITHER),
    ("an item without a key", requested(items=[{"payload": 1}]), NEITHER),
    ("a blank item key", requested(items=[{"key": " "}]), NEITHER),
    ("an item key of 201 characters", requested(items=[{"key": "k" * 201}]), NEITHER),
    ("an item that is a string", requested(items=["a"]), NEITHER),
    ("priority 10", requested(priority=10), NEITHER),
    ("priority -1", requested(priority=-1), NEITHER),
    ("a null priority", requested(priority=None), NEITHER),
    ("pipeline version 0", requested(pipeline_version=0), NEITHER),
    ("a deadline without a time zone", requested(deadline="2026-11-29T10:00:00"), NEITHER),
    ("a deadline in words", requested(deadline="tomorrow"), NEITHER),
    ("an impossible date", requested(deadline="2026-13-45T10:00:00Z"), NEITHER),
    ("metadata that is a list", requested(metadata=[]), NEITHER),
    ("cancel without an external_id", cancel(), NEITHER),
    ("cancel with a null reason", cancel(external_id="x", reason=None), NEITHER),
    ("cancel with a reason of 501 characters", cancel(external_id="x", reason="r" * 501), NEITHER),
    # The schema is stricter about JSON types than pydantic's coercion.
    ("priority as a string", requested(priority="5"), SCHEMA_REJECTS),
    ("priority as a boolean", requested(priority=True), SCHEMA_REJECTS),
    ("schema_version as a string", envelope(schema_version="1"), SCHEMA_REJECTS),
    ("a deadline as a Unix time", requested(deadline=1_800_000_000), SCHEMA_REJECTS),
    ("a deadline without seconds", requested(deadline="2026-11-29T10:00Z"), SCHEMA_REJECTS),
    ("a deadline with a space for T", requested(deadline="2026-11-29 10:00:00Z"), SCHEMA_REJECTS),
    ("a tenant with a trailing newline", envelope(tenant="acme\n"), SCHEMA_REJECTS),
    # What JSON Schema cannot say.
    ("two items with one key", requested(items=[ITEM, ITEM]), MODELS_REJECT),
]


def schema_accepts(doc: dict[str, Any]) -> bool:
    try:
        validate_inbound(deepcopy(doc))
    except MessageRejected:
        return False
    return True


def models_accept(doc: dict[str, Any]) -> bool:
    try:
        env = Envelope.model_validate(deepcopy(doc))
        parse_data(MODELS.get(env.event_type, BatchRefData), env.data)
    except (ValueError, MessageRejected):  # pydantic's ValidationError is a ValueError
        return False
    return True


def rejection(doc: dict[str, Any]) -> str | None:
    """What the consumer does, both checks in order: the DLQ error class, or None."""
    try:
        env = parse_envelope(json.dumps(doc).encode(), max_bytes=1_000_000)
        parse_data(MODELS.get(env.event_type, BatchRefData), env.data)
    except MessageRejected as exc:
        return exc.code
    return None


@pytest.mark.parametrize(
    ("doc", "verdict"), [(doc, verdict) for _, doc, verdict in CASES], ids=[c[0] for c in CASES]
)
def test_schema_and_models_give_the_listed_verdict(doc: dict[str, Any], verdict: str) -> None:
    observed = {
        (True, True): BOTH,
        (False, False): NEITHER,
        (False, True): SCHEMA_REJECTS,
        (True, False): MODELS_REJECT,
    }[(schema_accepts(doc), models_accept(doc))]
    assert observed == verdict
    assert rejection(doc) == (None if verdict == BOTH else "invalid_schema")
