"""The outbox publisher on a real broker: batches, compression, order, routing, acks.

And the events it publishes: numbered per batch (`sequence`) when stored, read back by a
consumer never going backwards, whatever fails in between.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.partitioner.default import murmur2

from orchestrator.kafka.clients import ensure_topics, make_producer
from orchestrator.kafka.publisher import (
    KeyHashPartitioner,
    OutboxPublisher,
    PublishFailed,
    publisher_producer,
)
from orchestrator.kafka.routing import topic_for
from orchestrator.kafka.startup import consumer_topics
from orchestrator.models import Batch, OutboxEvent
from orchestrator.services.events import emit, outbox_event
from orchestrator.services.lag_alerts import ALERT_EVENT
from tests.support.factories import BatchFactory, OutboxEventFactory
from tests.support.kafka import headers_of, read_topic
from tests.support.processes import free_port, start_broker, stop
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db", "kafka_topics")]


def own_topic(partitions: int = 1) -> str:
    topic = f"{settings.BOS_TOPIC_EVENTS}.{uuid.uuid4().hex[:8]}"
    ensure_topics([topic], partitions=partitions)
    return topic


def read_all(topic: str, expected: int) -> list[object]:
    """Every record of every partition of `topic` (group-less), until `expected` are read."""
    consumer = KafkaConsumer(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[object] = []

        def more() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            return len(records) >= expected

        wait_for(more, timeout=30, what=f"{expected} records on {topic}")
        return records
    finally:
        consumer.close()


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd"])
def test_compressed_batches_are_readable_by_a_plain_consumer(codec: str) -> None:
    topic = own_topic()
    events = [OutboxEventFactory(published_at=None) for _ in range(200)]
    with override_settings(BOS_KAFKA_COMPRESSION=codec, BOS_KAFKA_LINGER_MS=20):
        publisher = OutboxPublisher(topic=topic)
        try:
            assert publisher.publish_once() == 200
            stats = publisher.producer.metrics()["producer-metrics"]
        finally:
            publisher.close()

    assert publisher.producer.config["compression_type"] == codec
    # Compressed for real (smaller than sent), and packed many records to a request.
    assert stats["compression-rate-avg"] < 0.8
    assert stats["records-per-request-avg"] > 10
    records = read_topic(topic, min_records=200)
    assert [json.loads(r.value)["event_id"] for r in records] == [str(e.event_id) for e in events]
    assert headers_of(records[0])["bos-event-type"] == events[0].event_type


def drain(publisher: OutboxPublisher) -> int:
    """Publish rounds until nothing is pending, as the publisher's loop does; how many were marked."""
    marked = 0

    def done() -> bool:
        nonlocal marked
        marked += publisher.publish_once()
        return not OutboxEvent.objects.filter(published_at__isnull=True).exists()

    wait_for(done, timeout=60, interval=0, what="the outbox drained")
    return marked


def partition_of(key: str, partitions: int) -> int:
    """Where Kafka's own rule (the Java client's, murmur2) puts a key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def spread_ids(count: int, partitions: int) -> list[uuid.UUID]:
    """`count` fixed batch ids, as many on each partition: a test of spreading is deterministic."""
    ids: list[uuid.UUID] = []
    per = count // partitions
    on: dict[int, int] = defaultdict(int)
    n = 0
    while len(ids) < count:
        candidate = uuid.UUID(int=n)
        n += 1
        p = partition_of(str(candidate), partitions)
        if on[p] < per:
            on[p] += 1
            ids.append(candidate)
    return ids


def test_each_batch_keeps_its_order_on_its_own_partition() -> None:
    topic = own_topic(partitions=3)
    # Fixed ids, two per partition: random ones all land on one partition once in 243 runs.
    batches = [BatchFactory(id=i) for i in spread_ids(6, 3)]
    for i in range(120):  # interleaved: batch 0, 1, ..., 5, 0, 1, ...
        OutboxEventFactory(batch=batches[i % 6], published_at=None)
    publisher = OutboxPublisher(topic=topic)
    try:
        assert publisher.partitions == {topic: 3}
        assert drain(publisher) == 120
    finally:
        publisher.close()

    stored: dict[str, list[str]] = defaultdict(list)
    for key, event_id in OutboxEvent.objects.order_by("id").values_list("key", "event_id"):
        stored[key].append(str(event_id))
    received: dict[str, list[str]] = defaultdict(list)
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for record in read_all(topic, 120):
        key = record.key.decode()  # type: ignore[attr-defined]
        received[key].append(json.loads(record.value)["event_id"])  # type: ignore[attr-defined]
        partitions_of[key].add(record.partition)  # type: ignore[attr-defined]
    assert received == stored
    # Each batch on the one partition any Kafka client computes for its key: all three used.
    assert partitions_of == {str(b.id): {partition_of(str(b.id), 3)} for b in batches}
    assert set().union(*partitions_of.values()) == {0, 1, 2}


class FakeCluster:
    """The part of kafka-python's ClusterMetadata a partitioner reads."""

    def __init__(self, listed: set[int]) -> None:
        self.listed = listed

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.listed

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.listed


def test_a_key_keeps_its_partition_while_metadata_lists_fewer_partitions() -> None:
    keys = [str(i).encode() for i in spread_ids(30, 3)]
    expected = [partition_of(k.decode(), 3) for k in keys]
    pinned = KeyHashPartitioner({"events": 3})
    # A broker not caught up with a new topic lists only partition 2 (kafka-python's own
    # partitioner would then put every key there).
    assert [pinned.partition("events", k, k, None, b"v", FakeCluster({2})) for k in keys] == expected
    # A topic it was not told about: the most partitions its metadata has ever listed.
    learning = KeyHashPartitioner()
    assert [learning.partition("other", k, k, None, b"v", FakeCluster({0, 1, 2})) for k in keys] == expected
    assert [learning.partition("other", k, k, None, b"v", FakeCluster({0})) for k in keys] == expected


class FlakyProducer:
    """A real producer whose chosen sends fail once: `lose` never reach the broker, `unacked`
    are written but reported as failed (an acknowledgement lost). Keys are (batch id, sequence)."""

    def __init__(self, *, lose: set[tuple[str, int]] = frozenset(), unacked: set[tuple[str, int]] = frozenset(),
                 crash_after_flush: int = 0) -> None:  # fmt: skip
        self.lose, self.unacked = set(lose), set(unacked)
        self.crash_after_flush = crash_after_flush
        self.failed: list[tuple[str, int]] = []
        self.producer: KafkaProducer | None = None

    def __call__(self) -> KafkaProducer:
        """The publisher's producer factory (called again when it renews its producer)."""
        self.producer = publisher_producer()
        return cast(KafkaProducer, self)

    def send(self, topic: str, **kwargs: Any) -> Any:
        assert self.producer is not None
        which = (kwargs["key"].decode(), json.loads(kwargs["value"])["sequence"])
        if which in self.lose:
            self.lose.discard(which)
            self.failed.append(which)
            return FailedSend()
        future = self.producer.send(topic, **kwargs)
        if which in self.unacked:
            self.unacked.discard(which)
            self.failed.append(which)
            future.get(timeout=30)
            return FailedSend()
        return future

    def flush(self, timeout: float | None = None) -> None:
        assert self.producer is not None
        self.producer.flush(timeout=timeout)
        if self.crash_after_flush:
            self.crash_after_flush -= 1
            raise RuntimeError("the publisher died before marking what the broker acknowledged")

    def close(self, timeout: float | None = None) -> None:
        assert self.producer is not None
        self.producer.close(timeout=timeout)


class FailedSend:
    def get(self, timeout: float | None = None) -> None:
        raise KafkaTimeoutError("injected: no acknowledgement")


def publish_through_failures(publisher: OutboxPublisher) -> None:
    """What the publisher's loop does: a failed round renews the producer, the next one goes on."""

    def drained() -> bool:
        try:
            publisher.publish_once()
        except (PublishFailed, RuntimeError):
            publisher.renew_producer()
        return not OutboxEvent.objects.filter(published_at__isnull=True).exists()

    wait_for(drained, timeout=60, interval=0, what="the outbox drained through the failures")


def sequences_read(topic: str, expected: int) -> dict[str, list[int]]:
    """Per key, the `sequence` of each record in the order a consumer reads them."""
    read: dict[str, list[int]] = defaultdict(list)
    for record in read_all(topic, expected):
        read[record.key.decode()].append(json.loads(record.value)["sequence"])  # type: ignore[attr-defined]
    return dict(read)


def test_a_failed_send_never_lets_a_consumer_read_a_batch_going_backwards() -> None:
    topic = own_topic(partitions=3)
    batches = [str(i) for i in spread_ids(3, 3)]
    for b in batches:
        BatchFactory(id=b)
    for i in range(18):  # six events per batch, interleaved
        OutboxEventFactory(batch=Batch.objects.get(id=batches[i % 3]), published_at=None)
    # Event 2 of batch 0 is lost; event 4 of batch 1 is written but its acknowledgement lost.
    flaky = FlakyProducer(lose={(batches[0], 2)}, unacked={(batches[1], 4)})
    publisher = OutboxPublisher(topic=topic, producer_factory=flaky)
    try:
        publish_through_failures(publisher)
    finally:
        publisher.close()

    assert flaky.failed == [(batches[0], 2), (batches[1], 4)]
    read = sequences_read(topic, 19)
    # Never backwards, nothing missing; the one repeat is of the latest event read.
    assert read == {
        batches[0]: [1, 2, 3, 4, 5, 6],
        batches[1]: [1, 2, 3, 4, 4, 5, 6],
        batches[2]: [1, 2, 3, 4, 5, 6],
    }
    failed = OutboxEvent.objects.get(key=batches[0], envelope__sequence=2)
    assert failed.attempts == 1 and "injected" in failed.last_error


def test_a_publisher_dying_before_its_marks_only_repeats_each_batch_s_latest_event() -> None:
    topic = own_topic(partitions=3)
    batches = [str(i) for i in spread_ids(3, 3)]
    for b in batches:
        BatchFactory(id=b)
    for i in range(9):
        OutboxEventFactory(batch=Batch.objects.get(id=batches[i % 3]), published_at=None)
    # The second round is acknowledged by the broker, then its marks are lost.
    flaky = FlakyProducer(crash_after_flush=0)
    publisher = OutboxPublisher(topic=topic, producer_factory=flaky)
    try:
        assert publisher.publish_once() == 3
        flaky.crash_after_flush = 1
        with pytest.raises(RuntimeError, match="died"):
            publisher.publish_once()
        assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 6
        publish_through_failures(publisher)
    finally:
        publisher.close()

    assert sequences_read(topic, 12) == {b: [1, 2, 2, 3] for b in batches}


def test_a_round_sends_one_event_of_each_batch_also_behind_a_batch_with_many() -> None:
    topic = own_topic()
    busy = BatchFactory()
    for _ in range(20):
        OutboxEventFactory(batch=busy, published_at=None)
    others = [OutboxEventFactory(published_at=None) for _ in range(4)]
    publisher = OutboxPublisher(topic=topic)
    try:
        assert publisher.publish_once(limit=5) == 5
        marked = OutboxEvent.objects.filter(published_at__isnull=False)
        assert sorted(marked.values_list("key", flat=True)) == sorted(
            [str(busy.id)] + [e.key for e in others]
        )
        assert marked.get(key=str(busy.id)).envelope["sequence"] == 1
    finally:
        publisher.close()


def test_the_consumer_checks_and_creates_the_system_events_topic_at_start_up() -> None:
    specs = {s.name: s for s in consumer_topics(settings.BOS_TOPIC_REQUESTS, settings.BOS_TOPIC_DLQ)}
    system = specs[settings.BOS_TOPIC_SYSTEM_EVENTS]
    assert system.written and system.partitions == settings.BOS_KAFKA_EVENT_PARTITIONS


def test_emit_numbers_each_batch_s_events_from_1_in_the_order_listed(
    django_assert_num_queries: Any,
) -> None:
    first, second = BatchFactory(), BatchFactory()
    now = timezone.now()
    with transaction.atomic():
        # One UPDATE … RETURNING numbers them, one INSERT stores them, one NOTIFY: no query per event.
        with django_assert_num_queries(3):
            emit([outbox_event(batch=first, event_type="batch.started", at=now) for _ in range(3)])
        emit(
            [
                outbox_event(batch=second, event_type="batch.accepted", at=now),
                outbox_event(batch=first, event_type="batch.cancelled", at=now),
                outbox_event(batch=second, event_type="batch.cancelled", at=now),
            ]
        )
    numbered = list(OutboxEvent.objects.order_by("id").values_list("key", "envelope__sequence"))
    assert numbered == [
        (str(first.id), 1),
        (str(first.id), 2),
        (str(first.id), 3),
        (str(second.id), 1),
        (str(first.id), 4),
        (str(second.id), 2),
    ]
    # The caller's instance holds the stored count, so saving it later keeps the numbering.
    assert (first.events_count, second.events_count) == (4, 2)
    first.save()
    assert Batch.objects.get(id=first.id).events_count == 4


def test_an_event_of_no_batch_has_no_sequence_and_goes_to_the_system_topic() -> None:
    event_id = str(uuid.uuid4())
    alert = OutboxEvent(
        event_id=event_id,
        tenant=None,
        batch=None,
        event_type=ALERT_EVENT,
        key="bos-orchestrator",
        envelope={
            "event_id": event_id,
            "event_type": ALERT_EVENT,
            "schema_version": 1,
            "occurred_at": "2026-11-29T10:20:00Z",
            "correlation_id": None,
            "tenant": None,
            "data": {"group": "g", "topic": "t", "total_lag": 5, "threshold": 1, "over_for_seconds": 1.0, "partitions": {}},
        },
    )  # fmt: skip
    emit([alert])
    assert OutboxEvent.objects.get(id=alert.id).envelope["sequence"] is None
    assert topic_for(ALERT_EVENT, None) == settings.BOS_TOPIC_SYSTEM_EVENTS
    publisher = OutboxPublisher()
    try:
        assert drain(publisher) == 1
    finally:
        publisher.close()
    records = read_topic(settings.BOS_TOPIC_SYSTEM_EVENTS, min_records=1)
    assert event_id in {json.loads(r.value)["event_id"] for r in records}


def test_concurrent_writers_of_a_batch_number_its_events_in_commit_and_id_order() -> None:
    batch = BatchFactory()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(10):
                with transaction.atomic():
                    fresh = Batch.objects.select_related("tenant", "pipeline_version__pipeline").get(
                        id=batch.id
                    )
                    emit(
                        [
                            outbox_event(batch=fresh, event_type="batch.started", at=timezone.now())
                            for _ in range(3)
                        ]
                    )
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    numbers = list(
        OutboxEvent.objects.filter(batch=batch).order_by("id").values_list("envelope__sequence", flat=True)
    )
    assert numbers == list(range(1, 121))
    assert Batch.objects.get(id=batch.id).events_count == 120


def test_routing_rules_send_events_to_their_topics() -> None:
    failures = own_topic()
    acme_topic = own_topic()
    routes = [
        {"event_types": ["batch.failed"], "topic": failures},
        {"event_types": ["batch.phase_*"], "tenants": ["acme-routed"], "topic": acme_topic},
    ]
    acme = BatchFactory(tenant__slug="acme-routed")
    other = BatchFactory()
    with override_settings(BOS_EVENT_ROUTES=routes):
        failed = OutboxEventFactory(batch=other, event_type="batch.failed", published_at=None)
        phase = OutboxEventFactory(batch=acme, event_type="batch.phase_started", published_at=None)
        default = OutboxEventFactory(batch=other, event_type="batch.phase_started", published_at=None)
        publisher = OutboxPublisher()
        try:
            assert drain(publisher) == 3
        finally:
            publisher.close()

    assert [json.loads(r.value)["event_id"] for r in read_topic(failures, min_records=1)] == [
        str(failed.event_id)
    ]
    assert [json.loads(r.value)["event_id"] for r in read_topic(acme_topic, min_records=1)] == [
        str(phase.event_id)
    ]
    on_default = [
        json.loads(r.value)["event_id"] for r in read_topic(settings.BOS_TOPIC_EVENTS, min_records=1)
    ]
    assert str(default.event_id) in on_default and str(failed.event_id) not in on_default


def test_events_are_marked_published_only_after_the_broker_acknowledged_them(tmp_path: Path) -> None:
    port = free_port()
    broker = start_broker(port, tmp_path / "broker.log")
    servers = [f"127.0.0.1:{port}"]
    events = [OutboxEventFactory(published_at=None) for _ in range(5)]
    try:
        with override_settings(KAFKA_BOOTSTRAP_SERVERS=servers):
            publisher = OutboxPublisher(
                topic="outbox-acks",
                prepare=False,
                producer_factory=lambda: make_producer(
                    linger_ms=5,
                    enable_idempotence=True,
                    request_timeout_ms=1000,
                    delivery_timeout_ms=3000,
                    max_block_ms=3000,
                    reconnect_backoff_max_ms=200,
                ),
            )
            publisher.producer.send("outbox-acks", b"warm-up").get(timeout=30)
            stop(broker)  # the broker goes away between two rounds

            with pytest.raises((PublishFailed, KafkaError)):
                publisher.publish_once()
            assert not OutboxEvent.objects.filter(published_at__isnull=False).exists()

            broker = start_broker(port, tmp_path / "broker-again.log")
            wait_for(
                lambda: _publishes(publisher), timeout=60, interval=0.5, what="publishing after the restart"
            )
            publisher.close()
            # The restarted broker (in memory) holds exactly what was marked published.
            received = {json.loads(r.value)["event_id"] for r in read_all("outbox-acks", 5)}  # type: ignore[attr-defined]
    finally:
        stop(broker)
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    assert received == {str(e.event_id) for e in events}


def _publishes(publisher: OutboxPublisher) -> bool:
    try:
        publisher.publish_once()
    except Exception:  # noqa: BLE001 - still failing while the broker comes back
        publisher.renew_producer()  # as the publisher's loop does after a failed round
        return False
    return not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def test_the_publisher_producer_uses_the_configured_batching_and_compression() -> None:
    with override_settings(BOS_KAFKA_COMPRESSION="zstd", BOS_KAFKA_LINGER_MS=7, BOS_KAFKA_BATCH_BYTES=65536):
        producer = publisher_producer()
    try:
        config = producer.config
        assert (config["compression_type"], config["linger_ms"], config["batch_size"]) == ("zstd", 7, 65536)
        assert config["enable_idempotence"] and config["acks"] == -1
        assert config["max_in_flight_requests_per_connection"] == 1
    finally:
        producer.close()
