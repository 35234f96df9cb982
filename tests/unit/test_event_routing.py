"""Event routing rules (BOS_EVENT_ROUTES) choose the topic of an outbound event."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from orchestrator.checks import event_routes_check
from orchestrator.kafka.routing import (
    EventRoutingError,
    all_event_topics,
    parse_event_routes,
    topic_for,
)

pytestmark = pytest.mark.unit
DEFAULT = "bos.batch.events"
SYSTEM = "bos.system.events"
RULES: list[dict[str, Any]] = [
    {"event_types": ["batch.failed", "batch.rollback_failed"], "topic": "bos.failures"},
    {"event_types": ["batch.phase_*"], "tenants": ["acme"], "topic": "acme.phases"},
    {"event_types": ["batch.phase_*"], "topic": "bos.phases"},
    {"tenants": ["globex"], "topic": "globex.events"},
    {"event_types": ["consumer.*"], "topic": "bos.ops"},
]


def table() -> Any:
    return parse_event_routes(RULES, default_topic=DEFAULT, system_topic=SYSTEM)


def test_the_first_matching_rule_wins() -> None:
    # batch.failed of globex matches rule 0 and rule 3: rule 0 comes first.
    assert table().topic_for("batch.failed", "globex") == "bos.failures"
    assert table().topic_for("batch.phase_started", "globex") == "bos.phases"


def test_a_rule_with_tenants_matches_only_those_tenants() -> None:
    assert table().topic_for("batch.phase_completed", "acme") == "acme.phases"
    assert table().topic_for("batch.phase_completed", "initech") == "bos.phases"
    assert table().topic_for("batch.completed", "globex") == "globex.events"


def test_globs_match_whole_event_types_case_sensitively() -> None:
    routes = parse_event_routes(
        [{"event_types": ["batch.phase_?ailed", "batch.[cr]*ed"], "topic": "t"}],
        default_topic=DEFAULT,
        system_topic=SYSTEM,
    )
    assert routes.topic_for("batch.phase_failed", "initech") == "t"
    assert routes.topic_for("batch.completed", "initech") == "t"
    assert routes.topic_for("batch.retried", "initech") == "t"
    assert routes.topic_for("batch.phase_failed.extra", "initech") == DEFAULT
    assert routes.topic_for("BATCH.completed", "initech") == DEFAULT
    assert routes.topic_for("batch.accepted", "initech") == DEFAULT


def test_an_event_no_rule_matches_goes_to_the_default_topic() -> None:
    assert table().topic_for("batch.accepted", "initech") == DEFAULT
    assert (
        parse_event_routes([], default_topic=DEFAULT, system_topic=SYSTEM).topic_for("batch.accepted", "acme")
        == DEFAULT
    )


def test_an_event_without_a_tenant_goes_to_the_system_topic_whatever_the_rules() -> None:
    # Rule 4 (consumer.*, every tenant) would match: tenants' topics carry only events of a tenant.
    assert table().topic_for("consumer.lag_alert", None) == SYSTEM
    assert table().topic_for("bos.alert", None) == SYSTEM
    assert table().topic_for("consumer.lag_alert", "acme") == "bos.ops"


def test_a_rule_without_event_types_matches_every_type() -> None:
    assert table().topic_for("anything.at_all", "globex") == "globex.events"


def test_all_topics_are_the_default_the_system_one_then_each_rules_topic_once() -> None:
    rules = [*RULES, {"event_types": ["batch.cancelled"], "topic": "bos.failures"}]
    assert parse_event_routes(rules, default_topic=DEFAULT, system_topic=SYSTEM).topics() == [
        DEFAULT,
        SYSTEM,
        "bos.failures",
        "acme.phases",
        "bos.phases",
        "globex.events",
        "bos.ops",
    ]


def test_topic_for_reads_the_settings_and_follows_their_changes(settings: Any) -> None:
    settings.BOS_TOPIC_EVENTS = "events.default"
    settings.BOS_TOPIC_SYSTEM_EVENTS = "events.system"
    settings.BOS_EVENT_ROUTES = [{"event_types": ["batch.failed"], "topic": "events.failed"}]
    assert topic_for("batch.failed", "acme") == "events.failed"
    assert topic_for("batch.completed", "acme") == "events.default"
    assert topic_for("consumer.lag_alert", None) == "events.system"
    assert all_event_topics() == ["events.default", "events.system", "events.failed"]
    settings.BOS_EVENT_ROUTES = []
    assert topic_for("batch.failed", "acme") == "events.default"


@pytest.mark.parametrize(
    ("rules", "error"),
    [
        ({"topic": "x"}, "BOS_EVENT_ROUTES must be a JSON list of rules; got dict"),
        ([{"topic": "ok"}, "batch.*"], "BOS_EVENT_ROUTES[1]: a rule must be a JSON object; got str"),
        ([{"event_types": ["batch.*"]}], "BOS_EVENT_ROUTES[0].topic: Field required"),
        (
            [{"event_types": ["x"], "topic": "has space"}],
            "BOS_EVENT_ROUTES[0].topic: 'has space' is not a valid",
        ),
        ([{"event_types": ["x"], "topic": "a" * 250}], "BOS_EVENT_ROUTES[0].topic:"),
        (
            [{"event_types": "batch.*", "topic": "t"}],
            "BOS_EVENT_ROUTES[0].event_types: Input should be a valid list",
        ),
        (
            [{"event_types": [], "topic": "t"}],
            "BOS_EVENT_ROUTES[0].event_types: List should have at least 1 item",
        ),
        (
            [{"event_types": ["x", ""], "topic": "t"}],
            "BOS_EVENT_ROUTES[0].event_types: entries must be non-empty",
        ),
        ([{"tenants": [], "topic": "t"}], "BOS_EVENT_ROUTES[0].tenants: List should have at least 1 item"),
        (
            [{"tenants": ["acme", 7], "topic": "t"}],
            "BOS_EVENT_ROUTES[0].tenants.1: Input should be a valid string",
        ),
        (
            [{"event_type": ["x"], "topic": "t"}],
            "BOS_EVENT_ROUTES[0].event_type: Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_rule_is_refused_naming_its_index_and_field(rules: Any, error: str) -> None:
    with pytest.raises(EventRoutingError) as err:
        parse_event_routes(rules, default_topic=DEFAULT, system_topic=SYSTEM)
    assert error in str(err.value)


def test_a_bad_default_or_system_topic_is_refused_naming_its_setting() -> None:
    with pytest.raises(EventRoutingError, match=r"^BOS_TOPIC_EVENTS: 'no/slash' is not a valid"):
        parse_event_routes([], default_topic="no/slash", system_topic=SYSTEM)
    with pytest.raises(EventRoutingError, match=r"^BOS_TOPIC_SYSTEM_EVENTS: 'a b' is not a valid"):
        parse_event_routes([], default_topic=DEFAULT, system_topic="a b")


def test_a_bad_setting_is_one_system_check_error_that_stops_manage_py_check(settings: Any) -> None:
    settings.BOS_EVENT_ROUTES = [
        {"event_types": ["batch.*"], "topic": "ok"},
        {"event_types": ["x"], "topic": ""},
    ]
    errors = event_routes_check()
    assert [e.id for e in errors] == ["bos.E020"]
    assert errors[0].msg.startswith("BOS_EVENT_ROUTES[1].topic: '' is not a valid Kafka topic name")
    with pytest.raises(SystemCheckError, match=r"bos\.E020"):
        call_command("check")
    with pytest.raises(EventRoutingError):
        topic_for("batch.failed", "acme")


def test_good_settings_pass_the_system_check(settings: Any) -> None:
    settings.BOS_EVENT_ROUTES = RULES
    assert event_routes_check() == []
