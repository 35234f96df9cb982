"""Kafka helpers for tests: send requests, read a topic from its start."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from django.conf import settings
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from orchestrator.kafka.clients import make_producer


def send_raw(topic: str, values: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = make_producer()
    try:
        for key, value in values:
            producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()


def send_requests(messages: list[dict[str, Any]], topic: str | None = None) -> None:
    send_raw(
        topic or settings.BOS_TOPIC_REQUESTS,
        [
            (f"{m.get('tenant')}:{m.get('data', {}).get('external_id')}".encode(), json.dumps(m).encode())
            for m in messages
        ],
    )


def read_topic(topic: str, *, min_records: int = 0, timeout: float = 20.0) -> list[ConsumerRecord]:
    """Every record of partition 0 of `topic`, from the start (no consumer group).

    Reads until `min_records` are seen or the high-water mark is reached (the embedded
    broker's end offsets are wrong after batched sends, so the fetch's highwater is used).
    """
    consumer = KafkaConsumer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        group_id=None,
        enable_auto_commit=False,
        client_id=f"test-reader-{uuid.uuid4().hex[:6]}",
    )
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            high = consumer.highwater(tp)
            if len(records) >= max(min_records, 1) and high is not None and consumer.position(tp) >= high:
                break
    finally:
        consumer.close()
    return records


def headers_of(record: ConsumerRecord) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}
