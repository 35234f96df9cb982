"""Consumer start-up on a real broker: waiting for it, missing topics, readiness."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from kafka import KafkaAdminClient

from orchestrator.kafka.consumer import BatchRequestConsumer
from orchestrator.kafka.health import ConsumerHealth
from orchestrator.kafka.startup import StartupError
from orchestrator.models import Batch
from tests.support.factories import request_message
from tests.support.kafka import send_requests
from tests.support.processes import free_port, start_broker, start_command, stop
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e]


def health_of(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


@pytest.mark.usefixtures("essay_pipeline", "held_batches")
def test_consumer_waits_for_a_broker_that_is_down_then_starts(tmp_path: Path) -> None:
    port = free_port()
    servers = f"127.0.0.1:{port}"
    health_file = tmp_path / "consumer-health.json"
    log = tmp_path / "consumer.log"
    consumer = start_command(
        "consume_batches",
        "--session-timeout-ms",
        "6000",
        "--health-file",
        str(health_file),
        log=log,
        KAFKA_BOOTSTRAP_SERVERS=servers,
        BOS_QUEUE_PREFIX=f"startup-{uuid.uuid4().hex[:6]}.",  # no worker runs what it accepts
    )
    broker = None
    try:
        # No broker yet: the consumer says so, not ready, and keeps trying.
        wait_for(
            lambda: health_of(health_file).get("steps", {}).get("connect", {}).get("status") == "retry",
            timeout=30,
            what="the connect step to report a retry",
        )
        assert health_of(health_file)["ready"] is False
        assert consumer.poll() is None
        assert "kafka.startup step=connect status=retry" in log.read_text()

        broker = start_broker(port, tmp_path / "broker.log")
        wait_for(lambda: health_of(health_file).get("ready"), timeout=90, what="the consumer to be ready")
        steps = health_of(health_file)["steps"]
        assert [steps[s]["status"] for s in ("connect", "topics", "writable", "schemas", "join")] == [
            "ok"
        ] * 5

        message = request_message()
        with override_settings(KAFKA_BOOTSTRAP_SERVERS=[servers]):
            send_requests([message])
        wait_for(
            lambda: Batch.objects.filter(external_id=message["data"]["external_id"]).exists(),
            timeout=30,
            what="the batch",
        )
    finally:
        stop(consumer)
        if broker is not None:
            stop(broker)
    text = log.read_text()
    for step in ("connect", "topics", "writable"):
        assert f"kafka.startup step={step} status=ok" in text
    assert health_of(health_file)["status"] == "stopped"


def test_missing_topic_stops_start_up_when_creating_topics_is_off(
    kafka_topics: list[str], tmp_path: Path
) -> None:
    topic = f"{settings.BOS_TOPIC_REQUESTS}.missing-{uuid.uuid4().hex[:6]}"
    health = ConsumerHealth(group="g", topic=topic, path=str(tmp_path / "h.json"), port=0)
    with override_settings(BOS_KAFKA_CREATE_TOPICS=False), pytest.raises(StartupError) as failure:
        BatchRequestConsumer(topic=topic, health=health)

    assert failure.value.step == "topics"
    assert topic in failure.value.message and "BOS_KAFKA_CREATE_TOPICS" in failure.value.message
    snapshot = health_of(tmp_path / "h.json")
    assert snapshot["status"] == "failed" and snapshot["ready"] is False
    assert snapshot["steps"]["topics"]["status"] == "failed"


def test_missing_topic_is_created_with_the_expected_partitions_when_allowed(
    kafka_topics: list[str], tmp_path: Path
) -> None:
    topic = f"{settings.BOS_TOPIC_REQUESTS}.created-{uuid.uuid4().hex[:6]}"
    health = ConsumerHealth(group="g", topic=topic, path=str(tmp_path / "h.json"), port=0)
    consumer = BatchRequestConsumer(topic=topic, group_id=f"g-{uuid.uuid4().hex[:6]}", health=health)
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS)
        try:
            [described] = admin.describe_topics([topic])
        finally:
            admin.close()
        assert len(described["partitions"]) == settings.BOS_KAFKA_REQUEST_PARTITIONS
        assert "created" in health.state["steps"]["topics"]["detail"]
    finally:
        consumer.close()


def test_a_topic_with_too_few_partitions_is_a_clear_start_up_error(
    kafka_topics: list[str], tmp_path: Path
) -> None:
    from orchestrator.kafka.clients import ensure_topics

    topic = f"{settings.BOS_TOPIC_REQUESTS}.narrow-{uuid.uuid4().hex[:6]}"
    ensure_topics([topic], partitions=2)
    health = ConsumerHealth(group="g", topic=topic, path=str(tmp_path / "h.json"), port=0)
    with pytest.raises(StartupError) as failure:
        BatchRequestConsumer(topic=topic, health=health)
    assert "has 2 partitions" in failure.value.message


@pytest.mark.django_db
def test_readyz_waits_for_a_ready_consumer_when_required(admin_client: Any, tmp_path: Path) -> None:
    client = admin_client  # the consumers' detail is for staff (docs/security.md)
    group = f"readyz-{uuid.uuid4().hex[:6]}"
    with override_settings(BOS_CONSUMER_GROUP=group, BOS_READYZ_REQUIRE_CONSUMER=True):
        assert client.get("/readyz").status_code == 503

        health = ConsumerHealth(group=group, topic="t", path=str(tmp_path / "h.json"), port=0)
        starting = client.get("/readyz")
        assert starting.status_code == 503
        assert [m["status"] for m in starting.json()["checks"]["consumers"]["members"]] == ["starting"]

        health.ready()
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json()
        assert ready.json()["checks"]["consumers"]["ready"] == 1

        health.stopped()
        assert client.get("/readyz").status_code == 503


def test_consumer_health_endpoint_answers_503_until_ready(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    port = free_port()
    health = ConsumerHealth(group="g", topic="t", path=str(tmp_path / "h.json"), port=port)
    try:
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert not_ready.value.code == 503
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
        health.ready()
        answer = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert answer.status == 200 and json.loads(answer.read())["status"] == "ready"
    finally:
        health.stopped()
