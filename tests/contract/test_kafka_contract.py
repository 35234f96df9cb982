"""On the real broker: what BOS reads and writes on Kafka matches schemas/.

A schema-invalid request is dead-lettered with `bos-error-class: invalid_schema` and the
JSON path of the problem; the events a batch run publishes, read back from the events
topic, match their schemas, and so do their headers.
"""

from __future__ import annotations

import json

import pytest
from django.conf import settings

from orchestrator.contracts import SCHEMA_INVALID, validate_event, validate_headers
from orchestrator.kafka.consumer import BatchRequestConsumer
from orchestrator.kafka.publisher import OutboxPublisher
from orchestrator.models import Batch, OutboxEvent
from tests.support.factories import essay_items, request_message
from tests.support.kafka import headers_of, read_topic, send_raw, send_requests
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = [pytest.mark.contract, pytest.mark.integration]


def consume(consumer: BatchRequestConsumer, *, records: int) -> int:
    """Poll until `records` were handled; how many of them were dead-lettered."""
    seen = dead = 0

    def step() -> bool:
        nonlocal seen, dead
        stats = consumer.poll_once()
        seen, dead = seen + stats.processed, dead + stats.dead_lettered
        return seen >= records

    wait_for(step, timeout=30, interval=0, what=f"{records} records consumed")
    return dead


@pytest.mark.usefixtures("transactional_db")
def test_a_schema_invalid_request_is_dead_lettered_with_its_path_and_rule(
    request_consumer: BatchRequestConsumer,
) -> None:
    message = request_message(items=essay_items(5))
    del message["data"]["items"][3]["key"]
    key = f"acme:{message['data']['external_id']}".encode()
    send_raw(settings.BOS_TOPIC_REQUESTS, [(key, json.dumps(message).encode())])

    assert consume(request_consumer, records=1) == 1

    dead = [r for r in read_topic(settings.BOS_TOPIC_DLQ, min_records=1) if r.key == key]
    assert len(dead) == 1 and json.loads(dead[0].value) == message  # the original, unchanged
    headers = headers_of(dead[0])
    validate_headers("dlq", headers)
    assert headers["bos-error-class"] == SCHEMA_INVALID
    assert headers["bos-error"] == "data.items[3].key: required property"
    assert not Batch.objects.filter(external_id=message["data"]["external_id"]).exists()


@pytest.mark.usefixtures("celery_worker", "essay_pipeline")
def test_the_events_of_a_batch_read_back_from_the_topic_match_their_schemas(
    request_consumer: BatchRequestConsumer, publisher: OutboxPublisher
) -> None:
    message = request_message(items=essay_items(12, bad={4}))
    send_requests([message])
    assert consume(request_consumer, records=1) == 0
    batch = wait_for_terminal(Batch.objects.get(external_id=message["data"]["external_id"]).id)
    assert batch.state == "completed_with_errors"

    wait_for(
        lambda: (
            publisher.publish_once() == 0
            and not OutboxEvent.objects.filter(published_at__isnull=True).exists()
        ),
        what="outbox drained",
    )
    stored = OutboxEvent.objects.filter(batch=batch).count()
    records = [
        r
        for r in read_topic(settings.BOS_TOPIC_EVENTS, min_records=stored)
        if r.key == str(batch.id).encode()
    ]

    assert len(records) == stored
    # Numbered per batch from 1, one more per event, in the order a consumer reads them.
    assert [json.loads(r.value)["sequence"] for r in records] == list(range(1, stored + 1))
    types = []
    for record in records:
        envelope = json.loads(record.value)
        validate_event(envelope)
        headers = headers_of(record)
        validate_headers("event", headers)
        assert headers["bos-event-type"] == envelope["event_type"]
        types.append(envelope["event_type"])
    assert {"batch.accepted", "batch.phase_completed", "batch.completed_with_errors"} <= set(types)
