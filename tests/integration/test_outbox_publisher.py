"""The outbox publisher on a real broker: batches, compression, order, routing, acks."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from orchestrator.kafka.clients import ensure_topics, make_producer
from orchestrator.kafka.publisher import OutboxPublisher, PublishFailed, publisher_producer
from orchestrator.models import OutboxEvent
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


def test_each_batch_keeps_its_order_across_partitions() -> None:
    topic = own_topic(partitions=3)
    batches = [BatchFactory() for _ in range(6)]
    for i in range(120):  # interleaved: batch 0, 1, ..., 5, 0, 1, ...
        OutboxEventFactory(batch=batches[i % 6], published_at=None)
    publisher = OutboxPublisher(topic=topic)
    try:
        assert publisher.publish_once() == 120
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
    assert all(len(p) == 1 for p in partitions_of.values())
    assert len(set().union(*partitions_of.values())) > 1, "the batches were spread over partitions"


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
            assert publisher.publish_once() == 3
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
