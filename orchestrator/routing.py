"""Choosing the Celery queue of a task from routing rules, as pure code.

Rules come from `settings.BOS_ROUTES` (env `BOS_ROUTES`, JSON): a list of objects, the
first that matches wins, e.g.

    [{"queue": "bos.priority", "min_priority": 8},
     {"queue": "bos.heavy", "pipeline": "essay-analysis", "phase": "spellcheck"},
     {"queue": "bos.acme", "tenant": "acme", "kind": "items"}]

Every key but `queue` is optional: `min_priority` (0–9), `pipeline`, `phase`, `tenant`,
`kind` (`orchestration`, `items` for chunk tasks, `batch` for per-batch phases). A task no
rule matches goes to its default queue. Workers choose what they serve with
`celery worker -Q …`, so priority batches or heavy phases get workers of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["orchestration", "items", "batch"]
RULE_KEYS = {"queue", "min_priority", "pipeline", "phase", "tenant", "kind"}


@dataclass(frozen=True)
class TaskFacts:
    """What a rule can match on."""

    kind: Kind
    priority: int
    pipeline: str
    tenant: str
    phase: str = ""


class RoutingError(ValueError):
    """A routing rule that cannot be used."""


def check_rules(rules: Any) -> list[dict[str, Any]]:
    """Validate rules (at start-up); return them as a list of dicts."""
    if not isinstance(rules, list):
        raise RoutingError("BOS_ROUTES must be a JSON list of rules")
    for n, rule in enumerate(rules, 1):
        if not isinstance(rule, dict) or not isinstance(rule.get("queue"), str) or not rule["queue"]:
            raise RoutingError(f"BOS_ROUTES rule {n} needs a `queue` name")
        unknown = set(rule) - RULE_KEYS
        if unknown:
            raise RoutingError(f"BOS_ROUTES rule {n} has unknown keys: {', '.join(sorted(unknown))}")
        if "min_priority" in rule and not (
            isinstance(rule["min_priority"], int) and 0 <= rule["min_priority"] <= 9
        ):
            raise RoutingError(f"BOS_ROUTES rule {n}: min_priority must be 0–9")
        if "kind" in rule and rule["kind"] not in ("orchestration", "items", "batch"):
            raise RoutingError(f"BOS_ROUTES rule {n}: kind must be orchestration, items or batch")
    return rules


def _matches(rule: Mapping[str, Any], facts: TaskFacts) -> bool:
    return bool(
        facts.priority >= rule.get("min_priority", 0)
        and rule.get("pipeline", facts.pipeline) == facts.pipeline
        and rule.get("phase", facts.phase) == facts.phase
        and rule.get("tenant", facts.tenant) == facts.tenant
        and rule.get("kind", facts.kind) == facts.kind
    )


def route(rules: Sequence[Mapping[str, Any]], facts: TaskFacts) -> str | None:
    """The queue of the first rule matching `facts`, or None for the default queue."""
    for rule in rules:
        if _matches(rule, facts):
            return str(rule["queue"])
    return None
