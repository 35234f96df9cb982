"""Routing rules choose a task's queue."""

from __future__ import annotations

import pytest

from orchestrator.routing import RoutingError, TaskFacts, check_rules, route

pytestmark = pytest.mark.unit
RULES = check_rules(
    [
        {"queue": "priority", "min_priority": 8},
        {"queue": "heavy", "pipeline": "essays", "phase": "spellcheck", "kind": "items"},
        {"queue": "acme", "tenant": "acme"},
    ]
)


def facts(**kw: object) -> TaskFacts:
    values: dict[str, object] = {
        "kind": "items",
        "priority": 5,
        "pipeline": "essays",
        "tenant": "globex",
        "phase": "",
    }
    values.update(kw)
    return TaskFacts(**values)  # type: ignore[arg-type]


def test_the_first_matching_rule_wins() -> None:
    assert route(RULES, facts(priority=9, phase="spellcheck")) == "priority"
    assert route(RULES, facts(phase="spellcheck")) == "heavy"
    assert route(RULES, facts(phase="spellcheck", kind="orchestration", tenant="acme")) == "acme"


def test_no_match_means_the_default_queue() -> None:
    assert route(RULES, facts(phase="text_stats")) is None


@pytest.mark.parametrize(
    "rules",
    [
        {"queue": "x"},
        [{"min_priority": 8}],
        [{"queue": "x", "colour": "red"}],
        [{"queue": "x", "min_priority": 12}],
        [{"queue": "x", "kind": "other"}],
    ],
)
def test_bad_rules_are_refused(rules: object) -> None:
    with pytest.raises(RoutingError):
        check_rules(rules)
