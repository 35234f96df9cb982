"""The outbox publisher: sends stored events to Kafka in order, marks them published.

One publisher is active at a time (a PostgreSQL advisory lock), so events of a batch
leave in the order they were stored. A row is marked published only after the broker
acknowledged it; a crash in between publishes it again (at least once; consumers
de-duplicate by `event_id`). It sleeps on LISTEN/NOTIFY, so an event committed by a
service leaves within milliseconds, and polls anyway every idle interval.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import psycopg
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from kafka import KafkaProducer

from orchestrator.kafka.clients import make_producer, with_backoff
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


class OutboxPublisher:
    def __init__(
        self,
        *,
        topic: str | None = None,
        producer: KafkaProducer | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.topic = topic or settings.BOS_TOPIC_EVENTS
        self.should_stop = should_stop
        self.producer = producer or with_backoff(
            # No linger: every send is followed by a flush anyway.
            lambda: make_producer(linger_ms=0),
            what="outbox publisher",
            should_stop=should_stop,
        )
        self._listener: psycopg.Connection | None = None

    def publish_once(self, limit: int | None = None) -> int:
        """Publish up to `limit` pending events; the number published (0 if another holds the lock)."""
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
                    self.topic,
                    key=key.encode(),
                    value=json.dumps(envelope, separators=(",", ":")).encode(),
                    headers=[("bos-event-type", event_type.encode())],
                )
                for _, key, event_type, envelope in rows
            ]
            self.producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=30)  # raises if the broker did not acknowledge
            OutboxEvent.objects.filter(id__in=[r[0] for r in rows]).update(published_at=timezone.now())
        return len(rows)

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
            except Exception:  # noqa: BLE001 - the loop must survive broker and DB outages
                logger.exception("outbox publish failed; retrying")
                close_old_connections()  # a connection broken by an outage is replaced
                sent = 0
                time.sleep(1.0)
            if sent:
                logger.debug("published %d events", sent)
                continue
            self.wait_for_events(settings.BOS_OUTBOX_IDLE_SECONDS)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.producer.close(timeout=10)
