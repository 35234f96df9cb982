"""Kafka consumer-group helpers for tests: topics of their own, records, commits, a live member."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from orchestrator.kafka.groups import Broker

# The embedded broker's first join of a group takes about half the session timeout.
SESSION_TIMEOUT_MS = 6000


def unique(prefix: str) -> str:
    return f"test-{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(partitions: int) -> str:
    name = unique("groups")
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, client_id="test-groups")
    try:
        admin.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
    return name


def produce(topic: str, counts: dict[int, int], *, linger_ms: int = 0) -> dict[int, int]:
    """Send counts[p] records to each partition p; the log end of each partition after.

    With `linger_ms` the records of a partition leave in one batch: that is what makes
    the embedded broker's ListOffsets wrong.
    """
    producer = KafkaProducer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, linger_ms=linger_ms, batch_size=1 << 20
    )
    try:
        futures = {
            p: [producer.send(topic, partition=p, value=b"x") for _ in range(n)] for p, n in counts.items()
        }
        producer.flush(timeout=30)
        ends = {}
        for p, sent in futures.items():
            offsets = [f.get(timeout=30).offset for f in sent]
            ends[p] = max(offsets) + 1 if offsets else 0
        return ends
    finally:
        producer.close()


def commit(group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for a group as a plain consumer does (no membership)."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, group_id=group, enable_auto_commit=False
    )
    try:
        consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
    finally:
        consumer.close()


def committed(group: str, topic: str) -> dict[int, int]:
    with Broker() as broker:
        return broker.committed(group, topic).get(topic, {})


@contextmanager
def live_member(group: str, topic: str, *, timeout: float = 30.0) -> Iterator[None]:
    """A consumer of `group` subscribed to `topic`, polling in a thread, until the block ends.

    Enters once the consumer has its partitions (it joined the group); leaves the group
    on exit.
    """
    stop, joined = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
            group_id=group,
            enable_auto_commit=False,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=1000,
            client_id="test-live-member",
        )
        try:
            while not stop.is_set():
                consumer.poll(timeout_ms=100)
                if consumer.assignment():
                    joined.set()
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failures.append(exc)
        finally:
            consumer.close()  # leaves the group

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not joined.wait(0.1):
            if failures or time.monotonic() > deadline:
                raise AssertionError(f"the member did not join {group}: {failures}")
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
