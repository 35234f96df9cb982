"""Routing outbound events to Kafka topics by event type and tenant (`BOS_EVENT_ROUTES`).

An event of no tenant (about the service itself: `consumer.lag_alert`, a `bos.alert` of
no tenant) goes to `BOS_TOPIC_SYSTEM_EVENTS`, whatever the rules say, so a tenant's topic
only ever carries events with a tenant slug (CONTRACT §3). For an event of a tenant, the
setting is a JSON list of rules; the first rule matching the event names its topic, and
an event no rule matches goes to `BOS_TOPIC_EVENTS`:

    [{"event_types": ["batch.failed", "batch.rollback_failed"], "topic": "bos.batch.failures"},
     {"event_types": ["batch.phase_*"], "tenants": ["acme"], "topic": "acme.batch.phases"}]

- `event_types`: glob patterns (`fnmatch`, case-sensitive: `*`, `?`, `[abc]`); absent
  means every type.
- `tenants`: exact tenant slugs; absent means every tenant.
- `topic`: a legal Kafka topic name.

Rules are validated with pydantic, once per settings value; `check_event_routes()` turns a
bad setting into one error naming the rule index and field, which the `bos.E020` system
check (orchestrator/checks.py) reports, so `manage.py check` and every command that runs
checks (publish_outbox, consume_batches, runserver) stop at start-up.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

SETTING = "BOS_EVENT_ROUTES"
# Kafka's own rule for topic names (kafka.common.internals.Topic): at most 249 of these.
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# How many (event type, tenant) answers a compiled route table remembers.
_MEMO_SIZE = 10_000


class EventRoutingError(ValueError):
    """`BOS_EVENT_ROUTES` (or a topic setting) cannot be used; the message says where."""


def validate_topic_name(name: str) -> str:
    """`name` if Kafka accepts it as a topic name, else ValueError saying why."""
    if not TOPIC_NAME.match(name) or name in (".", ".."):
        raise ValueError(
            f"{name!r} is not a valid Kafka topic name (1-249 of letters, digits, '.', '_', '-'; not '.' or '..')"
        )
    return name


class EventRoute(BaseModel):
    """One rule of `BOS_EVENT_ROUTES`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    event_types: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    tenants: list[str] | None = Field(default=None, min_length=1)
    topic: str

    @field_validator("event_types", "tenants")
    @classmethod
    def _non_empty_strings(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not v.strip() for v in value):
            raise ValueError("entries must be non-empty strings")
        return value

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return validate_topic_name(value)


@dataclass
class RouteTable:
    """Rules compiled once: each rule's globs as one regex, its tenants as a set."""

    default_topic: str
    rules: tuple[EventRoute, ...]
    system_topic: str
    _compiled: list[tuple[re.Pattern[str], frozenset[str] | None, str]] = field(default_factory=list)
    _memo: dict[tuple[str, str | None], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._compiled = [
            (
                re.compile("|".join(fnmatch.translate(p) for p in rule.event_types)),
                frozenset(rule.tenants) if rule.tenants is not None else None,
                rule.topic,
            )
            for rule in self.rules
        ]

    def topic_for(self, event_type: str, tenant: str | None) -> str:
        key = (event_type, tenant)
        topic = self._memo.get(key)
        if topic is None:
            topic = self._match(event_type, tenant)
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = topic
        return topic

    def _match(self, event_type: str, tenant: str | None) -> str:
        if tenant is None:
            return self.system_topic
        for types, tenants, topic in self._compiled:
            if tenants is not None and tenant not in tenants:
                continue
            if types.match(event_type):
                return topic
        return self.default_topic

    def topics(self) -> list[str]:
        """The default topic, the system topic, then each rule's topic, without repeats."""
        return list(dict.fromkeys([self.default_topic, self.system_topic, *(r.topic for r in self.rules)]))


def _describe(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def parse_event_routes(raw: Any, *, default_topic: str, system_topic: str) -> RouteTable:
    """Validate the setting's value; EventRoutingError names every bad rule and field."""
    for setting, name in (("BOS_TOPIC_EVENTS", default_topic), ("BOS_TOPIC_SYSTEM_EVENTS", system_topic)):
        try:
            validate_topic_name(name)
        except ValueError as exc:
            raise EventRoutingError(f"{setting}: {exc}") from None
    if not isinstance(raw, list):
        raise EventRoutingError(f"{SETTING} must be a JSON list of rules; got {type(raw).__name__}")
    rules: list[EventRoute] = []
    problems: list[str] = []
    for index, rule in enumerate(raw):
        if not isinstance(rule, dict):
            problems.append(f"{SETTING}[{index}]: a rule must be a JSON object; got {type(rule).__name__}")
            continue
        try:
            rules.append(EventRoute.model_validate(rule))
        except ValidationError as exc:
            problems += [f"{SETTING}[{index}].{_describe(e)}" for e in exc.errors()]
    if problems:
        raise EventRoutingError("; ".join(problems))
    return RouteTable(default_topic=default_topic, rules=tuple(rules), system_topic=system_topic)


# The table for the current settings values; rebuilt when a value changes (override_settings
# in tests, never in a running process).
_cache: tuple[object, str, str, RouteTable] | None = None


def route_table() -> RouteTable:
    """The compiled table of the current settings; EventRoutingError if they are bad."""
    global _cache
    raw, default, system = (
        settings.BOS_EVENT_ROUTES,
        settings.BOS_TOPIC_EVENTS,
        settings.BOS_TOPIC_SYSTEM_EVENTS,
    )
    cached = _cache
    if cached is not None and cached[0] is raw and cached[1:3] == (default, system):
        return cached[3]
    table = parse_event_routes(raw, default_topic=default, system_topic=system)
    _cache = (raw, default, system, table)
    return table


def topic_for(event_type: str, tenant: str | None) -> str:
    """The topic of an event: `BOS_TOPIC_SYSTEM_EVENTS` for one of no tenant, else the
    first matching rule's, else `BOS_TOPIC_EVENTS`."""
    return route_table().topic_for(event_type, tenant)


def all_event_topics() -> list[str]:
    """Every topic events can go to: `BOS_TOPIC_EVENTS`, `BOS_TOPIC_SYSTEM_EVENTS`, then each rule's topic."""
    return route_table().topics()


def check_event_routes() -> str | None:
    """The problem with the current settings, or None when they are usable."""
    try:
        route_table()
    except EventRoutingError as exc:
        return str(exc)
    return None
