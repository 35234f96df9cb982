"""The Kafka consumer of batch requests (CONTRACT §2): a loop that no record can stop.

The loop is validate → store → commit. A record is committed only after what it caused
is durably stored, or after it was dead-lettered with its reason. Every failure of one
record is classified (`is_transient`):

- it can never succeed: not UTF-8 JSON, NaN or a U+0000 that PostgreSQL would refuse,
  nesting too deep (orchestrator.input_safety), the wrong schema, an unknown pipeline, a
  pinned version this process cannot run, too many items, too large; or it failed in a
  way nothing classified (a data exception of the database, a bug), which must not stop
  intake either (`unprocessable`) → the DLQ, with the `bos-*` headers and the reason. A
  dead letter larger than the DLQ producer's `max_request_size` goes there truncated,
  with its original size in the headers (`fit_dead_letter`);
- transient: the database unreachable, the DLQ write failing or timing out, the broker
  away → the partition is rewound to that record and the consumer backs off (0.5 s,
  doubling up to `BOS_KAFKA_BACKOFF_CAP_SECONDS`), then reads it again.

The Celery broker refusing the start of a batch after it was committed does neither: the
batch is stored, and the reconciler sends the start of a batch left `accepted` (see
orchestrator.services.intake). The process stops only on SIGTERM or a configuration
error at start-up. Values are deserialized inside the handler, so a bad record can't
wedge the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, transaction
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
from kafka.structs import OffsetAndMetadata
from kombu.exceptions import OperationalError as BrokerUnavailable

from orchestrator import audit
from orchestrator.contracts import contracts
from orchestrator.errors import Conflict, OrchestrationError
from orchestrator.kafka.clients import BOOTSTRAP_TIMEOUT_MS, make_dlq_producer, next_backoff, with_backoff
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
from orchestrator.masking import mask_error
from orchestrator.models import Batch, ProcessedEvent, Tenant
from orchestrator.observability import context as log_context
from orchestrator.observability.spans import RecordSpans
from orchestrator.services.batches import BatchRequest, batch_cancel, batch_retry
from orchestrator.services.intake import Intake, batch_create_many

logger = logging.getLogger(__name__)
T = TypeVar("T")
# The DLQ class of a record that failed in a way nothing classified.
UNPROCESSABLE = "unprocessable"
DLQ_SEND_TIMEOUT_SECONDS = 30
# Room for the record batch's and the record's own framing (kafka-python's estimate is
# 61 bytes plus a few varints).
DLQ_RECORD_OVERHEAD = 512
# A dead-letter key longer than this is cut (it only chooses the DLQ partition).
MAX_DEAD_LETTER_KEY = 1024
# What a dead letter is cut to when the broker refuses even the truncated record.
MIN_DEAD_LETTER_BYTES = 16 * 1024
# SQLSTATE classes that the data of a request causes: 22 data exception (e.g. a value out
# of range), 23 integrity violation, 54 program limit exceeded. Any other error from the
# database (connection, resources, shutdown, a missing table or privilege) is about the
# database, not the record, and may pass.
DATA_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


class DeadLetterFailed(Exception):
    """The DLQ could not be written: the record stays uncommitted and is tried again."""


def is_transient(exc: BaseException) -> bool:
    """True when the same record may succeed later: a dependency failed, not the data."""
    if isinstance(
        exc, DeadLetterFailed | BrokerUnavailable | KafkaTimeoutError | ConnectionError | TimeoutError
    ):
        return True
    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    if isinstance(exc, InterfaceError | psycopg.InterfaceError):
        return True
    if isinstance(exc, DatabaseError | psycopg.Error):
        state = next((s for e in (exc, exc.__cause__) if (s := getattr(e, "sqlstate", None))), None)
        if state is None:  # no answer from the server: the connection failed, or a client-side refusal
            return isinstance(exc, OperationalError | psycopg.OperationalError)
        return str(state)[:2] not in DATA_SQLSTATE_CLASSES
    return False


def _header(text: str, max_chars: int | None = None) -> bytes:
    """UTF-8, with what UTF-8 cannot hold (a lone surrogate) escaped, then cut to size."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe[:max_chars].encode("utf-8")


def dlq_headers(record: ConsumerRecord, code: str, message: str) -> list[tuple[str, bytes]]:
    """The five `bos-*` headers of CONTRACT §2 (schemas/headers/dlq.schema.json)."""
    return [
        ("bos-error-class", _header(code)),
        ("bos-error", _header(mask_error(message), 1000)),
        ("bos-source-topic", _header(record.topic)),
        ("bos-source-partition", str(record.partition).encode()),
        ("bos-source-offset", str(record.offset).encode()),
    ]


def fit_dead_letter(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], *, limit: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The key, value and headers of a dead letter, cut to fit a record of `limit` bytes.

    A record that fits is unchanged. Otherwise the value keeps its first bytes (so an
    operator still sees what it was) and the headers say so: `bos-truncated: true` and
    `bos-original-size` (the value's size in bytes; `bos-source-offset` finds the whole
    record on the source topic while it is retained). A key longer than
    `MAX_DEAD_LETTER_KEY` is cut too, and `bos-original-key-size` gives its size.
    """

    def size(k: bytes | None, v: bytes | None, h: list[tuple[str, bytes]]) -> int:
        return len(k or b"") + len(v or b"") + sum(len(n) + len(x) for n, x in h) + DLQ_RECORD_OVERHEAD

    if size(key, value, headers) <= limit:
        return key, value, headers
    extra = [("bos-truncated", b"true"), ("bos-original-size", str(len(value or b"")).encode())]
    if key is not None and len(key) > MAX_DEAD_LETTER_KEY:
        extra.append(("bos-original-key-size", str(len(key)).encode()))
        key = key[:MAX_DEAD_LETTER_KEY]
    headers = headers + extra
    room = max(limit - size(key, b"", headers), 0)
    return key, (value or b"")[:room], headers


@dataclass
class PollStats:
    processed: int = 0
    dead_lettered: int = 0
    retried: int = 0


@contextmanager
def _stored_then_sent(what: str) -> Iterator[None]:
    """An outermost transaction whose after-commit sends may fail without failing it.

    What the body wrote is committed; if a callback then fails (the Celery broker is
    down), the work it would have sent is left to the reconciler, and the caller goes on
    as if it was sent: reading the record again would find it done and send nothing.
    """
    committed: list[bool] = []
    try:
        with transaction.atomic():
            transaction.on_commit(lambda: committed.append(True))  # runs first: callbacks keep their order
            yield
    except Exception as exc:
        if not committed:
            raise
        logger.warning(
            "%s was stored, but sending its work after commit failed (%s: %s); the reconciler sends it",
            what,
            type(exc).__name__,
            exc,
        )


def _intake_of(envelope: Envelope, traceparent: str = "") -> Intake:
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
        traceparent=traceparent,
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
    with _stored_then_sent(f"{envelope.event_type} {envelope.event_id}"):
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


def _audit_rejection(record: ConsumerRecord, code: str, message: str) -> None:
    """A refused Kafka command in the audit log (`kafka.rejected`), by its record's place.

    The DLQ holds the record itself; an audit log that cannot be written now (the
    database is down) costs a log line, never the record."""
    try:
        audit.record(
            "kafka.rejected",
            outcome=audit.Outcome.ERROR,
            object_type="kafka_record",
            object_id=f"{record.topic}:{record.partition}:{record.offset}",
            detail={"code": code, "message": message[:500]},
            who=audit.Who(actor=audit.who.kafka(f"{record.topic}:{record.partition}:{record.offset}")),
        )
    except DatabaseError:
        logger.warning("the audit record of a dead-lettered record could not be written", exc_info=True)


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
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.topic = topic or settings.BOS_TOPIC_REQUESTS
        self.dlq_topic = dlq_topic or settings.BOS_TOPIC_DLQ
        self.group_id = group_id or settings.BOS_CONSUMER_GROUP
        self.poll_timeout_ms = poll_timeout_ms
        self.max_records = max_records
        self.should_stop = should_stop
        self.backoff = 0.0
        self.sleep = sleep  # how backoffs are waited out (a test drives its own clock)
        self.health = health or ConsumerHealth(group=self.group_id, topic=self.topic)
        self.joined = False
        # Offsets handled but not yet committed (a commit failed, or a rebalance came first).
        self.processed: dict[TopicPartition, OffsetAndMetadata] = {}
        # The span of each record being handled (none with tracing off).
        self.spans = RecordSpans()
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
                self.producer = make_dlq_producer()
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
        """Poll once, handle every record in order, commit what is done. Never raises.

        A failure of the poll itself (the broker away) is logged and backed off; a
        failure while handling a partition's records rewinds that partition (`_consume`).
        """
        stats = PollStats()
        self._pause()
        try:
            batches = self.consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any broker trouble
            self.backoff = next_backoff(self.backoff, cap=settings.BOS_KAFKA_BACKOFF_CAP_SECONDS)
            logger.warning("poll failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, self.backoff)
            return stats
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
        polled = list(batches.items())
        for n, (tp, records) in enumerate(polled):
            if self.should_stop():  # leave the rest unread: position back to their first record
                for later, unread in polled[n:]:
                    self.consumer.seek(later, unread[0].offset)
                break
            self._consume(tp, records, stats)
        if stats.retried:
            self.backoff = next_backoff(self.backoff, cap=settings.BOS_KAFKA_BACKOFF_CAP_SECONDS)
            logger.warning("backing off %.1fs after a transient failure", self.backoff)
        else:
            self.backoff = 0.0
        self.commit_processed(reason="polled")
        return stats

    def _pause(self) -> None:
        """Wait out the backoff of a transient failure (SIGTERM cuts it short)."""
        left = self.backoff
        while left > 0 and not self.should_stop():
            step = min(left, 0.25)
            self.sleep(step)
            left -= step

    def _consume(self, tp: TopicPartition, records: list[ConsumerRecord], stats: PollStats) -> None:
        """Handle a partition's records in order (`stats.retried` counts a rewind).

        Consecutive batch requests are stored together (orchestrator.services.intake: a
        fixed number of statements for the lot); a command first stores the requests
        before it, so it sees them. The commit point moves only past a prefix of records
        that all took effect or were dead-lettered; on a transient failure (or anything
        unclassified that escaped a record's handling) the partition is rewound to the
        first record that did not, and the consumer backs off.
        """
        final: dict[int, bool] = {}  # offset -> dead-lettered, for records handled for good
        pending: list[tuple[ConsumerRecord, Intake]] = []
        try:
            for record in records:
                self._take(record, pending, final)
                if self.should_stop():
                    break
            self._store(pending, final)
        except Exception as exc:  # noqa: BLE001 - classified: transient, or rewound to be safe
            close_old_connections()
            for record in records:
                if record.offset not in final:
                    self.spans.rewound(record, f"{type(exc).__name__}: {exc}")
            transient = is_transient(exc)
            (logger.warning if transient else logger.exception)(
                "%s[%d]: %s failure (%s: %s); will read it again from the first record not done",
                tp.topic,
                tp.partition,
                "transient" if transient else "unexpected",
                type(exc).__name__,
                exc,
            )
            stats.retried += 1
        done = 0
        for record in records:
            if record.offset not in final:
                break
            done += 1
            stats.processed += 1
            stats.dead_lettered += final[record.offset]
        if done:
            self.processed[tp] = OffsetAndMetadata(records[done - 1].offset + 1, "", -1)
        if done < len(records):  # rewound, or stopping: read the rest again
            self.consumer.seek(tp, records[done].offset)
        self.spans.end()

    def _take(
        self, record: ConsumerRecord, pending: list[tuple[ConsumerRecord, Intake]], final: dict[int, bool]
    ) -> None:
        """Handle one record: dead-letter it, apply its command, or queue its request."""
        with self.spans.handling(record) as traceparent:
            self._take_in_span(record, pending, final, traceparent)

    def _take_in_span(
        self,
        record: ConsumerRecord,
        pending: list[tuple[ConsumerRecord, Intake]],
        final: dict[int, bool],
        traceparent: str,
    ) -> None:
        envelope = self._guarded(record, final, lambda: self._parse(record))
        if envelope is None:
            return
        self.spans.described(
            record, **{"messaging.message.id": envelope.event_id, "bos.event_type": envelope.event_type}
        )
        if envelope.event_type == "batch.requested":
            with log_context.bound(
                correlation_id=envelope.correlation_id or envelope.event_id, tenant=envelope.tenant
            ):
                intake = self._guarded(record, final, lambda: _intake_of(envelope, traceparent))
            if intake is not None:
                pending.append((record, intake))
            return
        self._store(pending, final)
        with log_context.bound(
            correlation_id=envelope.correlation_id or envelope.event_id, tenant=envelope.tenant
        ):
            message = self._guarded(record, final, lambda: COMMANDS[envelope.event_type](envelope))
            if message is not None:
                final[record.offset] = False
                logger.info(
                    "%s[%d]@%d %s: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    envelope.event_type,
                    message,
                )

    def _guarded(self, record: ConsumerRecord, final: dict[int, bool], step: Callable[[], T]) -> T | None:
        """`step()`, or None once the record was dead-lettered; transient failures propagate."""
        try:
            return step()
        except (MessageRejected, OrchestrationError) as exc:
            self._dead_letter(record, exc.code, exc.message)
        except Exception as exc:
            if is_transient(exc):
                raise
            self._unprocessable(record, exc)
        final[record.offset] = True
        return None

    def _parse(self, record: ConsumerRecord) -> Envelope:
        return parse_envelope(record.value, max_bytes=settings.BOS_MAX_MESSAGE_BYTES)

    def _store(self, pending: list[tuple[ConsumerRecord, Intake]], final: dict[int, bool]) -> None:
        """Store the pending requests in one transaction; dead-letter the ones refused.

        When the lot fails for a reason that is not transient, one of them is to blame
        (a value the checks let through, a bug): each is then stored alone, so only that
        one is dead-lettered.
        """
        lot = list(pending)
        pending.clear()
        if not lot:
            return
        try:
            with self.spans.storing([record for record, _ in lot]):
                results = batch_create_many([intake for _, intake in lot])
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(lot) == 1:
                self._unprocessable(lot[0][0], exc)
                final[lot[0][0].offset] = True
                return
            logger.warning("storing %d requests together failed (%s); storing them one by one", len(lot), exc)
            for one in lot:
                self._store([one], final)
            return
        for (record, intake), result in zip(lot, results, strict=True):
            if isinstance(result, OrchestrationError):
                # Unknown pipeline or version, too many items, ...: it will never succeed.
                self._dead_letter(record, result.code, result.message)
                final[record.offset] = True
                continue
            final[record.offset] = False
            self.spans.described(
                record, **{"bos.batch.id": str(result.batch.id), "bos.created": result.created}
            )
            with log_context.bound(
                correlation_id=result.batch.correlation_id or intake.request.correlation_id,
                tenant=intake.request.tenant,
                batch_id=result.batch.id,
            ):
                logger.info(
                    "%s[%d]@%d batch.requested: batch %s %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    result.batch.id,
                    "created" if result.created else "already exists",
                )

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

    def _unprocessable(self, record: ConsumerRecord, exc: Exception) -> None:
        """Dead-letter a record that failed in a way nothing classified (not transient)."""
        logger.error(
            "%s[%d]@%d failed and is dead-lettered as unprocessable",
            record.topic,
            record.partition,
            record.offset,
            exc_info=exc,
        )
        first_line = (str(exc).splitlines() or [""])[0]
        self._dead_letter(record, UNPROCESSABLE, f"handling it failed: {type(exc).__name__}: {first_line}")

    def _dead_letter(self, record: ConsumerRecord, code: str, message: str) -> None:
        """Write the record to the DLQ and wait for the broker's ack.

        The record is committed only once its DLQ copy exists, so a DLQ that cannot be
        written is a transient failure (`DeadLetterFailed`): the record is tried again.
        """
        message = mask_error(message)  # the reason may quote the record (a validation error)
        self.spans.dead_lettered(record, code, message)
        base = dlq_headers(record, code, message)
        key, value, headers = fit_dead_letter(
            record.key, record.value, base, limit=settings.BOS_KAFKA_DLQ_MAX_BYTES
        )
        try:
            try:
                self._send_dead_letter(key, value, headers)
            except MessageSizeTooLargeError:
                # The broker's limit is below ours (the DLQ topic's max.message.bytes):
                # the headers and the value's first bytes still say what it was.
                key, value, headers = fit_dead_letter(
                    record.key, record.value, base, limit=MIN_DEAD_LETTER_BYTES
                )
                self._send_dead_letter(key, value, headers)
        except KafkaError as exc:
            raise DeadLetterFailed(
                f"writing to {self.dlq_topic} failed: {type(exc).__name__}: {exc}"
            ) from exc
        _audit_rejection(record, code, message)
        logger.warning(
            "dead-lettered %s[%d]@%d to %s: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            self.dlq_topic,
            code,
            message,
        )

    def _send_dead_letter(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        future = self.producer.send(self.dlq_topic, key=key, value=value, headers=headers)
        future.get(timeout=DLQ_SEND_TIMEOUT_SECONDS)

    def close(self) -> None:
        try:
            self.commit_processed(reason="closing")
            self.consumer.close(autocommit=False)
        except KafkaError as exc:  # leaving the group failed: the broker times the member out
            logger.warning("closing the Kafka consumer failed: %s", exc)
        finally:
            self.producer.close(timeout=10)
            self.health.stopped()
