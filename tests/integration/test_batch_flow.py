"""End to end on real services: Kafka → consumer → PostgreSQL → Celery worker → outbox → Kafka."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.conf import settings

from orchestrator.kafka.consumer import BatchRequestConsumer
from orchestrator.kafka.publisher import OutboxPublisher
from orchestrator.models import Batch, BatchItem, ChunkRun, ItemResult, OutboxEvent
from orchestrator.services.batches import batch_create
from tests.support.factories import batch_request, essay_items, request_message
from tests.support.kafka import headers_of, read_topic, send_raw, send_requests
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("celery_worker", "essay_pipeline")]


def consume_until(consumer: BatchRequestConsumer, *, processed: int, timeout: float = 30) -> int:
    """Poll until `processed` records were handled; returns how many were dead-lettered."""
    seen = dlq = 0

    def step() -> bool:
        nonlocal seen, dlq
        stats = consumer.poll_once()
        seen += stats.processed
        dlq += stats.dead_lettered
        return seen >= processed

    wait_for(step, timeout=timeout, interval=0, what=f"{processed} records consumed")
    return dlq


def events_of(batch: Batch, publisher: OutboxPublisher) -> list[dict[str, object]]:
    wait_for(
        lambda: (
            publisher.publish_once() == 0
            and not OutboxEvent.objects.filter(published_at__isnull=True).exists()
        ),
        what="outbox drained",
    )
    expected = OutboxEvent.objects.filter(batch=batch).count()
    records = read_topic(settings.BOS_TOPIC_EVENTS, min_records=expected)
    mine = [json.loads(r.value) for r in records if r.key == str(batch.id).encode()]
    return mine


def test_kafka_request_completes_with_phase_events_in_order(
    request_consumer: BatchRequestConsumer, publisher: OutboxPublisher
) -> None:
    message = request_message(items=essay_items(40), metadata={"course": "EN101"})
    send_requests([message])
    assert consume_until(request_consumer, processed=1) == 0

    batch = wait_for_terminal(Batch.objects.get(external_id=message["data"]["external_id"]).id)

    assert batch.state == "completed"
    assert batch.items_succeeded == 40 and batch.items_failed == 0
    assert batch.correlation_id == message["correlation_id"]
    assert batch.report["aggregate"]["essays_analysed"] == 40
    history = list(batch.transitions.values_list("from_state", "to_state"))
    assert history == [
        ("", "received"),
        ("received", "accepted"),
        ("accepted", "running"),
        ("running", "completed"),
    ]

    events = events_of(batch, publisher)
    types = [(e["event_type"], e["data"].get("phase")) for e in events]
    assert types[:3] == [
        ("batch.accepted", None),
        ("batch.started", None),
        ("batch.phase_started", "validate"),
    ]
    assert types[3:5] == [("batch.phase_completed", "validate"), ("batch.phase_skipped", "score")]
    middle = types[5:9]
    assert sorted(middle[:2]) == [
        ("batch.phase_started", "spellcheck"),
        ("batch.phase_started", "text_stats"),
    ]
    assert sorted(middle[2:]) == [
        ("batch.phase_completed", "spellcheck"),
        ("batch.phase_completed", "text_stats"),
    ]
    assert types[9:] == [
        ("batch.phase_skipped", "grading"),
        ("batch.phase_started", "aggregate"),
        ("batch.phase_completed", "aggregate"),
        ("batch.completed", None),
    ]
    for event in events:
        assert event["tenant"] == "acme" and event["schema_version"] == 1
        assert event["correlation_id"] == message["correlation_id"]
        assert event["data"]["batch_id"] == str(batch.id)
        assert event["data"]["pipeline"] == "essay-analysis" and event["data"]["pipeline_version"] == 1
    assert events[-1]["data"]["state"] == "completed"


def test_same_event_twice_and_same_external_id_twice_make_one_batch(
    request_consumer: BatchRequestConsumer,
) -> None:
    first = request_message(external_id="dup-1")
    again_same_event = dict(first)
    again_other_event = request_message(external_id="dup-1")
    send_requests([first, again_same_event, again_other_event])
    assert consume_until(request_consumer, processed=3) == 0

    assert Batch.objects.filter(external_id="dup-1").count() == 1
    batch = wait_for_terminal(Batch.objects.get(external_id="dup-1").id)
    assert batch.state == "completed"
    assert BatchItem.objects.filter(batch=batch).count() == 5


def test_malformed_messages_go_to_the_dlq_and_the_consumer_goes_on(
    request_consumer: BatchRequestConsumer,
) -> None:
    unknown_pipeline = request_message(pipeline="no-such-pipeline")
    good = request_message(external_id="after-the-bad-ones")
    send_raw(
        settings.BOS_TOPIC_REQUESTS,
        [
            (b"acme:broken", b"{this is not json"),
            (b"acme:unknown", json.dumps(unknown_pipeline).encode()),
            (b"acme:good", json.dumps(good).encode()),
        ],
    )
    assert consume_until(request_consumer, processed=3) == 2

    dlq = read_topic(settings.BOS_TOPIC_DLQ, min_records=2)
    by_key = {r.key: r for r in dlq}
    broken = by_key[b"acme:broken"]
    assert broken.value == b"{this is not json"
    headers = headers_of(broken)
    assert headers["bos-error-class"] == "invalid_json"
    assert headers["bos-source-topic"] == settings.BOS_TOPIC_REQUESTS
    assert int(headers["bos-source-partition"]) in range(settings.BOS_KAFKA_REQUEST_PARTITIONS)
    assert headers["bos-source-offset"].isdigit()
    assert "not UTF-8 JSON" in headers["bos-error"]
    assert headers_of(by_key[b"acme:unknown"])["bos-error-class"] == "unknown_pipeline"

    batch = wait_for_terminal(Batch.objects.get(external_id="after-the-bad-ones").id)
    assert batch.state == "completed"


def test_failing_items_give_completed_with_errors() -> None:
    result = batch_create(request=batch_request(items=essay_items(30, bad={3, 17})), actor="test")
    batch = wait_for_terminal(result.batch.id)

    assert batch.state == "completed_with_errors"
    assert (batch.items_succeeded, batch.items_failed) == (28, 2)
    failed = BatchItem.objects.filter(batch=batch, state="failed").order_by("seq")
    assert [i.key for i in failed] == ["essay-3", "essay-17"]
    assert all(i.failed_phase == "validate" and "at least 3" in i.last_error for i in failed)
    # The failed items were not fed to the later phases, and nothing else was lost.
    assert ItemResult.objects.filter(phase_run__batch=batch, phase_run__name="spellcheck").count() == 28
    # Settled right after the batch's commit, outside its lock.
    wait_for(
        lambda: BatchItem.objects.filter(batch=batch, state="succeeded").count() == 28, what="settled items"
    )


def test_the_two_middle_phases_run_at_the_same_time() -> None:
    result = batch_create(request=batch_request(items=essay_items(600)), actor="test")
    batch = wait_for_terminal(result.batch.id)
    assert batch.state == "completed"

    spell = list(ChunkRun.objects.filter(phase_run__batch=batch, phase_run__name="spellcheck"))
    stats = list(ChunkRun.objects.filter(phase_run__batch=batch, phase_run__name="text_stats"))
    assert len(spell) == len(stats) == 6
    spell_span = (min(c.started_at for c in spell), max(c.finished_at for c in spell))
    stats_span = (min(c.started_at for c in stats), max(c.finished_at for c in stats))
    assert spell_span[0] < stats_span[1] and stats_span[0] < spell_span[1], (spell_span, stats_span)


def test_a_failing_per_batch_phase_fails_the_batch(test_pipelines: None) -> None:
    result = batch_create(
        request=batch_request(pipeline="explodes", items=[{"key": "a", "payload": {}}]), actor="test"
    )
    batch = wait_for_terminal(result.batch.id)

    assert batch.state == "failed"
    assert "blew up" in batch.error
    last = batch.transitions.order_by("-seq").first()
    assert last is not None and last.phase == "boom" and "boom failed" in last.reason


def test_outbox_has_one_event_per_change_and_none_for_a_rolled_back_one() -> None:
    from django.db import transaction

    request = batch_request(external_id=f"rolled-back-{uuid.uuid4().hex[:6]}")

    def create_then_abort() -> None:
        with transaction.atomic():
            batch_create(request=request, actor="test")
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        create_then_abort()
    assert not Batch.objects.filter(external_id=request.external_id).exists()
    assert not OutboxEvent.objects.filter(envelope__data__external_id=request.external_id).exists()


def test_a_small_batch_runs_inline_with_the_same_states_and_events(settings: Any) -> None:
    assert settings.BOS_INLINE_MAX_ITEMS >= 4
    result = batch_create(request=batch_request(items=essay_items(4, bad={1})), actor="test")
    batch = wait_for_terminal(result.batch.id)

    assert batch.state == "completed_with_errors"
    assert (batch.items_succeeded, batch.items_failed) == (3, 1)
    phases = {p.name: p for p in batch.phases.all()}
    assert phases.pop("score").state == phases.pop("grading").state == "skipped"
    assert all(p.state == "succeeded" and p.started_at and p.finished_at for p in phases.values())
    assert phases["validate"].items_failed == 1
    assert phases["spellcheck"].items_done == 4  # the failed item was seen and skipped
    assert ItemResult.objects.filter(phase_run=phases["spellcheck"]).count() == 3
    assert batch.report["aggregate"]["essays_analysed"] == 3
    types = list(batch.outbox.order_by("id").values_list("event_type", flat=True))
    assert types == [
        "batch.accepted", "batch.started",
        "batch.phase_started", "batch.phase_completed",
        "batch.phase_skipped",  # score
        "batch.phase_started", "batch.phase_started", "batch.phase_completed", "batch.phase_completed",
        "batch.phase_skipped",  # grading
        "batch.phase_started", "batch.phase_completed",
        "batch.completed_with_errors",
    ]  # fmt: skip
