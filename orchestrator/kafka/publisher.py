"""The outbox publisher: sends stored events to Kafka in order, marks them published.

One publisher is active at a time (a PostgreSQL advisory lock), so events of a batch
leave in the order they were stored. Each round sends up to BOS_OUTBOX_BATCH_SIZE
events, which the producer packs into compressed record batches (BOS_KAFKA_LINGER_MS,
BOS_KAFKA_BATCH_BYTES, BOS_KAFKA_COMPRESSION), routed to topics by the rules of
orchestrator.kafka.routing. A row is marked published only after the broker
acknowledged it; a crash in between publishes it again (at least once; consumers
de-duplicate by `event_id`). Failures back off exponentially. It sleeps on
LISTEN/NOTIFY, so an event committed by a service leaves within milliseconds, and polls
anyway every idle interval.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone
from kafka import KafkaProducer
from kafka.errors import KafkaError

from orchestrator.kafka.clients import make_producer, next_backoff, with_backoff
from orchestrator.kafka.routing import all_event_topics, topic_for
from orchestrator.kafka.startup import TopicSpec, prepare_topics
from orchestrator.models import OutboxEvent
from orchestrator.services.events import OUTBOX_CHANNEL

logger = logging.getLogger(__name__)
# Arbitrary constant naming the "outbox publisher" advisory lock.
PUBLISHER_LOCK = 0x05B0_0001


def _dsn() -> str:
    db = settings.DATABASES["default"]
    return psycopg.conninfo.make_conninfo(
        host=db.get("HOST") or "",
        port=str(db.get("PORT") or ""),
        dbname=db["NAME"],
        user=db.get("USER") or "",
        password=db.get("PASSWORD") or "",
    )


def publisher_producer() -> KafkaProducer:
    """The events producer: batched, compressed, idempotent, one request in flight.

    Idempotence plus one in-flight request keeps each partition (so each batch, whose
    events share a key) in order through the producer's own retries.
    """
    compression = settings.BOS_KAFKA_COMPRESSION
    return make_producer(
        linger_ms=settings.BOS_KAFKA_LINGER_MS,
        batch_size=settings.BOS_KAFKA_BATCH_BYTES,
        compression_type=None if compression == "none" else compression,
        enable_idempotence=True,
        retries=2**31 - 1,  # bounded by delivery_timeout_ms
        delivery_timeout_ms=60_000,
        client_id="bos-outbox",
    )


def event_headers(event_type: str, envelope: dict[str, Any]) -> list[tuple[str, bytes]]:
    headers = [("bos-event-type", event_type.encode())]
    if envelope.get("correlation_id"):
        headers.append(("bos-correlation-id", str(envelope["correlation_id"]).encode()))
    return headers


def event_key(key: str) -> bytes:
    """The Kafka key of a stored event (its batch id)."""
    return key.encode()


def event_value(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, separators=(",", ":")).encode()


class OutboxPublisher:
    def __init__(
        self,
        *,
        topic: str | None = None,
        producer_factory: Callable[[], KafkaProducer] = publisher_producer,
        should_stop: Callable[[], bool] = lambda: False,
        prepare: bool = True,
    ) -> None:
        # A fixed topic (tests, tools) overrides the routing rules.
        self.topic = topic
        self.should_stop = should_stop
        self.backoff = 0.0
        self.producer_factory = producer_factory
        if prepare:
            prepare_topics(
                [
                    TopicSpec(t, settings.BOS_KAFKA_EVENT_PARTITIONS, written=True)
                    for t in ([topic] if topic else all_event_topics())
                ],
                should_stop=should_stop,
            )
        self.producer = self._connect()
        self._listener: psycopg.Connection | None = None

    def publish_once(self, limit: int | None = None) -> int:
        """Publish up to `limit` pending events; the number marked published.

        0 when another publisher holds the lock. Rows are marked only once the broker
        acknowledged them; when some sends fail, a batch's events after its first failed
        one stay pending too, so its events are never marked out of order.
        """
        limit = limit or settings.BOS_OUTBOX_BATCH_SIZE
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [PUBLISHER_LOCK])
                if not cursor.fetchone()[0]:
                    return 0
            rows = list(
                OutboxEvent.objects.filter(published_at__isnull=True)
                .order_by("id")
                .values_list("id", "key", "event_type", "envelope")[:limit]
            )
            if not rows:
                return 0
            futures = [
                self.producer.send(
                    self.topic or topic_for(event_type, envelope.get("tenant")),
                    key=event_key(key),
                    value=event_value(envelope),
                    headers=event_headers(event_type, envelope),
                )
                for _, key, event_type, envelope in rows
            ]
            self.producer.flush(timeout=90)
            sent, failed, blocked = [], {}, set()
            for (row_id, key, _, _), future in zip(rows, futures, strict=True):
                try:
                    future.get(timeout=90)  # raises if the broker did not acknowledge
                except KafkaError as exc:
                    failed[row_id] = f"{type(exc).__name__}: {exc}"[:1000]
                    blocked.add(key)
                    continue
                if key not in blocked:
                    sent.append(row_id)
            if sent:
                OutboxEvent.objects.filter(id__in=sent).update(published_at=timezone.now())
            if failed:
                OutboxEvent.objects.filter(id__in=list(failed)).update(
                    attempts=F("attempts") + 1, last_error=next(iter(failed.values()))
                )
                raise PublishFailed(
                    f"{len(failed)} of {len(rows)} events not acknowledged: {next(iter(failed.values()))}"
                )
        return len(sent)

    def _connect(self) -> KafkaProducer:
        return with_backoff(
            self.producer_factory,
            what="outbox publisher",
            should_stop=self.should_stop,
            cap=settings.BOS_KAFKA_BACKOFF_CAP_SECONDS,
        )

    def renew_producer(self) -> None:
        """Replace the producer after a failed round.

        Its idempotence state (producer id, sequence numbers) may be stale after a
        delivery timeout; nothing it sent was marked, so a fresh one just sends again.
        """
        try:
            self.producer.close(timeout=0)
        except Exception:  # noqa: BLE001 - closing a broken producer may fail too
            logger.debug("closing the failed producer failed", exc_info=True)
        self.producer = self._connect()

    def wait_for_events(self, timeout: float) -> None:
        """Sleep until a service commits an event (NOTIFY) or `timeout` passes."""
        try:
            if self._listener is None or self._listener.closed:
                self._listener = psycopg.connect(_dsn(), autocommit=True)
                self._listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error as exc:
            logger.warning("outbox LISTEN failed (%s); polling instead", exc)
            self._listener = None
            time.sleep(timeout)

    def run(self) -> None:
        while not self.should_stop():
            try:
                sent = self.publish_once()
            except Exception as exc:  # noqa: BLE001 - the loop must survive broker and DB outages
                self.backoff = next_backoff(self.backoff, cap=settings.BOS_KAFKA_BACKOFF_CAP_SECONDS)
                logger.warning("outbox publish failed (%s); retrying in %.1fs", exc, self.backoff)
                close_old_connections()  # a connection broken by an outage is replaced
                time.sleep(self.backoff)
                if isinstance(exc, KafkaError | PublishFailed):
                    self.renew_producer()
                continue
            self.backoff = 0.0
            if sent:
                logger.debug("published %d events", sent)
                continue
            self.wait_for_events(settings.BOS_OUTBOX_IDLE_SECONDS)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.producer.close(timeout=10)


class PublishFailed(RuntimeError):
    """Some events were not acknowledged; they stay pending and are sent again."""
