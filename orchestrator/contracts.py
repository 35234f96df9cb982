"""The external contract as data: the JSON Schemas in `schemas/`, loaded and compiled once.

`schemas/index.json` names the schema of every message: the inbound commands (CONTRACT
§2), the events BOS publishes (§3) and the headers of DLQ and event records. Here they
are read once into a registry (so `$ref`s to the shared envelope resolve) and compiled
into one validator each.

- `validate_inbound(doc)`: a message sent to BOS; raises `MessageRejected` naming the
  JSON path and the rule (the consumer calls it from `parse_envelope`).
- `validate_event(envelope)`: an event BOS writes; raises `ContractViolation` (a bug in
  BOS, never bad input). Tests check every outbox row with it.
- `validate_headers(kind, headers)`: the headers of a DLQ (`"dlq"`) or event record.
- `schema_for(message_type)`: the schema document of an inbound or outbound type.

The validator is jsonschema-rs (compiled, Rust): on a 100-item `batch.requested` it takes
tens of µs where the pure-Python `jsonschema` takes milliseconds, and the consumer runs
it on every message. The tests check the schemas with `jsonschema` too, the reference
implementation, so they mean the same to any standard validator. How the schemas evolve
and how CI catches a break: docs/contracts.md.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import jsonschema_rs

from bos_project.settings.environment import BASE_DIR
from orchestrator.kafka.messages import MessageRejected

SCHEMA_DIR = BASE_DIR / "schemas"
# The DLQ error class of a message that breaks its schema: the code the pydantic checks
# have always used, so operators and dashboards see one code for "wrong schema".
SCHEMA_INVALID = "invalid_schema"
MAX_PROBLEMS = 3
Kind = jsonschema_rs.ValidationErrorKind


class ContractViolation(ValueError):
    """A document BOS produced that does not match its schema."""


class UnknownMessageType(LookupError):
    """No schema describes this message type."""


@dataclass(frozen=True)
class Contracts:
    """Every schema of a schema folder, with one compiled validator each."""

    index: Mapping[str, Any]
    schemas: Mapping[str, Mapping[str, Any]]  # by path relative to the folder
    validators: Mapping[str, jsonschema_rs.Validator]  # by path relative to the folder
    inbound_envelope: jsonschema_rs.Validator  # for a message of no known type
    # The envelope's named patterns ("a UUID", ...), to say "must be a UUID", not the regex.
    pattern_titles: Mapping[str, str]

    @property
    def inbound_types(self) -> frozenset[str]:
        return frozenset(self.index["inbound"])

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self.index["events"])

    def path_of(self, message_type: str) -> str:
        path = self.index["inbound"].get(message_type) or self.index["events"].get(message_type)
        if path is None:
            raise UnknownMessageType(f"no schema for message type {message_type!r}")
        return str(path)


def _compile(schema: dict[str, Any], registry: jsonschema_rs.Registry) -> jsonschema_rs.Validator:
    # Formats (date-time, uuid) are checked, not just annotations; nothing is fetched.
    return jsonschema_rs.Draft202012Validator(schema, registry=registry, validate_formats=True, offline=True)


def load(schema_dir: Path = SCHEMA_DIR) -> Contracts:
    """Read `index.json` and every `*.schema.json` under `schema_dir`; compile them."""
    index = json.loads((schema_dir / "index.json").read_text())
    schemas = {
        path.relative_to(schema_dir).as_posix(): json.loads(path.read_text())
        for path in sorted(schema_dir.rglob("*.schema.json"))
    }
    registry = jsonschema_rs.Registry([(schema["$id"], schema) for schema in schemas.values()])
    validators = {path: _compile(schema, registry) for path, schema in schemas.items()}
    envelope_id = schemas[index["envelope"]]["$id"]
    inbound_envelope = _compile({"$ref": f"{envelope_id}#/$defs/inbound"}, registry)
    titles = {
        d["pattern"]: d["title"]
        for d in schemas[index["envelope"]]["$defs"].values()
        if "pattern" in d and "title" in d
    }
    return Contracts(index, schemas, validators, inbound_envelope, titles)


@functools.cache
def contracts() -> Contracts:
    """The schemas of this checkout, loaded on first use."""
    return load()


def schema_for(message_type: str) -> Mapping[str, Any]:
    """The JSON Schema of an inbound message or outbound event type."""
    c = contracts()
    return c.schemas[c.path_of(message_type)]


def validate_inbound(doc: object) -> None:
    """Check a message sent to BOS against its type's schema (the envelope's if unknown)."""
    c = contracts()
    event_type = doc.get("event_type") if isinstance(doc, dict) else None
    path = c.index["inbound"].get(event_type) if isinstance(event_type, str) else None
    validator = c.validators[path] if path else c.inbound_envelope
    if validator.is_valid(doc):  # the common case: no error objects built
        return
    raise MessageRejected(SCHEMA_INVALID, describe(validator.iter_errors(doc)))


def validate_event(envelope: Mapping[str, Any]) -> None:
    """Check an event envelope BOS produced against its type's schema."""
    event_type = envelope.get("event_type")
    c = contracts()
    path = c.index["events"].get(event_type) if isinstance(event_type, str) else None
    if path is None:
        raise ContractViolation(f"{event_type!r}: no schema for this event type (schemas/index.json)")
    validator = c.validators[path]
    if not validator.is_valid(envelope):
        raise ContractViolation(f"{event_type}: {describe(validator.iter_errors(envelope))}")


def validate_headers(kind: Literal["dlq", "event"], headers: Mapping[str, str]) -> None:
    """Check the (UTF-8 decoded) headers of a DLQ or events-topic record."""
    c = contracts()
    validator = c.validators[c.index["headers"][kind]]
    doc = dict(headers)
    if not validator.is_valid(doc):
        raise ContractViolation(f"{kind} headers: {describe(validator.iter_errors(doc))}")


def batch_state_choices() -> list[tuple[str, str]]:
    """The batch states as the API offers them: names the OpenAPI's `BatchStateEnum`.

    Without it drf-spectacular names that enum by a hash (`StateA89Enum`), because
    phases and items have other choice sets for fields named `state`.
    """
    from orchestrator.models import Batch

    return [(str(value), str(label)) for value, label in Batch._meta.get_field("state").choices or []]


# ---------------------------------------------------------------------------------------
# Error messages: the JSON path and the rule, never the offending value (it may be
# large, or sensitive: DLQ headers are read by operators).
# ---------------------------------------------------------------------------------------


def describe(errors: Iterable[jsonschema_rs.ValidationError]) -> str:
    """Up to MAX_PROBLEMS problems, `path: rule` (the first one of each path), joined by "; "."""
    problems: dict[str, str] = {}
    for error in islice(errors, MAX_PROBLEMS * 4):
        path, rule = _problem(error)
        problems.setdefault(path, rule)
        if len(problems) == MAX_PROBLEMS:
            break
    return "; ".join(f"{path}: {rule}" for path, rule in problems.items()) or "does not match its schema"


def json_path(parts: Iterable[str | int]) -> str:
    """`data.items[3].key` for ["data", "items", 3, "key"]; "message" for the root."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "message"


def _problem(error: jsonschema_rs.ValidationError) -> tuple[str, str]:
    kind = error.kind
    if isinstance(kind, Kind.AnyOf | Kind.OneOfNotValid):
        # The branch that got furthest: the one that did not fail on the type.
        branches = [b for b in kind.context if b]
        best = next((b for b in branches if b[0].kind.name != "type"), branches[0] if branches else None)
        if best:
            return _problem(best[0])
    path = list(error.instance_path)
    if isinstance(kind, Kind.Required):
        path.append(kind.property)
    return json_path(path), _rule(kind)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _rule(kind: Kind) -> str:
    value = kind.value
    match kind.name:
        case "required":
            return "required property"
        case "type":
            return "must be of type " + (" or ".join(value) if isinstance(value, list) else str(value))
        case "enum":
            return "must be one of " + ", ".join(json.dumps(v) for v in value)
        case "const":
            return f"must be {json.dumps(value)}"
        case "minLength":
            return "must not be empty" if value == 1 else f"must be at least {_plural(value, 'character')}"
        case "maxLength":
            return f"must be at most {_plural(value, 'character')}"
        case "pattern":
            title = contracts().pattern_titles.get(value)
            return f"must be {title}" if title else f"must match {value}"
        case "format":
            return f"must be a valid {value}"
        case "minimum":
            return f"must be at least {value}"
        case "maximum":
            return f"must be at most {value}"
        case "minItems":
            return "must not be empty" if value == 1 else f"must have at least {_plural(value, 'item')}"
        case "additionalProperties" | "unevaluatedProperties":
            return "unexpected properties: " + ", ".join(sorted(map(str, value)))
    return f"breaks the {kind.name} rule"
