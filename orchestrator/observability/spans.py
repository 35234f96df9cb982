"""BOS's own spans, beside those of OpenTelemetry's instrumentations (tracing.py).

- `RecordSpans`: one CONSUMER span per inbound Kafka record (`<topic> process`), the child
  of the record's `traceparent` header or the root of a new trace, and one span storing a
  poll's requests together (`store batch requests`).
- `chunk`: the span of a chunk of a per-item phase (`chunk <phase>`), inside its task's.
- `phase_ended`: a phase's span (`phase <name>`). A phase spans several tasks, processes
  and retries, so no one task can hold its span open: it is recorded when the phase ends,
  with the phase's own start and end times (`started_at`, `finished_at`), as a child of
  the batch's stored trace context, linked to the span that ended it.
- `publish`: the PRODUCER span of an outbound event, the child of the span that stored it.

Every function returns at once when tracing is off.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from orchestrator.observability import tracing

if TYPE_CHECKING:
    from kafka.consumer.fetcher import ConsumerRecord

    from orchestrator.models import Batch, PhaseRun


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


def _header(record: ConsumerRecord, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _current_link() -> list[Link]:
    current = trace.get_current_span().get_span_context()
    return [Link(current)] if current.is_valid else []


class RecordSpans:
    """The spans of the records one consumer poll handles, ended once their fate is known."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, int, int], trace.Span] = {}

    @staticmethod
    def _key(record: ConsumerRecord) -> tuple[str, int, int]:
        return (record.topic, record.partition, record.offset)

    @contextmanager
    def handling(self, record: ConsumerRecord) -> Iterator[str]:
        """The block handles `record` in its span; yields the traceparent its batch stores.

        With tracing off: the record's own valid `traceparent`, passed through unchanged.
        """
        inbound = tracing.accepted_traceparent(_header(record, tracing.HEADER))
        if not tracing.enabled():
            yield inbound
            return
        span = tracing.tracer().start_span(
            f"{record.topic} process",
            context=tracing.context_of(inbound),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.message.body.size": len(record.value or b""),
            },
        )
        self.open[self._key(record)] = span
        with trace.use_span(span, end_on_exit=False):
            yield tracing.traceparent_of(span.get_span_context())

    def described(self, record: ConsumerRecord, **values: Any) -> None:
        span = self.open.get(self._key(record))
        if span is not None:
            span.set_attributes(tracing.attributes(values))

    def dead_lettered(self, record: ConsumerRecord, code: str, message: str) -> None:
        span = self.open.get(self._key(record))
        if span is not None:
            span.set_attribute("bos.dlq.error_class", code)
            span.set_status(Status(StatusCode.ERROR, f"{code}: {message}"[:500]))

    def rewound(self, record: ConsumerRecord, reason: str) -> None:
        """A transient failure: the record is read again (in a span of its own)."""
        span = self.open.get(self._key(record))
        if span is not None:
            span.set_attribute("bos.rewound", True)
            span.set_status(Status(StatusCode.ERROR, reason[:500]))

    @contextmanager
    def storing(self, records: Sequence[ConsumerRecord]) -> Iterator[None]:
        """The block stores the requests of `records` together: a child of the first's span,
        linked to the others' (each batch keeps its own trace)."""
        spans = [s for r in records if (s := self.open.get(self._key(r))) is not None]
        if not spans:
            yield
            return
        parent = trace.set_span_in_context(spans[0])
        links = [Link(s.get_span_context()) for s in spans[1:]]
        with tracing.tracer().start_as_current_span(
            "store batch requests", context=parent, links=links, attributes={"bos.requests": len(records)}
        ):
            yield

    def end(self) -> None:
        for span in self.open.values():
            span.end()
        self.open.clear()


@contextmanager
def chunk(batch: Batch, phase: str, start: int, end: int, attempt: int) -> Iterator[trace.Span | None]:
    """The span of a chunk of items [start, end) of a per-item phase (None with tracing off)."""
    if not tracing.enabled():
        yield None
        return
    with tracing.tracer().start_as_current_span(
        f"chunk {phase}",
        attributes={
            "bos.batch.id": str(batch.id),
            "bos.tenant": batch.tenant.slug,
            "bos.phase": phase,
            "bos.chunk.start": start,
            "bos.chunk.end": end,
            "bos.chunk.items": end - start,
            "bos.attempt": attempt,
        },
    ) as span:
        yield span


COUNTS = ("succeeded", "failed", "skipped")


def chunk_outcome(span: trace.Span | None, summary: dict[str, int]) -> None:
    """What the chunk task did: `recorded`, or why not (`stale`, `lost`, `duplicate`,
    `deferred`, a lease `held` elsewhere ...), with its item counts."""
    if span is None:
        return
    other = [key for key in summary if key not in COUNTS]
    span.set_attribute("bos.chunk.outcome", other[0] if other else "recorded")
    for key in COUNTS:
        span.set_attribute(f"bos.chunk.{key}", summary.get(key, 0))


def phase_ended(batch: Batch, phase: PhaseRun) -> None:
    """Record the span of a phase that has just ended (its row says how), once the
    transaction that records it commits: a rolled-back end leaves no span."""
    if not tracing.enabled():
        return
    end = phase.finished_at or timezone.now()
    start = phase.started_at or end
    values = {
        "bos.batch.id": str(batch.id),
        "bos.tenant": batch.tenant.slug,
        "bos.pipeline": batch.pipeline_version.pipeline.name,
        "bos.pipeline_version": batch.pipeline_version.version,
        "bos.phase": phase.name,
        "bos.phase.mode": phase.mode,
        "bos.phase.items": phase.items_total if phase.mode == "per_item" else batch.items_total,
        "bos.phase.items_failed": phase.items_failed,
        "bos.phase.attempt": phase.attempts,
        "bos.phase.outcome": str(phase.state),
        "bos.phase.skip_reason": phase.skip_reason,
    }
    error = phase.error[:500] if str(phase.state) == "failed" else ""
    transaction.on_commit(
        partial(
            _record_phase,
            f"phase {phase.name}",
            tracing.attributes(values),
            (start, max(start, end)),
            batch.traceparent,
            _current_link(),
            error,
        )
    )


def _record_phase(
    name: str,
    values: dict[str, Any],
    times: tuple[datetime, datetime],
    parent: str,
    links: list[Link],
    error: str,
) -> None:
    span = tracing.tracer().start_span(
        name, context=tracing.context_of(parent), attributes=values, links=links, start_time=_ns(times[0])
    )
    if error:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=_ns(times[1]))


def publish(
    *, topic: str, key: str, event_type: str, envelope: dict[str, Any], traceparent: str
) -> trace.Span | None:
    """The PRODUCER span of sending one stored event, the child of the span that stored it
    (None with tracing off). The caller ends it once the broker answered."""
    if not tracing.enabled():
        return None
    data = envelope.get("data") or {}
    return tracing.tracer().start_span(
        f"publish {topic}",
        context=tracing.context_of(traceparent),
        kind=SpanKind.PRODUCER,
        attributes=tracing.attributes(
            {
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
                "messaging.destination.name": topic,
                "messaging.kafka.message.key": key,
                "messaging.message.id": envelope.get("event_id"),
                "bos.event_type": event_type,
                "bos.batch.id": data.get("batch_id") if isinstance(data, dict) else None,
                "bos.tenant": envelope.get("tenant"),
                "bos.sequence": envelope.get("sequence"),
            }
        ),
    )


def published(span: trace.Span | None, *, partition: int | None = None, offset: int | None = None) -> None:
    if span is None:
        return
    if partition is not None:
        span.set_attribute("messaging.destination.partition.id", str(partition))
    if offset is not None:
        span.set_attribute("messaging.kafka.offset", offset)
    span.end()


def publish_failed(span: trace.Span | None, reason: str) -> None:
    if span is None:
        return
    span.set_status(Status(StatusCode.ERROR, reason[:500]))
    span.end()
