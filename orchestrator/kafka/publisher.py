"""The outbox publisher: sends stored events to Kafka in order, marks them published.

One publisher is active at a time (a PostgreSQL advisory lock). Routing picks each
event's topic (orchestrator.kafka.routing); the producer packs events into compressed
record batches (BOS_KAFKA_LINGER_MS, BOS_KAFKA_BATCH_BYTES, BOS_KAFKA_COMPRESSION).

Order per batch (docs/kafka.md, "Order per batch"): a consumer must never read a batch's
events going backwards, even when a send fails or the publisher dies between the
broker's acknowledgement and the mark. So a round sends only the first pending event of
each key (each batch), for up to BOS_OUTBOX_BATCH_SIZE keys, and commits the marks of
those the broker acknowledged before the next round sends the next ones. At any time a
key has at most one event sent and not yet marked, and it is the latest sent: resending
it (after a failure or a crash) is a repeat of the latest, which consumers drop by
`sequence`; nothing later has been sent yet. Rounds follow each other at once while
events are pending, so a burst over many batches still leaves in large compressed
requests.

A key's partition is `murmur2(key) % partitions` (Kafka's own rule) over the topic's
full partition count as the broker described it at start-up, never over the partitions
the producer's metadata happens to list (KeyHashPartitioner).

Each published event's time from being stored to being acknowledged is observed in
`bos_outbox_publish_latency_seconds` once its mark is committed.

Failures back off exponentially. It sleeps on LISTEN/NOTIFY, so an event committed by a
service leaves within milliseconds, and polls anyway every idle interval.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import psycopg
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone
from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner import DefaultPartitioner, Partitioner
from kafka.partitioner.default import murmur2

from orchestrator.kafka.clients import make_producer, next_backoff, with_backoff
from orchestrator.kafka.routing import all_event_topics, topic_for
from orchestrator.kafka.startup import TopicSpec, prepare_topics
from orchestrator.models import OutboxEvent
from orchestrator.observability import context as log_context
from orchestrator.observability import metrics, spans, tracing
from orchestrator.services.events import OUTBOX_CHANNEL

logger = logging.getLogger(__name__)
# Arbitrary constant naming the "outbox publisher" advisory lock.
PUBLISHER_LOCK = 0x05B0_0001
# How long a round waits for the broker's acknowledgements (beyond delivery_timeout_ms).
ACK_TIMEOUT_SECONDS = 90
# A round looks at most this many pending events per event it sends, for the first
# pending event of as many batches as it may send.
WINDOW = 10


def _dsn() -> str:
    db = settings.DATABASES["default"]
    return psycopg.conninfo.make_conninfo(
        host=db.get("HOST") or "",
        port=str(db.get("PORT") or ""),
        dbname=db["NAME"],
        user=db.get("USER") or "",
        password=db.get("PASSWORD") or "",
    )


class KeyHashPartitioner(Partitioner):  # type: ignore[misc]  # kafka-python has no type hints
    """Kafka's keyed partitioning over all of a topic's partitions, whatever metadata says.

    kafka-python's DefaultPartitioner hashes a key over the partitions its metadata lists.
    A metadata answer that lists fewer (a broker that has not caught up with a new topic,
    or a partition increase seen by one client and not another) would send a batch's
    events to another partition than the one its earlier events are on, where a consumer
    may read them in another order. This one hashes over the count `partitions` gives
    for the topic (the broker's description at start-up); for a topic it was not given,
    over the most partitions the metadata has ever listed. A record for a partition the
    metadata does not list yet waits in the producer until it learns its leader.
    Records without a key are placed as the default partitioner places them.
    """

    def __init__(self, partitions: Mapping[str, int] | None = None) -> None:
        self.partitions = dict(partitions or {})
        self._seen: dict[str, int] = {}
        self._default = DefaultPartitioner()

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        if serialized_key is None:
            return int(self._default.partition(topic, key, serialized_key, value, serialized_value, cluster))
        count = self.partitions.get(topic)
        if count is None:
            count = max(len(cluster.partitions_for_topic(topic) or ()), self._seen.get(topic, 0))
            self._seen[topic] = count
        if not count:
            raise ValueError(f"no partitions known for topic {topic}")
        return int(murmur2(serialized_key) & 0x7FFFFFFF) % count


def publisher_producer(partitions: Mapping[str, int] | None = None) -> KafkaProducer:
    """The events producer: batched, compressed, idempotent, one request in flight.

    Idempotence plus one in-flight request keeps each partition in order through the
    producer's own retries; `partitions` (topic → partition count) pins where each key
    goes (KeyHashPartitioner).
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
        partitioner=KeyHashPartitioner(partitions),
    )


def event_headers(
    event_type: str, envelope: dict[str, Any], traceparent: str = ""
) -> list[tuple[str, bytes]]:
    headers = [("bos-event-type", event_type.encode())]
    if envelope.get("correlation_id"):
        headers.append(("bos-correlation-id", str(envelope["correlation_id"]).encode()))
    if traceparent:
        headers.append((tracing.HEADER, traceparent.encode()))
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
        producer_factory: Callable[[], KafkaProducer] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        prepare: bool = True,
    ) -> None:
        # A fixed topic (tests, tools) overrides the routing rules.
        self.topic = topic
        self.should_stop = should_stop
        self.backoff = 0.0
        # Each topic's partition count as the broker described it (KeyHashPartitioner).
        self.partitions: dict[str, int] = {}
        if prepare:
            self.partitions = prepare_topics(
                [
                    TopicSpec(t, settings.BOS_KAFKA_EVENT_PARTITIONS, written=True)
                    for t in ([topic] if topic else all_event_topics())
                ],
                should_stop=should_stop,
            )
        self.producer_factory = producer_factory or (lambda: publisher_producer(self.partitions))
        self.producer = self._connect()
        self._listener: psycopg.Connection | None = None

    def publish_once(self, limit: int | None = None) -> int:
        """One round: send the first pending event of each key, mark those acknowledged.

        A round sends the first pending event of each of up to `limit` keys (the keys of
        the oldest pending events, looking at most `limit * WINDOW` of them), so a key's
        next event leaves only after this one is acknowledged and its mark committed (the
        module docstring says why). Returns how many were marked published: 0 when
        nothing is pending or another publisher holds the lock. Raises PublishFailed,
        after committing the marks of the others, when some were not acknowledged; they
        stay pending (with `attempts` and `last_error`), and so do their keys' later
        events.
        """
        limit = limit or settings.BOS_OUTBOX_BATCH_SIZE
        failed: dict[int, str] = {}
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [PUBLISHER_LOCK])
                if not cursor.fetchone()[0]:
                    return 0
            first: dict[str, int] = {}  # key → its first pending event
            pending = OutboxEvent.objects.filter(published_at__isnull=True).order_by("id")
            for row_id, key in pending.values_list("id", "key")[: limit * WINDOW].iterator(chunk_size=limit):
                first.setdefault(key, row_id)
                if len(first) == limit:
                    break
            if not first:
                return 0
            heads = {}
            stored_at = {}
            for row_id, key, event_type, envelope, traceparent, created_at in (
                OutboxEvent.objects.filter(id__in=first.values())
                .order_by("id")
                .values_list("id", "key", "event_type", "envelope", "traceparent", "created_at")
            ):
                heads[key] = (row_id, event_type, envelope, traceparent)
                stored_at[row_id] = created_at
            futures = {}
            sending: dict[int, Any] = {}  # row id → its publish span (none with tracing off)
            for key, (row_id, event_type, envelope, traceparent) in heads.items():
                topic = self.topic or topic_for(event_type, envelope.get("tenant"))
                span = sending[row_id] = spans.publish(
                    topic=topic, key=key, event_type=event_type, envelope=envelope, traceparent=traceparent
                )
                # The publish span's context; with tracing off, the stored one passed through.
                header = tracing.traceparent_of(span.get_span_context()) if span else traceparent
                try:
                    futures[row_id] = self.producer.send(
                        topic,
                        key=event_key(key),
                        value=event_value(envelope),
                        headers=event_headers(event_type, envelope, header),
                    )
                except KafkaError as exc:  # refused before it left (too large, no metadata)
                    failed[row_id] = _reason(exc)
                    spans.publish_failed(span, failed[row_id])
            # A flush that times out ends the round unmarked: each key's head is resent.
            self.producer.flush(timeout=ACK_TIMEOUT_SECONDS)
            sent = []
            envelopes = {row_id: (event_type, envelope) for row_id, event_type, envelope, _ in heads.values()}
            for row_id, future in futures.items():
                try:
                    # Raises if the broker did not acknowledge.
                    acked = future.get(timeout=ACK_TIMEOUT_SECONDS)
                except KafkaError as exc:
                    failed[row_id] = _reason(exc)
                    spans.publish_failed(sending[row_id], failed[row_id])
                    continue
                spans.published(sending[row_id], partition=acked.partition, offset=acked.offset)
                sent.append(row_id)
                event_type, envelope = envelopes[row_id]
                with log_context.bound(**log_context.envelope_context(envelope)):
                    logger.info("published %s (sequence %s)", event_type, envelope.get("sequence"))
            if sent:
                published_at = timezone.now()
                OutboxEvent.objects.filter(id__in=sent).update(published_at=published_at)
                latencies = [(published_at - stored_at[row_id]).total_seconds() for row_id in sent]
                transaction.on_commit(partial(metrics.record_published, latencies), robust=True)
            for reason, ids in _by_reason(failed).items():
                OutboxEvent.objects.filter(id__in=ids).update(attempts=F("attempts") + 1, last_error=reason)
        if failed:
            raise PublishFailed(
                f"{len(failed)} of {len(heads)} events not acknowledged: {next(iter(failed.values()))}"
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
        delivery timeout; what it failed to send is still pending, so a fresh one sends
        it again.
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
        # Its own queries (the lock, the pending rows, LISTEN) belong to no trace: only the
        # publish spans, children of the spans that stored the events, are recorded.
        with tracing.quiet():
            self._run()

    def _run(self) -> None:
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


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


def _by_reason(failed: Mapping[int, str]) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {}
    for row_id, reason in failed.items():
        ids.setdefault(reason, []).append(row_id)
    return ids


class PublishFailed(RuntimeError):
    """Some events were not acknowledged; they stay pending and are sent again."""
