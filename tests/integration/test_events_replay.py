"""`manage.py events_replay` re-publishes exactly the stored events asked for, on the broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from kafka.consumer.fetcher import ConsumerRecord

from orchestrator.kafka import replay as replay_module
from orchestrator.kafka.clients import ensure_topics
from orchestrator.kafka.publisher import OutboxPublisher
from orchestrator.models import OutboxEvent
from tests.support.factories import BatchFactory, OutboxEventFactory, TenantFactory
from tests.support.kafka import headers_of, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
US = timedelta(microseconds=1)


def fresh_topic(label: str) -> str:
    """A topic of this test alone, with one partition (read_topic reads partition 0)."""
    topic = f"{django_settings.BOS_TOPIC_EVENTS}.{label}.{uuid.uuid4().hex[:8]}"
    ensure_topics([topic], partitions=1)
    return topic


@pytest.fixture
def events_topic(settings: Any) -> str:
    """The default events topic, fresh for this test; no routing rules."""
    topic = fresh_topic("replay")
    settings.BOS_TOPIC_EVENTS = topic
    settings.BOS_EVENT_ROUTES = []
    return topic


def events_replay(*args: str) -> str:
    out = StringIO()
    call_command("events_replay", *args, stdout=out)
    return out.getvalue()


def event_ids(records: list[ConsumerRecord]) -> list[str]:
    import json

    return [json.loads(r.value)["event_id"] for r in records]


def ids_of(events: list[OutboxEvent]) -> list[str]:
    return [str(e.event_id) for e in sorted(events, key=lambda e: e.id)]


def test_a_batch_replay_sends_all_its_events_in_order_with_replay_headers(events_topic: str) -> None:
    batch, other = BatchFactory(), BatchFactory()
    mine = [
        OutboxEventFactory(batch=batch, event_type=t, at=T0 + i * US)
        for i, t in enumerate(["batch.accepted", "batch.phase_started", "batch.completed"])
    ]
    OutboxEventFactory(batch=other, event_type="batch.accepted")

    out = events_replay("--batch", str(batch.id), "--execute")

    records = read_topic(events_topic, min_records=3)
    assert event_ids(records) == ids_of(mine)
    assert {r.key for r in records} == {str(batch.id).encode()}
    headers = [headers_of(r) for r in records]
    assert [h["bos-event-type"] for h in headers] == [
        "batch.accepted",
        "batch.phase_started",
        "batch.completed",
    ]
    assert {h["bos-replay"] for h in headers} == {"true"}
    replay_ids = {h["bos-replay-id"] for h in headers}
    assert len(replay_ids) == 1 and uuid.UUID(replay_ids.pop())
    assert datetime.fromisoformat(headers[0]["bos-replayed-at"]).tzinfo is not None
    assert f"replayed 3 event(s), acknowledged by the broker: 3 → {events_topic}" in out


def test_a_time_range_replays_exactly_the_events_stored_in_it(events_topic: str) -> None:
    since, until = T0, T0 + HOUR
    batch = BatchFactory()

    def stored(at: datetime, **kw: Any) -> OutboxEvent:
        return OutboxEventFactory(at=at, **{"batch": batch, **kw})

    before = stored(since - US)
    first = stored(since)
    # Stored in range though it happened before: the range is on when events were stored.
    late = stored(since - HOUR, stored_at=since + 10 * US)
    middle = stored(since + HOUR / 2, batch=BatchFactory())
    last = stored(until - US)
    at_until = stored(until)
    unpublished = stored(since + HOUR / 4, published_at=None)
    after = stored(until + HOUR)

    out = events_replay(
        "--since", since.isoformat(), "--until", until.isoformat().replace("+00:00", "Z"), "--execute"
    )

    records = read_topic(events_topic, min_records=4)
    assert event_ids(records) == ids_of([first, late, middle, last])
    excluded = {str(e.event_id) for e in (before, at_until, unpublished, after)}
    assert not excluded & set(event_ids(records))
    assert "replayed 4 event(s)" in out


def test_type_globs_and_tenant_narrow_the_selection(events_topic: str) -> None:
    acme, globex = TenantFactory(slug="acme"), TenantFactory(slug="globex")
    acme_batch, globex_batch = BatchFactory(tenant=acme), BatchFactory(tenant=globex)
    types = ["batch.accepted", "batch.phase_started", "batch.phase_completed", "batch.completed"]
    made = [
        OutboxEventFactory(batch=b, event_type=t, at=T0 + i * US)
        for b in (acme_batch, globex_batch)
        for i, t in enumerate(types)
    ]

    events_replay(
        "--since", T0.isoformat(), "--until", (T0 + HOUR).isoformat(),
        "--type", "batch.phase_*", "--type", "batch.completed", "--tenant", "acme", "--execute",
    )  # fmt: skip

    records = read_topic(events_topic, min_records=3)
    assert event_ids(records) == ids_of([e for e in made[:4] if e.event_type != "batch.accepted"])


def test_events_go_to_their_routed_topics_unless_a_topic_is_given(settings: Any, events_topic: str) -> None:
    failures, elsewhere = fresh_topic("failures"), fresh_topic("elsewhere")
    settings.BOS_EVENT_ROUTES = [{"event_types": ["batch.failed"], "topic": failures}]
    batch = BatchFactory()
    accepted = OutboxEventFactory(batch=batch, event_type="batch.accepted", at=T0)
    failed = OutboxEventFactory(batch=batch, event_type="batch.failed", at=T0 + US)

    out = events_replay("--batch", str(batch.id), "--execute")
    assert event_ids(read_topic(events_topic, min_records=1)) == [str(accepted.event_id)]
    assert event_ids(read_topic(failures, min_records=1)) == [str(failed.event_id)]
    assert f"1 → {failures}" in out and f"1 → {events_topic}" in out

    events_replay("--batch", str(batch.id), "--to-topic", elsewhere, "--execute")
    assert event_ids(read_topic(elsewhere, min_records=2)) == ids_of([accepted, failed])


def test_replayed_records_are_byte_identical_to_what_the_publisher_sent(events_topic: str) -> None:
    batch = BatchFactory(correlation_id="corr-42")
    # Not ASCII, so escaping must match too.
    phase = {"phase": "résumé ✓", "items_failed": 1}
    for i, (event_type, data) in enumerate([("batch.accepted", {}), ("batch.phase_completed", phase)]):
        OutboxEventFactory(batch=batch, event_type=event_type, at=T0 + i * US, published_at=None, data=data)
    publisher = OutboxPublisher()
    try:
        assert [publisher.publish_once() for _ in range(2)] == [1, 1]  # one event of a batch per round
    finally:
        publisher.close()

    events_replay("--batch", str(batch.id), "--execute")

    records = read_topic(events_topic, min_records=4)
    originals, replays = records[:2], records[2:]
    assert [(r.key, r.value) for r in replays] == [(r.key, r.value) for r in originals]
    # The publisher's headers, then the replay's.
    replay_headers = {"bos-replay", "bos-replay-id", "bos-replayed-at"}
    assert [r.headers[: len(o.headers)] for r, o in zip(replays, originals, strict=True)] == [
        o.headers for o in originals
    ]
    assert {k for r in replays for k, _ in r.headers[len(originals[0].headers) :]} == replay_headers
    assert headers_of(originals[0])["bos-correlation-id"] == "corr-42"
    assert not replay_headers & {k for r in originals for k, _ in r.headers}


def test_a_dry_run_lists_the_events_and_sends_nothing(events_topic: str) -> None:
    batch = BatchFactory()
    events = [
        OutboxEventFactory(batch=batch, event_type="batch.phase_started", at=T0 + i * US) for i in range(3)
    ]

    out = events_replay("--batch", str(batch.id), "--show", "2")

    for event in events[:2]:
        assert str(event.id) in out
    assert str(batch.id) in out and "batch.phase_started" in out and events_topic in out
    assert "2026-11-01T00:00:00Z" in out
    assert "… and 1 more" in out
    assert f"would send 3 → {events_topic}" in out
    assert "dry run: nothing sent" in out
    assert read_topic(events_topic, timeout=3) == []


def test_unpublished_events_are_replayed_only_when_asked(events_topic: str) -> None:
    batch = BatchFactory()
    sent = OutboxEventFactory(batch=batch, at=T0)
    waiting = OutboxEventFactory(batch=batch, at=T0 + US, published_at=None)

    events_replay("--batch", str(batch.id), "--execute")
    events_replay("--batch", str(batch.id), "--include-unpublished", "--execute")

    assert event_ids(read_topic(events_topic, min_records=3)) == ids_of([sent]) + ids_of([sent, waiting])


def test_a_long_replay_reads_in_pages_and_waits_for_acks_in_windows(
    events_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay_module, "PAGE_SIZE", 3)
    monkeypatch.setattr(replay_module, "ACK_WINDOW", 4)
    batch = BatchFactory()
    events = [OutboxEventFactory(batch=batch, at=T0 + i * US) for i in range(10)]
    OutboxEventFactory(at=T0 + 5 * US)  # another batch's, between them by id

    out = events_replay("--batch", str(batch.id), "--execute")

    assert event_ids(read_topic(events_topic, min_records=10)) == ids_of(events)
    assert "replayed 10 event(s)" in out


def test_a_missing_topic_is_refused_when_topics_may_not_be_created(settings: Any, events_topic: str) -> None:
    settings.BOS_KAFKA_CREATE_TOPICS = False
    batch = BatchFactory()
    OutboxEventFactory(batch=batch)
    missing = f"{events_topic}.missing"

    with pytest.raises(CommandError, match=rf"missing topics: {missing}"):
        events_replay("--batch", str(batch.id), "--to-topic", missing, "--execute")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing selected: give --batch ID, or --since T [--until T]"),
        (
            ("--batch", "{batch}", "--since", "2026-11-01T00:00Z"),
            "give either --batch or --since/--until, not both",
        ),
        (("--batch", "not-a-uuid"), "--batch must be a batch id (a UUID); got 'not-a-uuid'"),
        (
            ("--batch", "00000000-0000-0000-0000-000000000000"),
            "no batch 00000000-0000-0000-0000-000000000000",
        ),
        (("--until", "2026-11-01T00:00Z"), "--until needs --since"),
        (
            ("--since", "2026-11-01T01:00Z", "--until", "2026-11-01T01:00Z"),
            "--since (2026-11-01T01:00:00Z) must be before --until",
        ),
        (("--since", "2026-11-01T00:00"), "--since must include a time zone"),
        (("--since", "yesterday"), "--since must be an ISO 8601 time"),
        (("--batch", "{batch}", "--tenant", "nobody"), "no tenant 'nobody'"),
        (
            ("--batch", "{batch}", "--to-topic", "bad topic"),
            "--to-topic: 'bad topic' is not a valid Kafka topic name",
        ),
        (
            ("--batch", "{batch}", "--type", "batch.nope*"),
            "no stored events match: batch {batch}, type batch.nope*, already published; the types there are batch.accepted",
        ),
        (
            ("--since", "2030-01-01T00:00Z", "--until", "2030-01-02T00:00Z"),
            "no stored events match: stored in [2030-01-01T00:00:00Z, 2030-01-02T00:00:00Z)",
        ),
        (("--batch", "{unsent}"), "1 matching event(s) are not published yet"),
        (("--batch", "{batch}", "--show", "-1"), "--show must be 0 (all) or more"),
    ],
)
def test_a_bad_or_empty_selection_is_refused_with_a_clear_message(
    events_topic: str, args: tuple[str, ...], message: str
) -> None:
    batch, unsent = BatchFactory(), BatchFactory()
    OutboxEventFactory(batch=batch, event_type="batch.accepted")
    OutboxEventFactory(batch=unsent, published_at=None)
    values = {"batch": str(batch.id), "unsent": str(unsent.id)}

    with pytest.raises(CommandError) as err:
        events_replay(*(a.format(**values) for a in args))

    assert message.format(**values) in str(err.value)
