"""Test helpers for the message contract: the checked-in examples, checking stored events."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.contracts import SCHEMA_DIR, ContractViolation, contracts, validate_event

EXAMPLES = SCHEMA_DIR / "examples"


def example_path(schema_path: str) -> str:
    """The example of a schema: `events/batch.accepted.schema.json` → `events/batch.accepted.json`."""
    return schema_path.removesuffix(".schema.json") + ".json"


def example(schema_path: str) -> dict[str, Any]:
    """A fresh copy of the checked-in example of the schema at `schema_path` (index.json's paths)."""
    doc: dict[str, Any] = json.loads((EXAMPLES / example_path(schema_path)).read_text())
    return doc


def example_for(message_type: str) -> dict[str, Any]:
    return example(contracts().path_of(message_type))


def example_event_data(event_type: str) -> dict[str, Any]:
    """What an event of this type adds to the batch fields of its `data` (e.g. `phase`).

    Nothing for a type of no schema (the stored-event check then names it).
    """
    c = contracts()
    if event_type not in c.event_types:
        return {}
    batch_fields = set(c.schemas[c.index["envelope"]]["$defs"]["batchData"]["properties"])
    data = example_for(event_type)["data"]
    extra = {k: v for k, v in data.items() if k not in batch_fields}
    if "items_failed" in c.schemas[c.path_of(event_type)]["properties"]["data"].get("properties", {}):
        extra["items_failed"] = data["items_failed"]  # a phase's own count, in phase events
    return extra


def stored_event_problems() -> list[str]:
    """Every stored outbox event that breaks its schema, as `#id event_type: problem` (one query)."""
    from orchestrator.models import OutboxEvent

    problems = []
    for row_id, event_type, envelope in OutboxEvent.objects.order_by("id").values_list(
        "id", "event_type", "envelope"
    ):
        if not isinstance(envelope, dict):
            problems.append(f"outbox event #{row_id} {event_type}: the envelope is not a JSON object")
            continue
        try:
            validate_event(envelope)
            if envelope.get("event_type") != event_type:
                raise ContractViolation(f"{event_type}: the envelope says {envelope.get('event_type')!r}")
        except ContractViolation as exc:
            problems.append(f"outbox event #{row_id} {exc}")
    return problems
