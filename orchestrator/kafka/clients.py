"""Building kafka-python clients from settings, waiting with backoff for the broker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from kafka import KafkaProducer
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

logger = logging.getLogger(__name__)
T = TypeVar("T")
# kafka-python 3 raises these when it cannot bootstrap (it has no NoBrokersAvailable).
UNREACHABLE = (KafkaTimeoutError, KafkaConnectionError)
# How long one connection attempt waits for a broker before backing off.
BOOTSTRAP_TIMEOUT_MS = 5000


def next_backoff(current: float, *, cap: float, base: float = 0.5) -> float:
    """The pause after one more failure: `base` first, then doubling, at most `cap`."""
    return min(max(current * 2, base), cap)


def with_backoff(
    make: Callable[[], T],
    *,
    what: str,
    should_stop: Callable[[], bool] = lambda: False,
    base: float = 0.5,
    cap: float = 30.0,
    max_wait: float | None = None,
    on_retry: Callable[[float, Exception], object] | None = None,
) -> T:
    """Call `make` until the broker is reachable, backing off exponentially (capped).

    Each failed attempt is logged, or reported to `on_retry(delay, error)` instead.
    """
    delay, waited = base, 0.0
    while True:
        try:
            return make()
        except UNREACHABLE as exc:
            if should_stop() or (max_wait is not None and waited >= max_wait):
                raise
            if on_retry is not None:
                on_retry(delay, exc)
            else:
                logger.warning(
                    "%s: no Kafka broker reachable at %s; retrying in %.1fs",
                    what,
                    ",".join(settings.KAFKA_BOOTSTRAP_SERVERS),
                    delay,
                )
            time.sleep(delay)
            waited += delay
            delay = next_backoff(delay, cap=cap, base=base)


def make_producer(**overrides: object) -> KafkaProducer:
    config: dict[str, object] = {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        "acks": "all",
        "linger_ms": 2,
        "retries": 5,
        "max_in_flight_requests_per_connection": 1,
        "client_id": "bos",
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_dlq_producer() -> KafkaProducer:
    """The request consumer's producer for dead letters.

    Its `max_request_size` is set explicitly, from `BOS_KAFKA_DLQ_MAX_BYTES`, so the
    consumer knows the largest record it may write and truncates a larger dead letter
    to fit (orchestrator.kafka.consumer.fit_dead_letter) instead of failing on it.
    """
    return make_producer(max_request_size=settings.BOS_KAFKA_DLQ_MAX_BYTES, client_id="bos-dlq")


def ensure_topics(topics: list[str], *, partitions: int | None = None) -> None:
    """Create the topics that do not exist yet (the consumer never auto-creates them).

    Each gets `partitions`, or the partitions BOS expects for its role (requests, DLQ,
    events); see orchestrator.kafka.startup.
    """
    from orchestrator.kafka.startup import TopicSpec, expected_partitions, prepare_topics

    prepare_topics(
        [TopicSpec(t, partitions or expected_partitions(t)) for t in topics],
        create=True,
    )
