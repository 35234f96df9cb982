"""The Kafka consumer of batch requests (CONTRACT §2).

The loop is validate → store → commit. A record is committed only after what it caused
is durably stored, or after it was dead-lettered with its reason; a transient failure
(database unreachable) rewinds the partition to that record and backs off, so nothing
is lost and nothing is skipped. Values are deserialized inside the handler, so a bad
message can't wedge the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, transaction
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from orchestrator.contracts import contracts
from orchestrator.errors import Conflict, OrchestrationError
from orchestrator.kafka.clients import BOOTSTRAP_TIMEOUT_MS, make_producer, next_backoff, with_backoff
from orchestrator.kafka.health import ConsumerHealth
from orchestrator.kafka.messages import (
    BatchRefData,
    BatchRequestedData,
    Envelope,
    MessageRejected,
    parse_data,
    parse_envelope,
)
from orchestrator.kafka.startup import consumer_topics, prepare_topics, startup_step
from orchestrator.models import Batch, ProcessedEvent, Tenant
from orchestrator.services.batches import BatchRequest, batch_cancel, batch_retry
from orchestrator.services.intake import Intake, batch_create_many

logger = logging.getLogger(__name__)
TRANSIENT = (OperationalError, InterfaceError, ConnectionError)


@dataclass
class PollStats:
    processed: int = 0
    dead_lettered: int = 0
    retried: int = 0


def _intake_of(envelope: Envelope) -> Intake:
    data = parse_data(BatchRequestedData, envelope.data)
    request = BatchRequest(
        tenant=envelope.tenant,
        external_id=data.external_id,
        pipeline=data.pipeline,
        pipeline_version=data.pipeline_version,
        priority=data.priority,
        deadline=data.deadline,
        metadata=data.metadata,
        items=[{"key": i.key, "payload": i.payload} for i in data.items],
        correlation_id=envelope.correlation_id or envelope.event_id,
    )
    return Intake(request=request, actor=f"kafka:{envelope.event_id}", event_id=envelope.event_id)


def _handle_batch_command(service: Callable[..., Any], envelope: Envelope) -> str:
    data = parse_data(BatchRefData, envelope.data)
    batch_id = (
        Batch.objects.filter(tenant__slug=envelope.tenant, external_id=data.external_id, parent__isnull=True)
        .values_list("id", flat=True)
        .first()
    )
    if batch_id is None:
        raise MessageRejected("batch_not_found", f"no batch {envelope.tenant}:{data.external_id}")
    with transaction.atomic():
        tenant = Tenant.objects.get(slug=envelope.tenant)
        _, created = ProcessedEvent.objects.get_or_create(
            event_id=envelope.event_id,
            defaults={"event_type": envelope.event_type, "tenant": tenant, "batch_id": batch_id},
        )
        if not created:
            return "duplicate event, ignored"
        try:
            service(batch_id=batch_id, actor=f"kafka:{envelope.event_id}", reason=data.reason)
        except Conflict as exc:
            # A valid command that no longer applies (the batch already ended): no effect.
            return f"not applied: {exc.message}"
    return f"{envelope.event_type} applied to batch {batch_id}"


COMMANDS: dict[str, Callable[[Envelope], str]] = {
    "batch.cancel_requested": lambda e: _handle_batch_command(batch_cancel, e),
    "batch.retry_requested": lambda e: _handle_batch_command(batch_retry, e),
}


ASSIGNORS = {
    "cooperative-sticky": CooperativeStickyAssignor,
    "sticky": StickyPartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
    "range": RangePartitionAssignor,
}


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits what was processed on partitions this consumer is about to lose."""

    def __init__(self, owner: BatchRequestConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.owner.commit_processed(set(revoked), reason="revoked")
        logger.info("partitions revoked: %s", _names(revoked))
        # Under the cooperative protocol only the moving partitions are revoked.
        self._show(self.owner.consumer.assignment() - set(revoked))

    def on_partitions_lost(self, lost: Any) -> None:
        # Evicted (session expired, or closing out of generation): these offsets can no
        # longer be committed by us, and kafka-python may call this on its IO thread,
        # where a blocking commit is not allowed. The new owner gets the records again.
        for tp in lost:
            self.owner.processed.pop(tp, None)
        logger.warning("partitions lost: %s", _names(lost))
        self._show(self.owner.consumer.assignment() - set(lost))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.owner.joined = True
        logger.info("partitions assigned: %s", _names(assigned) or "none")
        self._show(self.owner.consumer.assignment() | set(assigned))

    def _show(self, current: set[TopicPartition]) -> None:
        self.owner.health.assigned(_names(current))


def _names(partitions: Any) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)


class BatchRequestConsumer:
    """One consumer in the group: `poll_once()` is one step of the loop, callable from tests.

    Start-up (orchestrator.kafka.startup) runs before anything is consumed; the health
    snapshot says `ready` only once it passed and the group assigned partitions.
    """

    def __init__(
        self,
        *,
        topic: str | None = None,
        dlq_topic: str | None = None,
        group_id: str | None = None,
        poll_timeout_ms: int = 500,
        max_records: int = 100,
        session_timeout_ms: int = 10_000,
        should_stop: Callable[[], bool] = lambda: False,
        health: ConsumerHealth | None = None,
    ) -> None:
        self.topic = topic or settings.BOS_TOPIC_REQUESTS
        self.dlq_topic = dlq_topic or settings.BOS_TOPIC_DLQ
        self.group_id = group_id or settings.BOS_CONSUMER_GROUP
        self.poll_timeout_ms = poll_timeout_ms
        self.max_records = max_records
        self.should_stop = should_stop
        self.backoff = 0.0
        self.health = health or ConsumerHealth(group=self.group_id, topic=self.topic)
        self.joined = False
        # Offsets handled but not yet committed (a commit failed, or a rebalance came first).
        self.processed: dict[TopicPartition, OffsetAndMetadata] = {}
        try:
            prepare_topics(
                consumer_topics(self.topic, self.dlq_topic),
                should_stop=should_stop,
                on_step=self.health.step,
            )
            with startup_step("schemas", self.health.step):
                contracts()  # a missing or broken schemas/ folder stops start-up, not a message
            with startup_step("join", self.health.step):
                self.consumer = self._connect(session_timeout_ms)
                self.consumer.subscribe([self.topic], listener=_CommitOnRevoke(self))
                self.producer = make_producer()
        except Exception as exc:
            self.health.failed(str(exc))
            raise
        logger.info(
            "kafka.startup step=subscribe status=ok topic=%s group=%s dlq=%s assignment=%s",
            self.topic,
            self.group_id,
            self.dlq_topic,
            settings.BOS_KAFKA_ASSIGNMENT,
        )

    def _connect(self, session_timeout_ms: int) -> KafkaConsumer:
        return with_backoff(
            lambda: KafkaConsumer(
                bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                group_id=self.group_id,
                client_id=f"bos-consumer-{self.group_id}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                allow_auto_create_topics=False,
                partition_assignment_strategy=(ASSIGNORS[settings.BOS_KAFKA_ASSIGNMENT],),
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                max_poll_records=self.max_records,
                # How long the broker may hold an empty fetch; short, so a request
                # arriving on an idle topic is picked up at once.
                fetch_max_wait_ms=settings.BOS_KAFKA_FETCH_MAX_WAIT_MS,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=max(session_timeout_ms // 3, 100),
                fetch_max_bytes=max(settings.BOS_MAX_MESSAGE_BYTES * 2, 52_428_800),
                max_partition_fetch_bytes=settings.BOS_MAX_MESSAGE_BYTES + 1024 * 1024,
            ),
            what="kafka.startup step=join",
            should_stop=self.should_stop,
            cap=settings.BOS_KAFKA_BACKOFF_CAP_SECONDS,
        )

    def poll_once(self) -> PollStats:
        """Poll once, handle every record in order, commit what is done."""
        stats = PollStats()
        if self.backoff:
            time.sleep(self.backoff)
        batches = self.consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
        self.health.polled()
        if self.joined and not self.health.state["ready"]:
            self.health.ready()
            logger.info(
                "kafka.startup step=ready status=ok partitions=%s",
                ",".join(_names(self.consumer.assignment())),
            )
        if not batches:
            return stats
        close_old_connections()
        for tp, records in batches.items():
            if self._consume(tp, records, stats):
                self.backoff = 0.0
            if self.should_stop():
                break
        self.commit_processed(reason="polled")
        return stats

    def _consume(self, tp: TopicPartition, records: list[ConsumerRecord], stats: PollStats) -> bool:
        """Handle a partition's records in order; False when a transient failure rewound it.

        Consecutive batch requests are stored together (orchestrator.services.intake: a
        fixed number of statements for the lot); a command first stores the requests
        before it, so it sees them. The commit point moves only past stored records.
        """
        pending: list[tuple[ConsumerRecord, Intake]] = []
        stored = handled = 0  # records[:stored] took effect (or were dead-lettered)
        rewound = False
        try:
            for record in records:
                envelope = self._parse(record)
                if envelope is None:
                    stats.dead_lettered += 1
                elif envelope.event_type == "batch.requested":
                    try:
                        pending.append((record, _intake_of(envelope)))
                    except MessageRejected as exc:
                        self._dead_letter(record, exc.code, exc.message)
                        stats.dead_lettered += 1
                else:
                    stats.dead_lettered += self._store(pending)
                    stats.dead_lettered += self._command(record, envelope)
                handled += 1
                stats.processed += 1
                if not pending:
                    stored = handled
                if self.should_stop():
                    break
            stats.dead_lettered += self._store(pending)
            stored = handled
        except TRANSIENT as exc:
            first = records[stored]
            logger.warning(
                "transient failure at %s[%d]@%d, will retry from there: %s",
                tp.topic,
                tp.partition,
                first.offset,
                exc,
            )
            close_old_connections()
            self.consumer.seek(tp, first.offset)
            self.backoff = next_backoff(self.backoff, cap=30.0)
            stats.retried += 1
            rewound = True
        if stored:
            self.processed[tp] = OffsetAndMetadata(records[stored - 1].offset + 1, "", -1)
        return not rewound

    def _parse(self, record: ConsumerRecord) -> Envelope | None:
        """The record's envelope, or None once it was dead-lettered."""
        try:
            return parse_envelope(record.value, max_bytes=settings.BOS_MAX_MESSAGE_BYTES)
        except MessageRejected as exc:
            self._dead_letter(record, exc.code, exc.message)
            return None

    def _store(self, pending: list[tuple[ConsumerRecord, Intake]]) -> int:
        """Store the pending requests in one transaction; dead-letter the ones refused."""
        if not pending:
            return 0
        results = batch_create_many([intake for _, intake in pending])
        refused = 0
        for (record, _), result in zip(pending, results, strict=True):
            if isinstance(result, OrchestrationError):
                # Unknown pipeline or version, too many items, ...: it will never succeed.
                self._dead_letter(record, result.code, result.message)
                refused += 1
                continue
            logger.info(
                "%s[%d]@%d batch.requested: batch %s %s",
                record.topic,
                record.partition,
                record.offset,
                result.batch.id,
                "created" if result.created else "already exists",
            )
        pending.clear()
        return refused

    def _command(self, record: ConsumerRecord, envelope: Envelope) -> int:
        """Apply a cancel or retry command; 1 when it was dead-lettered."""
        try:
            message = COMMANDS[envelope.event_type](envelope)
        except (MessageRejected, OrchestrationError) as exc:
            self._dead_letter(record, exc.code, exc.message)
            return 1
        logger.info(
            "%s[%d]@%d %s: %s", record.topic, record.partition, record.offset, envelope.event_type, message
        )
        return 0

    def commit_processed(self, partitions: set[TopicPartition] | None = None, *, reason: str) -> None:
        """Commit the offsets handled so far (on `partitions` only, when given).

        A failed commit is not fatal: the offsets stay pending and are committed with the
        next poll or on revoke; if the partition moved on meanwhile, its new owner gets
        the records again and the idempotent handlers make the second delivery harmless.
        """
        offsets = {tp: o for tp, o in self.processed.items() if partitions is None or tp in partitions}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets)
        except (CommitFailedError, KafkaError, RuntimeError) as exc:
            # RuntimeError: kafka-python refuses a blocking commit from its IO thread.
            logger.warning("commit of %s (%s) failed: %s", _names(offsets), reason, exc)
            if partitions is not None or reason == "closing":  # no longer ours to commit
                for tp in offsets:
                    self.processed.pop(tp, None)
            return
        for tp, offset in offsets.items():
            if self.processed.get(tp) is offset:
                del self.processed[tp]

    def _dead_letter(self, record: ConsumerRecord, code: str, message: str) -> None:
        headers = [
            ("bos-error-class", code.encode()),
            ("bos-error", message[:1000].encode()),
            ("bos-source-topic", record.topic.encode()),
            ("bos-source-partition", str(record.partition).encode()),
            ("bos-source-offset", str(record.offset).encode()),
        ]
        # Wait for the broker's ack: the record is committed only once its DLQ copy exists.
        self.producer.send(self.dlq_topic, key=record.key, value=record.value, headers=headers).get(
            timeout=30
        )
        logger.warning(
            "dead-lettered %s[%d]@%d to %s: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            self.dlq_topic,
            code,
            message,
        )

    def close(self) -> None:
        try:
            self.commit_processed(reason="closing")
            self.consumer.close(autocommit=False)
        except KafkaError as exc:  # leaving the group failed: the broker times the member out
            logger.warning("closing the Kafka consumer failed: %s", exc)
        finally:
            self.producer.close(timeout=10)
            self.health.stopped()
