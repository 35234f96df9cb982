"""The broker's own round trip, measured beside BOS's 1-item latency in the same run.

A message produced (linger 0, flushed) and read back by a consumer polling with the
same short fetch wait as the latency client: what any Kafka request → Kafka event path
costs on this broker at this moment. BOS's latency over this is the ratio that
`make bench-check` guards (seconds alone move with the machine).
"""

from __future__ import annotations

import statistics
import time
import uuid

from django.conf import settings
from kafka import KafkaConsumer, TopicPartition

from orchestrator.kafka.clients import ensure_topics, make_producer


def kafka_round_trip_ms(runs: int, *, topic_prefix: str) -> float:
    """Median milliseconds from `send` to the same message read back, over `runs`."""
    topic = f"{topic_prefix}roundtrip"
    ensure_topics([topic])
    consumer = KafkaConsumer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, group_id=None, fetch_max_wait_ms=5
    )
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek_to_end()
    consumer.position(partition)  # seek_to_end is lazy: resolve it before the first send
    producer = make_producer(linger_ms=0)
    times: list[float] = []
    try:
        for i in range(runs + 2):
            marker = uuid.uuid4().hex.encode()
            started = time.perf_counter()
            producer.send(topic, value=marker, partition=0)
            producer.flush()
            deadline = time.monotonic() + 30
            found = False
            while not found and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=5).values():
                    found = found or any(r.value == marker for r in records)
            if not found:
                raise SystemExit("benchmark: a message did not come back from the broker within 30 s")
            if i >= 2:
                times.append((time.perf_counter() - started) * 1000)
    finally:
        producer.close()
        consumer.close()
    return statistics.median(times)
