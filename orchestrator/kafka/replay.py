"""Replaying stored outbox events to Kafka again (`manage.py events_replay`).

A selection is one batch's events or the events stored in a half-open time range
`[since, until)` of `OutboxEvent.created_at` (indexed; stored in the transaction of the
change, so within milliseconds of the envelope's `occurred_at`), narrowed by event-type
globs and a tenant. Only events the outbox publisher already sent are chosen unless
unpublished ones are asked for.

Each event is sent again exactly as the publisher sent it (its key, value and headers
come from the publisher's own functions): same key (the batch id), same value (the stored
envelope as compact JSON, so the same `event_id`), to its routed topic (or one topic for
all), in id order, with the publisher's headers plus `bos-replay: true`, `bos-replay-id`
(one per run) and `bos-replayed-at` (when the run started). Rows are read in keyset pages by id
between the selection's first and last id, so a replay of millions of events neither
loads them all nor holds a long transaction, and events stored after it started are not
included.
"""

from __future__ import annotations

import fnmatch
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import Count, Max, Min, QuerySet
from django.db.models.fields.json import KT
from kafka import KafkaProducer
from kafka.errors import KafkaError

from orchestrator.kafka.publisher import event_headers, event_key, event_value
from orchestrator.kafka.routing import topic_for, validate_topic_name
from orchestrator.kafka.startup import StartupError, TopicSpec, prepare_topics
from orchestrator.models import Batch, OutboxEvent, Tenant

logger = logging.getLogger(__name__)

# Sends waiting for the broker's acknowledgement before the next ones are sent.
ACK_WINDOW = 500
# Rows read per query.
PAGE_SIZE = 1000
ACK_TIMEOUT_SECONDS = 30


class ReplayError(Exception):
    """A replay that cannot be made, or failed; the message tells the operator why."""


def replay_headers(
    event_type: str, envelope: dict[str, Any], *, replay_id: str, replayed_at: str, traceparent: str = ""
) -> list[tuple[str, bytes]]:
    """The publisher's headers of the event (its `traceparent`: the stored one, in the same
    trace as the publisher's), then the replay's."""
    return [
        *event_headers(event_type, envelope, traceparent),
        ("bos-replay", b"true"),
        ("bos-replay-id", replay_id.encode()),
        ("bos-replayed-at", replayed_at.encode()),
    ]


def parse_time(option: str, value: str) -> datetime:
    """An ISO 8601 time with a zone (`2026-11-29T00:00:00Z`); ReplayError otherwise."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ReplayError(
            f"{option} must be an ISO 8601 time such as 2026-11-29T00:00:00Z; got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        raise ReplayError(
            f"{option} must include a time zone (e.g. {value}Z or {value}+02:00); got {value!r}"
        )
    return parsed


@dataclass(frozen=True)
class Selection:
    """Which stored events to replay."""

    batch_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None
    types: tuple[str, ...] = ()
    tenant: str | None = None
    include_unpublished: bool = False

    def describe(self) -> str:
        parts = [f"batch {self.batch_id}"] if self.batch_id else []
        if self.since and self.until:
            parts.append(f"stored in [{_iso(self.since)}, {_iso(self.until)})")
        if self.types:
            parts.append(f"type {' or '.join(self.types)}")
        if self.tenant:
            parts.append(f"tenant {self.tenant}")
        parts.append("published or not" if self.include_unpublished else "already published")
        return ", ".join(parts)


def make_selection(
    *,
    batch: str | None,
    since: str | None,
    until: str | None,
    now: datetime,
    types: list[str] | None = None,
    tenant: str | None = None,
    include_unpublished: bool = False,
) -> Selection:
    """Check the command's options; ReplayError names the first one that is wrong."""
    if batch and (since or until):
        raise ReplayError("give either --batch or --since/--until, not both")
    if until and not since:
        raise ReplayError("--until needs --since")
    if not batch and not since:
        raise ReplayError("nothing selected: give --batch ID, or --since T [--until T]")
    batch_id = None
    if batch:
        try:
            batch_id = uuid.UUID(batch)
        except ValueError:
            raise ReplayError(f"--batch must be a batch id (a UUID); got {batch!r}") from None
        if not Batch.objects.filter(id=batch_id).exists():
            raise ReplayError(f"no batch {batch_id}")
    start = parse_time("--since", since) if since else None
    end = parse_time("--until", until) if until else (now if start else None)
    if start and end and start >= end:
        raise ReplayError(f"--since ({_iso(start)}) must be before --until ({_iso(end)})")
    patterns = tuple(t.strip() for t in types or [])
    if any(not p for p in patterns):
        raise ReplayError("--type must not be empty")
    if tenant is not None and not Tenant.objects.filter(slug=tenant).exists():
        raise ReplayError(f"no tenant {tenant!r}")
    return Selection(
        batch_id=batch_id,
        since=start,
        until=end,
        types=patterns,
        tenant=tenant,
        include_unpublished=include_unpublished,
    )


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _base_queryset(selection: Selection) -> QuerySet[OutboxEvent]:
    qs = OutboxEvent.objects.all()
    if selection.batch_id:
        qs = qs.filter(batch_id=selection.batch_id)
    if selection.since and selection.until:
        qs = qs.filter(created_at__gte=selection.since, created_at__lt=selection.until)
    if selection.tenant:
        qs = qs.filter(tenant__slug=selection.tenant)
    return qs


class Row(NamedTuple):
    id: int
    key: str
    event_type: str
    envelope: dict[str, Any]
    batch_id: uuid.UUID | None
    traceparent: str = ""


@dataclass
class Plan:
    """A checked selection: how many events, their id bounds, where each group goes."""

    selection: Selection
    to_topic: str | None
    event_types: list[str]
    total: int
    first_id: int
    last_id: int
    per_topic: Counter[str] = field(default_factory=Counter)

    def queryset(self) -> QuerySet[OutboxEvent]:
        qs = _base_queryset(self.selection).filter(
            event_type__in=self.event_types, id__gte=self.first_id, id__lte=self.last_id
        )
        if not self.selection.include_unpublished:
            qs = qs.filter(published_at__isnull=False)
        return qs

    def topic(self, event_type: str, tenant: str | None) -> str:
        return self.to_topic or topic_for(event_type, tenant)

    def rows(self, *, page: int | None = None, limit: int | None = None) -> Iterator[Row]:
        """The selected events in id order, read `page` rows per query (keyset by id)."""
        page = page or PAGE_SIZE
        qs = self.queryset().order_by("id")
        last, seen = self.first_id - 1, 0
        while limit is None or seen < limit:
            size = page if limit is None else min(page, limit - seen)
            chunk = list(
                qs.filter(id__gt=last).values_list(
                    "id", "key", "event_type", "envelope", "batch_id", "traceparent"
                )[:size]
            )
            for values in chunk:
                yield Row(*values)
            seen += len(chunk)
            if len(chunk) < size:
                return
            last = chunk[-1][0]


def plan_replay(selection: Selection, *, to_topic: str | None = None) -> Plan:
    """Count the selection and route it; ReplayError if it is empty or the topic is bad."""
    if to_topic is not None:
        try:
            validate_topic_name(to_topic)
        except ValueError as exc:
            raise ReplayError(f"--to-topic: {exc}") from None
    base = _base_queryset(selection)
    published = base if selection.include_unpublished else base.filter(published_at__isnull=False)
    present = sorted(set(published.values_list("event_type", flat=True).distinct()))
    if selection.types:
        chosen = [t for t in present if any(fnmatch.fnmatchcase(t, p) for p in selection.types)]
    else:
        chosen = present
    if not chosen:
        raise ReplayError(_nothing_matches(selection, base, present))
    groups = (
        published.filter(event_type__in=chosen)
        .values("event_type", tenant_slug=KT("envelope__tenant"))
        .annotate(n=Count("id"), lo=Min("id"), hi=Max("id"))
        .order_by()
    )
    plan = Plan(selection=selection, to_topic=to_topic, event_types=chosen, total=0, first_id=0, last_id=0)
    bounds: list[int] = []
    for group in groups:
        plan.total += group["n"]
        plan.per_topic[plan.topic(group["event_type"], group["tenant_slug"])] += group["n"]
        bounds += [group["lo"], group["hi"]]
    plan.first_id, plan.last_id = min(bounds), max(bounds)
    return plan


def _nothing_matches(selection: Selection, base: QuerySet[OutboxEvent], present: list[str]) -> str:
    message = f"no stored events match: {selection.describe()}"
    if selection.types and present:
        return f"{message}; the types there are {', '.join(present)}"
    if not selection.include_unpublished:
        waiting = base.filter(published_at__isnull=True).count()
        if waiting:
            return (
                f"{message}; {waiting} matching event(s) are not published yet (the outbox publisher "
                "will send them; --include-unpublished sends them now as well)"
            )
    return message


def prepare_replay_topics(plan: Plan) -> None:
    """Make sure the plan's topics exist before sending, as the publisher does.

    A missing topic is created when BOS_KAFKA_CREATE_TOPICS is on (routed topics with
    BOS_KAFKA_EVENT_PARTITIONS, a --to-topic with at least one), else ReplayError names it:
    a send to a missing topic would otherwise wait a minute for metadata and fail.
    """
    specs = [
        TopicSpec(topic, 1 if topic == plan.to_topic else settings.BOS_KAFKA_EVENT_PARTITIONS, written=True)
        for topic in sorted(plan.per_topic)
    ]
    try:
        prepare_topics(specs)
    except StartupError as exc:
        raise ReplayError(f"the replay's topics are not ready ({exc.step}): {exc.message}") from exc


@dataclass
class ReplayResult:
    replay_id: str
    replayed_at: str
    per_topic: Counter[str] = field(default_factory=Counter)
    last_id: int | None = None

    @property
    def total(self) -> int:
        return sum(self.per_topic.values())


def replay(
    plan: Plan,
    *,
    producer: KafkaProducer,
    replay_id: str,
    replayed_at: datetime,
    progress: Callable[[int], object] = lambda n: None,
    window: int | None = None,
) -> ReplayResult:
    """Send the plan's events in id order; returns once the broker acknowledged them all.

    Raises ReplayError when the broker refuses or does not acknowledge an event, saying
    how far the replay got (running it again is safe: consumers de-duplicate by event_id).
    """
    window = window or ACK_WINDOW
    result = ReplayResult(replay_id=replay_id, replayed_at=_iso(replayed_at))
    pending: list[tuple[Row, str, Any]] = []

    def failed(row: Row, topic: str, exc: Exception) -> ReplayError:
        return ReplayError(
            f"the broker did not acknowledge event {row.id} ({row.event_type}) on {topic}: {exc!r}. "
            f"{result.total} of {plan.total} events were replayed"
            + (f" (up to id {result.last_id})" if result.last_id else "")
            + "; running the replay again is safe: consumers de-duplicate by event_id"
        )

    def settle() -> None:
        producer.flush(timeout=ACK_TIMEOUT_SECONDS)
        for row, topic, future in pending:
            try:
                future.get(timeout=ACK_TIMEOUT_SECONDS)
            except KafkaError as exc:
                raise failed(row, topic, exc) from exc
            result.per_topic[topic] += 1
            result.last_id = row.id
        progress(len(pending))
        pending.clear()

    logger.info("events replay %s started: %d events, %s", replay_id, plan.total, plan.selection.describe())
    headers_at = result.replayed_at
    for row in plan.rows():
        topic = plan.topic(row.event_type, row.envelope.get("tenant"))
        try:
            future = producer.send(
                topic,
                key=event_key(row.key),
                value=event_value(row.envelope),
                headers=replay_headers(
                    row.event_type,
                    row.envelope,
                    replay_id=replay_id,
                    replayed_at=headers_at,
                    traceparent=row.traceparent,
                ),
            )
        except KafkaError as exc:  # e.g. no metadata for the topic within max_block_ms
            raise failed(row, topic, exc) from exc
        pending.append((row, topic, future))
        if len(pending) >= window:
            settle()
    if pending:
        settle()
    logger.info("events replay %s done: %d events acknowledged", replay_id, result.total)
    return result
