"""The long-running commands as real processes: they stop cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from kafka import KafkaConsumer, TopicPartition

from orchestrator.kafka.clients import ensure_topics
from orchestrator.models import Batch
from tests.support.factories import request_message
from tests.support.kafka import send_requests
from tests.support.processes import start_command
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("essay_pipeline", "kafka_topics", "held_batches")]


def committed(group: str, topic: str) -> int:
    """The group's committed offsets on `topic`, summed over its partitions."""
    consumer = KafkaConsumer(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, group_id=group)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in partitions)
    finally:
        consumer.close()


def test_consumer_commits_what_it_stored_and_stops_on_sigterm() -> None:
    # A topic and group of its own, so no other test's consumer sees these messages.
    group = f"sigterm-{uuid.uuid4().hex[:6]}"
    topic = f"{settings.BOS_TOPIC_REQUESTS}.{group}"
    ensure_topics([topic])
    messages = [request_message() for _ in range(5)]
    send_requests(messages, topic=topic)
    proc = start_command(
        "consume_batches", "--topic", topic, "--group", group, "--session-timeout-ms", "6000"
    )
    try:
        ids = [m["data"]["external_id"] for m in messages]
        wait_for(lambda: Batch.objects.filter(external_id__in=ids).count() == 5, timeout=60, what="5 batches")
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "offsets committed" in output
    # The group's offset is past every message it stored: a restart re-reads nothing.
    assert committed(group, topic) == 5


def test_outbox_publisher_stops_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "publisher.log"
    proc = start_command("publish_outbox", log=log)
    try:
        wait_for(
            lambda: "outbox publisher running" in log.read_text(), timeout=60, what="the publisher to run"
        )
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3)  # it runs until told to stop
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
