"""How the consumer treats one record's failure, on a real broker and database.

A DLQ that cannot be written, a broker poll that fails, a request that fails to store
in a way nothing classified: the consumer never raises, never skips a record and never
commits one whose effect (or DLQ copy) does not exist. (The whole process under poison
and outages: tests/chaos/test_poison_kafka.py.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DataError
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from orchestrator.kafka.consumer import BatchRequestConsumer, PollStats
from orchestrator.models import Batch
from tests.support.factories import request_message
from tests.support.groups import committed
from tests.support.kafka import headers_of, read_topic, send_raw
from tests.support.sending import BrokenSender
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline", "held_batches")]


@pytest.fixture
def consumer() -> Iterator[BatchRequestConsumer]:
    """A consumer of its own: a requests topic, a one-partition DLQ and a group."""
    suffix = uuid.uuid4().hex[:8]
    member = BatchRequestConsumer(
        topic=f"test-failures-{suffix}.requested",
        dlq_topic=f"test-failures-{suffix}.requested.dlq",
        group_id=f"test-failures-{suffix}",
        session_timeout_ms=6000,
        poll_timeout_ms=200,
    )
    yield member
    member.close()


def poll_until(consumer: BatchRequestConsumer, done: Any, *, what: str, timeout: float = 60) -> PollStats:
    """Poll until `done(total)` holds for the stats summed so far; those stats."""
    total = PollStats()

    def step() -> bool:
        stats = consumer.poll_once()
        total.processed += stats.processed
        total.dead_lettered += stats.dead_lettered
        total.retried += stats.retried
        return bool(done(total))

    wait_for(step, timeout=timeout, interval=0, what=what)
    return total


class _FailingOnce:
    """Stands in for the DLQ producer's `send`: the first send times out, as a send
    whose acknowledgement never came does; the next ones go to the broker."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            return _TimedOut()
        return self.send(*args, **kwargs)


class _TimedOut:
    def get(self, timeout: float | None = None) -> Any:
        raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")


def test_a_dlq_write_that_times_out_rewinds_and_the_record_goes_there_on_a_later_poll(
    consumer: BatchRequestConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = _FailingOnce(consumer.producer.send)
    monkeypatch.setattr(consumer.producer, "send", flaky)
    good = request_message()
    send_raw(consumer.topic, [(b"acme:same", b"{not json"), (b"acme:same", json.dumps(good).encode())])

    first = poll_until(consumer, lambda t: t.retried or t.processed, what="the first try")
    assert (first.retried, first.processed) == (1, 0)  # nothing handled, nothing committed
    assert consumer.backoff == 0.5
    assert not Batch.objects.filter(external_id=good["data"]["external_id"]).exists()

    after = poll_until(consumer, lambda t: t.processed >= 2, what="both records, after the backoff")
    assert (after.processed, after.dead_lettered, after.retried) == (2, 1, 0)
    assert consumer.backoff == 0.0
    (dead,) = read_topic(consumer.dlq_topic, min_records=1)
    assert dead.value == b"{not json" and headers_of(dead)["bos-error-class"] == "invalid_json"
    assert Batch.objects.filter(external_id=good["data"]["external_id"]).count() == 1
    assert sum(committed(consumer.group_id, consumer.topic).values()) == 2


def test_a_dlq_that_stays_unwritable_holds_the_record_and_backs_off_to_the_cap(
    consumer: BatchRequestConsumer, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise KafkaConnectionError("the DLQ's leader is unreachable")

    sleeps: list[float] = []
    consumer.sleep = sleeps.append  # the backoffs are driven, not waited out
    monkeypatch.setattr(consumer.producer, "send", unreachable)
    send_raw(consumer.topic, [(b"acme:x", b"[1, 2]")])

    stats = poll_until(consumer, lambda t: t.retried >= 9, what="nine tries")
    assert stats.processed == 0
    assert consumer.backoff == settings.BOS_KAFKA_BACKOFF_CAP_SECONDS
    # 0.5 s doubling up to the cap, waited out in slices (so SIGTERM is seen at once).
    assert sum(sleeps) >= 0.5 + 1 + 2 + 4 + 8 + 16 + 30 and max(sleeps) == 0.25
    assert committed(consumer.group_id, consumer.topic) == {}


def test_a_request_that_fails_to_store_in_an_unclassified_way_is_dead_lettered_alone(
    consumer: BatchRequestConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.services import intake

    copy = intake.copy_items_many

    def refuses_one(batches: list[tuple[Any, int, Any]]) -> None:
        if any(item["key"] == "explode" for _, _, items in batches for item in items):
            raise DataError("a value the checks let through")
        copy(batches)

    monkeypatch.setattr(intake, "copy_items_many", refuses_one)
    messages = [
        request_message(external_id="before"),
        request_message(external_id="culprit", items=[{"key": "explode", "payload": {}}]),
        request_message(external_id="after"),
    ]
    send_raw(consumer.topic, [(b"acme:same", json.dumps(m).encode()) for m in messages])

    stats = poll_until(consumer, lambda t: t.processed >= 3, what="the three requests")
    assert (stats.processed, stats.dead_lettered, stats.retried) == (3, 1, 0)
    assert set(Batch.objects.values_list("external_id", flat=True)) == {"before", "after"}
    (dead,) = read_topic(consumer.dlq_topic, min_records=1)
    headers = headers_of(dead)
    assert headers["bos-error-class"] == "unprocessable"
    assert headers["bos-error"] == "handling it failed: DataError: a value the checks let through"
    assert json.loads(dead.value)["data"]["external_id"] == "culprit"
    assert sum(committed(consumer.group_id, consumer.topic).values()) == 3


def test_a_failed_poll_is_backed_off_and_the_loop_goes_on(
    consumer: BatchRequestConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The group has assigned it its partitions first: the poll that fails is one of the
    # loop's, not one in the middle of joining (see the closing note of issue 9).
    wait_for(
        lambda: consumer.poll_once() is not None and consumer.consumer.assignment(), what="the assignment"
    )
    poll = consumer.consumer.poll
    calls: list[int] = []

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise KafkaConnectionError("broker went away")
        return poll(*args, **kwargs)

    monkeypatch.setattr(consumer.consumer, "poll", fails_once)
    assert consumer.poll_once() == PollStats()
    assert consumer.backoff == 0.5
    good = request_message()
    send_raw(consumer.topic, [(b"acme:y", json.dumps(good).encode())])
    poll_until(consumer, lambda t: t.processed >= 1, what="the request")
    assert Batch.objects.filter(external_id=good["data"]["external_id"]).exists()


def test_a_command_whose_work_cannot_be_sent_after_commit_is_applied_once_and_committed(
    consumer: BatchRequestConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu.exceptions import OperationalError as BrokerDown

    from orchestrator.models import PhaseRun, ProcessedEvent
    from orchestrator.services.batches import batch_create
    from tests.support.factories import batch_request

    batch = batch_create(request=batch_request(), actor="test").batch  # held: no worker runs it
    Batch.objects.filter(id=batch.id).update(state="failed")
    PhaseRun.objects.filter(batch=batch).update(state="failed")

    monkeypatch.setattr(
        "orchestrator.workflows.SENDER",
        BrokenSender(BrokerDown("Error 111 connecting to 127.0.0.1:6379. Connection refused.")),
    )
    retry = request_message()
    retry.update(event_type="batch.retry_requested", data={"external_id": batch.external_id})
    send_raw(consumer.topic, [(b"acme:retry", json.dumps(retry).encode())])

    stats = poll_until(consumer, lambda t: t.processed >= 1, what="the retry command")
    assert (stats.processed, stats.dead_lettered, stats.retried) == (1, 0, 0)
    assert Batch.objects.get(id=batch.id).state == "running"  # stored; the reconciler sends the rest
    assert ProcessedEvent.objects.filter(event_id=retry["event_id"]).count() == 1
    assert sum(committed(consumer.group_id, consumer.topic).values()) == 1
