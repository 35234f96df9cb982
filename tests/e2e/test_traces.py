"""Traces across processes: one trace per batch request, from the Kafka consumer through
the Celery worker's chunks and PostgreSQL queries to the published events, exported over
OTLP/HTTP to a receiver in the test; and no tracing at all without an endpoint."""

from __future__ import annotations

import json
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from orchestrator.contracts import validate_headers
from orchestrator.kafka.clients import ensure_topics, make_producer
from orchestrator.kafka.consumer import BatchRequestConsumer
from orchestrator.kafka.publisher import OutboxPublisher
from orchestrator.models import Batch, OutboxEvent
from orchestrator.observability import tracing
from tests.conftest import LOG_DIR
from tests.e2e.test_structured_logs import start
from tests.support.factories import MembershipFactory, essay_items, request_message
from tests.support.kafka import headers_of, read_topic
from tests.support.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.processes import stop
from tests.support.waiting import wait_for, wait_for_terminal, worker_answers

CONSUMER, PRODUCER = 5, 4  # opentelemetry.proto.trace.v1.Span.SpanKind


def send_with_headers(topic: str, message: dict[str, Any], headers: list[tuple[str, bytes]]) -> None:
    producer = make_producer()
    try:
        key = f"{message['tenant']}:{message['data']['external_id']}".encode()
        producer.send(topic, key=key, value=json.dumps(message).encode(), headers=headers).get(timeout=30)
    finally:
        producer.close()


def finished_batch(external_id: str) -> Batch:
    batch = wait_for(
        lambda: Batch.objects.filter(external_id=external_id).first(), timeout=60, what="the batch"
    )
    batch = wait_for_terminal(batch.id, timeout=120)
    wait_for(
        lambda: not OutboxEvent.objects.filter(key=str(batch.id), published_at__isnull=True).exists(),
        timeout=60,
        what="the batch's events published",
    )
    return batch


def write_tree(spans: list[ReceivedSpan], path: Path) -> None:
    """The trace as an indented tree, for a person reading a failure."""
    children: dict[str, list[ReceivedSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_ns):
        children.setdefault(span.parent_id, []).append(span)
    ids = {s.span_id for s in spans}
    lines: list[str] = []

    def walk(span: ReceivedSpan, depth: int) -> None:
        lines.append(f"{'  ' * depth}{span.name}  [{span.service}]")
        for child in children.get(span.span_id, []):
            walk(child, depth + 1)

    for root in [s for s in spans if s.parent_id not in ids]:
        walk(root, 0)
    path.write_text("\n".join(lines) + "\n")


def whole_trace(receiver: OtlpReceiver, batch: Batch) -> list[ReceivedSpan]:
    """The spans of the batch's trace once the last of them have arrived: the publish span of
    its final event and a span per phase (each process exports every few seconds)."""
    trace_id = tracing.trace_id_of(batch.traceparent)
    phases = batch.phases.count()

    def complete() -> list[ReceivedSpan] | None:
        spans = receiver.trace(trace_id)
        done = any(s.attributes.get("bos.event_type") == f"batch.{batch.state}" for s in spans)
        if done and sum(s.name.startswith("phase ") for s in spans) >= phases:
            return spans
        return None

    return wait_for(complete, timeout=60, interval=0.5, what=f"the spans of trace {trace_id}")


@pytest.mark.e2e
@pytest.mark.usefixtures("essay_pipeline", "kafka_topics")
def test_one_trace_spans_consumer_worker_database_and_published_events() -> None:
    run = uuid.uuid4().hex[:6]
    group = f"traces-{run}"
    topic = f"{settings.BOS_TOPIC_REQUESTS}.{group}"
    events_topic = f"{settings.BOS_TOPIC_EVENTS}.{group}"
    ensure_topics([topic])
    ensure_topics([events_topic], partitions=1)  # read back whole from partition 0
    logs = LOG_DIR / f"traces-{run}"
    logs.mkdir(parents=True, exist_ok=True)
    node = f"traces-{run}@{socket.gethostname()}"
    inbound_trace, inbound_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traced = request_message(items=essay_items(settings.BOS_INLINE_MAX_ITEMS + 2))
    untraced = request_message(items=essay_items(2))

    with otlp_receiver() as receiver:
        # Queues, topics and group of their own: only these processes see these batches.
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "BOS_QUEUE_PREFIX": f"traces-{run}.",
            "BOS_TOPIC_EVENTS": events_topic,
        }
        celery = ["-m", "celery", "-A", "bos_project", "--quiet", "worker", "-c", "2", "-n", node]
        worker = start([*celery, "--without-gossip", "--without-mingle"], logs, "worker", **env)
        consume = ["manage.py", "consume_batches", "--topic", topic, "--group", group]
        consumer = start([*consume, "--session-timeout-ms", "6000"], logs, "consumer", **env)
        publisher = start(["manage.py", "publish_outbox"], logs, "publisher", **env)
        try:
            wait_for(lambda: worker_answers(node), timeout=60, what="the worker")
            traceparent = f"00-{inbound_trace}-{inbound_span}-01"
            send_with_headers(topic, traced, [("traceparent", traceparent.encode())])
            send_with_headers(topic, untraced, [])
            batch = finished_batch(traced["data"]["external_id"])
            other = finished_batch(untraced["data"]["external_id"])
            whole_trace(receiver, batch)
            whole_trace(receiver, other)
        finally:
            for proc in (consumer, publisher, worker):
                proc.send_signal(signal.SIGTERM)
            for proc in (consumer, publisher, worker):
                stop(proc)  # type: ignore[arg-type]
        # Each process exported what it still held as it stopped.
        everything = receiver.received()
    spans = [s for s in everything if s.trace_id == inbound_trace]
    write_tree(spans, logs / "trace.txt")

    # The batch stored the consumer span's context: in the inbound trace.
    assert tracing.trace_id_of(batch.traceparent) == inbound_trace
    consumed = [s for s in spans if s.service == "bos-consumer" and s.kind == CONSUMER]
    assert [s.parent_id for s in consumed] == [inbound_span], consumed
    assert consumed[0].attributes["bos.batch.id"] == str(batch.id)
    chunks = [s for s in spans if s.name.startswith("chunk ")]
    assert {s.service for s in chunks} == {"bos-worker"}
    assert all(s.attributes["bos.batch.id"] == str(batch.id) for s in chunks)
    assert {"bos.chunk.start", "bos.chunk.end", "bos.chunk.items"} <= set(chunks[0].attributes)
    assert any(s.attributes.get("db.system") == "postgresql" for s in spans)
    phases = {s.attributes["bos.phase"]: s for s in spans if s.name.startswith("phase ")}
    # One span per phase, saying how it ended (a phase whose condition was false: skipped).
    outcomes = {name: s.attributes["bos.phase.outcome"] for name, s in phases.items()}
    assert outcomes == dict(batch.phases.values_list("name", "state")), outcomes
    assert {"validate", "spellcheck", "aggregate"} <= {n for n, o in outcomes.items() if o == "succeeded"}
    assert all(
        s.end_ns > s.start_ns for s in phases.values() if s.attributes["bos.phase.outcome"] != "skipped"
    )
    assert all(s.attributes["bos.pipeline"] == "essay-analysis" for s in phases.values())
    published = [s for s in spans if s.name.startswith("publish ") and s.kind == PRODUCER]
    assert {s.service for s in published} == {"bos-publisher"}
    assert {"batch.accepted", "batch.completed"} <= {s.attributes["bos.event_type"] for s in published}
    # Every span of the trace hangs from the inbound parent: none is a root of its own.
    ids = {s.span_id for s in spans} | {inbound_span}
    assert all(s.parent_id in ids for s in spans), [s.name for s in spans if s.parent_id not in ids]

    records = [r for r in read_topic(events_topic, min_records=2) if r.key == str(batch.id).encode()]
    assert records
    publish_ids = {s.span_id for s in published}
    for record in records:
        validate_headers("event", headers_of(record))  # schemas/headers/event.schema.json
        header = headers_of(record)["traceparent"]
        assert tracing.trace_id_of(header) == inbound_trace
        assert header.split("-")[2] in publish_ids  # the publish span is the event's parent

    # A request without a traceparent starts a trace of its own, at the consumer.
    own = tracing.trace_id_of(other.traceparent)
    assert own and own != inbound_trace
    received = [
        s for s in everything if s.trace_id == own and s.service == "bos-consumer" and s.kind == CONSUMER
    ]
    assert [s.parent_id for s in received] == [""], received
    assert received[0].attributes["bos.batch.id"] == str(other.id)
    assert any(s.name.startswith("publish ") for s in everything if s.trace_id == own)


@pytest.fixture
def operator(transactional_db: None) -> APIClient:
    membership = MembershipFactory(tenant__slug="acme")
    client = APIClient()
    client.force_authenticate(membership.user)
    return client


def new_traceparent() -> str:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


@pytest.mark.usefixtures("essay_pipeline", "held_batches")
def test_with_tracing_off_a_records_traceparent_is_passed_through_to_its_events(
    request_consumer: BatchRequestConsumer,
) -> None:
    traceparent = new_traceparent()
    message = request_message()
    send_with_headers(settings.BOS_TOPIC_REQUESTS, message, [("traceparent", traceparent.encode())])

    def stored() -> Batch | None:
        request_consumer.poll_once()
        return Batch.objects.filter(external_id=message["data"]["external_id"]).first()

    batch = wait_for(stored, timeout=60, what="the batch")
    assert batch.traceparent == traceparent
    assert OutboxEvent.objects.get(batch=batch, event_type="batch.accepted").traceparent == traceparent

    topic = f"{settings.BOS_TOPIC_EVENTS}.{uuid.uuid4().hex[:8]}"
    ensure_topics([topic], partitions=1)
    publisher = OutboxPublisher(topic=topic)
    try:
        wait_for(lambda: not publisher.publish_once(), timeout=60, what="the pending events published")
    finally:
        publisher.close()
    [record] = [r for r in read_topic(topic, min_records=1) if r.key == str(batch.id).encode()]
    assert headers_of(record)["traceparent"] == traceparent


@pytest.mark.usefixtures("essay_pipeline", "held_batches")
@pytest.mark.parametrize(("sent", "kept"), [("valid", True), ("00-not-a-traceparent-01", False)])
def test_a_rest_batch_keeps_the_callers_valid_traceparent(operator: APIClient, sent: str, kept: bool) -> None:
    traceparent = new_traceparent() if sent == "valid" else sent
    body = {
        "tenant": "acme",
        "external_id": f"rest-{uuid.uuid4().hex[:8]}",
        "pipeline": "essay-analysis",
        "items": essay_items(2),
    }
    response = operator.post("/api/v1/batches/", body, format="json", HTTP_TRACEPARENT=traceparent)
    assert response.status_code == 201, response.content
    assert Batch.objects.get(id=response.json()["id"]).traceparent == (traceparent if kept else "")
