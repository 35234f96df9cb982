"""The schemas in `schemas/` themselves: valid, complete, and true to the messages BOS sends.

A schema change that would reject an existing message fails here on the checked-in
examples; an event type the code emits without a schema fails the scan of the code.
"""

from __future__ import annotations

import ast
import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bos_project.settings.environment import BASE_DIR
from orchestrator.contracts import (
    SCHEMA_DIR,
    SCHEMA_INVALID,
    ContractViolation,
    UnknownMessageType,
    contracts,
    schema_for,
    validate_event,
    validate_headers,
    validate_inbound,
)
from orchestrator.kafka.messages import Envelope, MessageRejected, parse_envelope
from orchestrator.states import BATCH_TERMINAL
from tests.support.contracts import EXAMPLES, example, example_for, example_path

pytestmark = pytest.mark.contract

C = contracts()
SCHEMA_FILES = sorted(C.schemas)
INDEXED = {
    **{path: ("inbound", t) for t, path in C.index["inbound"].items()},
    **{path: ("event", t) for t, path in C.index["events"].items()},
    **{path: ("headers", kind) for kind, path in C.index["headers"].items()},
}


def reference_validator(schema_path: str) -> Draft202012Validator:
    """The same schema in `jsonschema`, the reference implementation, with formats checked."""
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s, default_specification=DRAFT202012)) for s in C.schemas.values()
    )
    return Draft202012Validator(
        C.schemas[schema_path], registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def check(schema_path: str, doc: Any) -> None:
    kind, name = INDEXED[schema_path]
    if kind == "inbound":
        validate_inbound(doc)
    elif kind == "event":
        validate_event(doc)
    else:
        validate_headers(name, doc)


@pytest.mark.parametrize("schema_path", SCHEMA_FILES)
def test_every_schema_is_a_valid_draft_2020_12_schema(schema_path: str) -> None:
    schema = C.schemas[schema_path]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == C.index["base_uri"] + schema_path


def test_every_schema_file_is_in_the_index_and_every_index_entry_exists() -> None:
    assert set(SCHEMA_FILES) == set(INDEXED) | {C.index["envelope"]}
    assert (SCHEMA_DIR / C.index["openapi"]).is_file()


@pytest.mark.parametrize("schema_path", sorted(INDEXED))
def test_the_checked_in_example_of_every_message_is_valid(schema_path: str) -> None:
    doc = example(schema_path)
    check(schema_path, doc)  # jsonschema-rs, as BOS validates
    assert not [e.message for e in reference_validator(schema_path).iter_errors(doc)]


def test_there_is_no_example_without_its_schema() -> None:
    examples = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.json")}
    assert examples == {example_path(p) for p in INDEXED}


@pytest.mark.parametrize(
    ("message_type", "mutate", "problem"),
    [
        (
            "batch.requested",
            lambda m: m["data"]["items"][1].pop("key"),
            "data.items[1].key: required property",
        ),
        ("batch.requested", lambda m: m["data"].update(priority=10), "data.priority: must be at most 9"),
        ("batch.cancel_requested", lambda m: m.update(tenant="Acme"), "tenant: must be a tenant slug"),
        ("batch.accepted", lambda m: m["data"].pop("batch_id"), "data.batch_id: required property"),
        ("batch.phase_started", lambda m: m["data"].pop("phase"), "data.phase: required property"),
        ("batch.completed", lambda m: m["data"].update(phase="x"), "data: unexpected properties: phase"),
        ("batch.failed", lambda m: m.update(occurred_at="yesterday"), "occurred_at: must be a date-time"),
        ("batch.started", lambda m: m.update(schema_version=2), "schema_version: must be 1"),
        ("bos.alert", lambda m: m.update(tenant="Not A Slug"), "tenant: must be"),
        ("batch.accepted", lambda m: m.update(sequence=0), "sequence: must be"),
        ("batch.accepted", lambda m: m.update(sequence=None), "sequence: must be"),
        ("consumer.lag_alert", lambda m: m.update(sequence=1), "sequence: must be"),
        ("consumer.lag_alert", lambda m: m["data"]["partitions"].update(x=1), "data.partitions"),
    ],
)
def test_a_message_that_breaks_its_schema_is_refused_naming_the_path_and_rule(
    message_type: str, mutate: Any, problem: str
) -> None:
    doc = example_for(message_type)
    mutate(doc)
    path = C.path_of(message_type)
    with pytest.raises((MessageRejected, ContractViolation)) as err:
        check(path, doc)
    assert problem in str(err.value)
    assert [e for e in reference_validator(path).iter_errors(doc)], "jsonschema disagrees"


def test_an_inbound_rejection_names_at_most_three_problems_and_never_echoes_values() -> None:
    doc = example_for("batch.requested")
    doc.update(tenant="SECRET-Tenant", event_id="")
    doc["data"].update(external_id="x" * 300, priority="high")
    with pytest.raises(MessageRejected) as err:
        validate_inbound(doc)
    assert err.value.code == SCHEMA_INVALID
    assert err.value.message.count(";") == 2
    assert "SECRET" not in err.value.message and "xxx" not in err.value.message


def test_the_consumer_parse_checks_the_schema_before_the_models() -> None:
    doc = example_for("batch.requested")
    del doc["data"]["items"][1]["key"]
    with pytest.raises(MessageRejected) as err:
        parse_envelope(json.dumps(doc).encode(), max_bytes=1_000_000)
    assert (err.value.code, err.value.message) == (SCHEMA_INVALID, "data.items[1].key: required property")


def test_an_unknown_inbound_type_is_refused_by_the_envelope() -> None:
    doc = example_for("batch.requested") | {"event_type": "batch.exploded"}
    with pytest.raises(MessageRejected, match=r"^event_type: must be one of "):
        validate_inbound(doc)


def test_an_event_type_without_a_schema_is_a_contract_violation() -> None:
    with pytest.raises(ContractViolation, match="no schema"):
        validate_event(example_for("batch.accepted") | {"event_type": "batch.exploded"})
    with pytest.raises(UnknownMessageType):
        schema_for("batch.exploded")


def test_the_inbound_types_are_the_ones_the_consumer_reads() -> None:
    literal = Envelope.model_fields["event_type"].annotation
    assert set(literal.__args__) == C.inbound_types  # type: ignore[union-attr]
    assert schema_for("batch.requested")["title"] == "batch.requested"


def test_replayed_event_headers_carry_all_the_replay_headers() -> None:
    headers = example("headers/event.schema.json")
    del headers["bos-replay-id"]
    with pytest.raises(ContractViolation, match="bos-replay"):
        validate_headers("event", headers)
    validate_headers("event", {"bos-event-type": "batch.accepted"})  # not a replay


# ---------------------------------------------------------------------------------------
# Every event type the code emits has a schema
# ---------------------------------------------------------------------------------------

SOURCES = [BASE_DIR / "orchestrator", BASE_DIR / "tasks"]
# Event types computed in the code, by their source text: the types they can take.
COMPUTED = {
    'f"batch.{outcome.value}"': {f"batch.{state.value}" for state in BATCH_TERMINAL},
}


def _emitted_types() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """String event types in `event_type=` arguments and `"event_type":` entries, per file,
    with module constants resolved; and the computed ones (f-strings, ...) by source text.
    Names that are not module constants are values passed through (checked where made)."""
    literal: dict[str, set[str]] = {}
    computed: dict[str, set[str]] = {}
    for root in SOURCES:
        for path in root.rglob("*.py"):
            if "migrations" in path.parts:
                continue
            source = path.read_text()
            tree = ast.parse(source)
            constants = {
                target.id: node.value.value
                for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                for target in node.targets
                if isinstance(target, ast.Name) and isinstance(node.value.value, str)
            }
            values = [
                kw.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Call)
                for kw in node.keywords
                if kw.arg == "event_type"
            ]
            values += [
                value
                for node in ast.walk(tree)
                if isinstance(node, ast.Dict)
                for key, value in zip(node.keys, node.values, strict=True)
                if isinstance(key, ast.Constant) and key.value == "event_type"
            ]
            where = path.relative_to(BASE_DIR).as_posix()
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    literal.setdefault(value.value, set()).add(where)
                elif isinstance(value, ast.Name) and value.id in constants:
                    literal.setdefault(constants[value.id], set()).add(where)
                elif not isinstance(value, ast.Name | ast.Attribute):
                    computed.setdefault(ast.get_source_segment(source, value) or "?", set()).add(where)
    return literal, computed


def test_every_event_type_in_the_code_has_a_schema() -> None:
    literal, computed = _emitted_types()
    known = C.inbound_types | C.event_types
    assert {t: files for t, files in literal.items() if t not in known} == {}, "add schemas/events/<type>"
    assert set(computed) <= set(COMPUTED), (
        f"add the types {set(computed) - set(COMPUTED)} can take to COMPUTED"
    )
    for text, types in COMPUTED.items():
        assert types <= C.event_types, f"{text} can be {types - C.event_types}, which have no schema"
    assert {"batch.accepted", "bos.alert", "consumer.lag_alert"} <= set(literal)  # the scan sees them


def test_every_event_schema_is_of_an_event_the_code_emits() -> None:
    literal, _ = _emitted_types()
    emitted = set(literal) | set().union(*COMPUTED.values())
    assert C.event_types - emitted == set(), "a schema of an event nothing emits: remove it or emit it"
