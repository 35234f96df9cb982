"""Rebalancing on a real broker: consumers join and leave a group during a stream.

Scaling from one consumer to three and back while 2,000 requests stream in must give
exactly 2,000 batches, each accepted once: nothing lost at a revoke, nothing doubled.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from orchestrator.kafka.clients import ensure_topics, make_producer
from orchestrator.models import Batch, OutboxEvent
from tests.support.factories import request_message
from tests.support.kafka import headers_of, read_topic
from tests.support.processes import start_command, stop
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("essay_pipeline", "kafka_topics")]

REQUESTS = 2000


def snapshot(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def stream(topic: str, messages: list[dict[str, Any]], seconds: float) -> None:
    """Send the messages evenly over `seconds`, keyed per batch, each acknowledged."""
    producer = make_producer(linger_ms=5)
    pause = seconds / len(messages)
    try:
        for i, m in enumerate(messages):
            producer.send(
                topic,
                key=f"{m['tenant']}:{m['data']['external_id']}".encode(),
                value=json.dumps(m).encode(),
            )
            if i % 20 == 19:
                time.sleep(pause * 20)
        producer.flush(timeout=60)
    finally:
        producer.close()


@pytest.mark.parametrize("assignment", ["sticky", "cooperative-sticky"])
def test_scaling_from_one_to_three_consumers_and_back_gives_every_batch_exactly_once(
    tmp_path: Path, assignment: str
) -> None:
    run = uuid.uuid4().hex[:6]
    topic = f"{settings.BOS_TOPIC_REQUESTS}.scale-{run}"
    group = f"scale-{run}"
    queue_prefix = f"scale-{run}."  # no worker takes these batches: only their intake counts
    ensure_topics([topic])
    messages = [
        request_message(external_id=f"scale-{run}-{i:04d}", items=[{"key": "e", "payload": {"text": "x"}}])
        for i in range(REQUESTS)
    ]
    ids = {m["data"]["external_id"] for m in messages}

    def consumer(name: str) -> Any:
        return start_command(
            "consume_batches",
            "--topic",
            topic,
            "--group",
            group,
            "--session-timeout-ms",
            "6000",
            "--health-file",
            str(tmp_path / f"{name}.json"),
            log=tmp_path / f"{name}.log",
            BOS_QUEUE_PREFIX=queue_prefix,
            BOS_KAFKA_ASSIGNMENT=assignment,
        )

    def stored() -> int:
        return Batch.objects.filter(external_id__startswith=f"scale-{run}-").count()

    first = consumer("c1")
    extra: list[Any] = []
    sender = threading.Thread(target=stream, args=(topic, messages, 20.0))
    try:
        wait_for(lambda: snapshot(tmp_path / "c1.json").get("ready"), timeout=60, what="the first consumer")
        sender.start()
        wait_for(lambda: stored() >= 300, timeout=60, what="the first requests")

        # Scale up to three: the group shares the partitions among them.
        extra = [consumer("c2"), consumer("c3")]

        def shared() -> bool:
            views = [snapshot(tmp_path / f"c{i}.json") for i in (1, 2, 3)]
            owned = [set(v.get("assigned", [])) for v in views]
            return (
                all(v.get("ready") for v in views)
                and all(owned)
                and sum(map(len, owned)) == len(set().union(*owned)) == settings.BOS_KAFKA_REQUEST_PARTITIONS
            )

        wait_for(shared, timeout=90, interval=0.2, what="three consumers sharing the partitions")
        during_three = stored()

        # Back to one: the two leave mid-stream, committing what they processed.
        for proc in extra:
            stop(proc)
        for name, proc in zip(("c2", "c3"), extra, strict=True):
            assert proc.returncode == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
        sender.join(timeout=120)
        wait_for(lambda: stored() >= REQUESTS, timeout=180, interval=0.5, what=f"{REQUESTS} batches")
        time.sleep(2)  # anything delivered twice would show up now
    finally:
        for proc in [first, *extra]:
            stop(proc)
        queues = redis.Redis.from_url(settings.REDIS_URL)
        for key in queues.scan_iter(match=f"{queue_prefix}*"):
            queues.delete(key)

    batches = Batch.objects.filter(external_id__startswith=f"scale-{run}-")
    assert batches.count() == REQUESTS
    assert set(batches.values_list("external_id", flat=True)) == ids
    # Each request took effect once: one accepted event per batch, no more.
    accepted = OutboxEvent.objects.filter(batch__in=batches, event_type="batch.accepted").count()
    assert accepted == REQUESTS
    assert 0 < during_three < REQUESTS, "the scale-up happened mid-stream"
    # Nothing from this topic was dead-lettered.
    dlq = [
        r
        for r in read_topic(settings.BOS_TOPIC_DLQ, timeout=2)
        if headers_of(r).get("bos-source-topic") == topic
    ]
    assert dlq == []
    # The two that left handed their partitions back: both logged a revoke and committed.
    for name in ("c2", "c3"):
        log = (tmp_path / f"{name}.log").read_text()
        assert "partitions assigned" in log and "offsets committed" in log
