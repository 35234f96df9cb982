"""Chaos: a real consumer process, fed poison and cut off from its dependencies, never dies.

One `manage.py consume_batches` process at default settings, on a requests topic, a DLQ
and a group of its own. It reaches PostgreSQL and the Celery broker through gates the
test shuts and opens (tests/support/gate.py: the shared services are never touched), and
it lacks the test handlers, so a pipeline version naming one cannot run in it. Through
all of it its PID stays the same; every poison record ends in the DLQ with its reason,
every good one is stored once and completes on the real worker.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from orchestrator.contracts import validate_headers
from orchestrator.input_safety import MAX_DEPTH
from orchestrator.kafka.clients import ensure_topics, make_producer
from orchestrator.models import Batch, BatchItem
from orchestrator.services.reconcile import reconcile
from tests.chaos.test_chaos import POISON_KAFKA, _poison
from tests.conftest import LOG_DIR
from tests.support.factories import publish_test_pipeline, request_message
from tests.support.gate import Gate, gate_to
from tests.support.groups import committed
from tests.support.kafka import headers_of, read_topic
from tests.support.processes import start_command, stop
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = [pytest.mark.chaos]

TWO_MB = 2_000_000


@dataclass(frozen=True)
class Poison:
    name: str
    code: str  # the DLQ's bos-error-class
    value: bytes | None
    key: bytes | None = b"acme:poison"


def _request(**data: Any) -> dict[str, Any]:
    message = request_message(items=[{"key": "a", "payload": {"text": "a b c"}}])
    message["data"].update(data)
    return message


def _envelope(**fields: Any) -> dict[str, Any]:
    message = _request()
    message.update(fields)
    return message


def _command(event_type: str, **data: Any) -> dict[str, Any]:
    return _envelope(event_type=event_type, data={"external_id": "some-batch", **data})


def _encoded(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()  # NaN and Infinity as Python writes them


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def _deep(depth: int) -> bytes:
    # json.dumps recurses: write the nesting as text.
    text = _encoded(_request(items=[{"key": "a", "payload": "HOLE"}])).decode()
    return text.replace('"HOLE"', "[" * depth + "]" * depth).encode()


def _huge(size: int) -> bytes:
    text = _encoded(_request(items=[{"key": "a", "payload": {"text": "HOLE"}}])).decode()
    return text.replace("HOLE", "x" * (size - len(text) + 4)).encode()


def corpus(*, unrunnable: str) -> list[Poison]:
    """Every kind of record that can never succeed, with the DLQ class it must get.

    The corpus of tests/chaos/test_chaos.py, without its size case (that one depends on
    its own BOS_MAX_MESSAGE_BYTES; here the default holds), and then what PostgreSQL or
    Python would refuse late, wrong types and a version this process cannot run.
    """
    nul = "x\u0000y"
    kinds = [
        Poison(
            f"test_chaos[{n}]",
            code,
            value
            if isinstance(value, bytes | type(None))
            else (_encoded(value) if isinstance(value, dict) else _poison(value)),
        )
        for n, (code, value) in enumerate(POISON_KAFKA)
        # Sized for test_chaos's smaller limits; their default-sized twins are below.
        if value not in ("too-large", "item-too-large")
    ]
    nul_fields: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("event_id", lambda: _envelope(event_id=nul)),
        ("event_type", lambda: _envelope(event_type="batch.requested\u0000")),
        ("tenant", lambda: _envelope(tenant="acme\u0000")),
        ("correlation_id", lambda: _envelope(correlation_id=nul)),
        ("occurred_at", lambda: _envelope(occurred_at="2026-11-29T10:00:00Z\u0000")),
        ("data.external_id", lambda: _request(external_id=nul)),
        ("data.pipeline", lambda: _request(pipeline="essay-analysis\u0000")),
        ("data.deadline", lambda: _request(deadline="2026-11-29T10:00:00Z\u0000")),
        ("data.metadata value", lambda: _request(metadata={"course": nul})),
        ("data.metadata key", lambda: _request(metadata={nul: "EN101"})),
        ("item key", lambda: _request(items=[{"key": nul, "payload": {}}])),
        ("item payload", lambda: _request(items=[{"key": "a", "payload": {"text": nul}}])),
        ("item payload key", lambda: _request(items=[{"key": "a", "payload": {nul: 1}}])),
        ("item payload list", lambda: _request(items=[{"key": "a", "payload": ["ok", nul]}])),
        ("cancel external_id", lambda: _command("batch.cancel_requested", external_id=nul)),
        ("retry reason", lambda: _command("batch.retry_requested", reason=nul)),
    ]
    kinds += [Poison(f"NUL in {field}", "invalid_schema", _encoded(make())) for field, make in nul_fields]
    not_finite: list[tuple[str, dict[str, Any]]] = [
        ("NaN in payload", _request(items=[{"key": "a", "payload": {"score": float("nan")}}])),
        ("Infinity in payload", _request(items=[{"key": "a", "payload": [1, float("inf")]}])),
        ("-Infinity in payload", _request(items=[{"key": "a", "payload": -float("inf")}])),
        ("NaN in metadata", _request(metadata={"weight": float("nan")})),
        ("Infinity in metadata", _request(metadata={"limits": {"max": float("inf")}})),
        ("NaN as priority", _request(priority=float("nan"))),
    ]
    kinds += [Poison(name, "invalid_json", _encoded(message)) for name, message in not_finite]
    overflow = _encoded(_request(items=[{"key": "a", "payload": {"n": 1.0}}])).replace(b"1.0", b"1e400")
    long_int = _encoded(_request(items=[{"key": "a", "payload": {"n": 1}}])).replace(
        b'"n": 1', b'"n": ' + b"7" * 5000
    )
    kinds += [
        Poison("a float literal beyond float range", "invalid_json", overflow),
        Poison("an integer of 5000 digits", "invalid_json", long_int),
        Poison(
            "a lone surrogate in a payload",
            "invalid_schema",
            _encoded(_request(items=[{"key": "a", "payload": "\ud800"}])),
        ),
        Poison("nested 1,200 deep", "invalid_json", _deep(1200)),
        Poison(f"nested {MAX_DEPTH + 1} deep", "invalid_json", _deep(MAX_DEPTH + 1)),
        Poison("2 MB", "too_large", _huge(TWO_MB)),
        Poison(
            "an item over BOS_MAX_ITEM_BYTES in a message under BOS_MAX_MESSAGE_BYTES",
            "item_too_large",
            _encoded(
                _request(items=[{"key": "a", "payload": {"text": "x" * (settings.BOS_MAX_ITEM_BYTES + 1)}}])
            ),
        ),
        Poison(
            "a deadline past year 9999 in UTC",
            "invalid_schema",
            _encoded(_request(deadline="9999-12-31T23:59:59-23:59")),
        ),
        Poison(
            "a deadline before year 1 in UTC",
            "invalid_schema",
            _encoded(_request(deadline="0001-01-01T00:00:00+01:00")),
        ),
        Poison(
            "a pinned version whose handler this process lacks",
            "pipeline_not_runnable",
            _encoded(_request(pipeline=unrunnable, pipeline_version=1)),
        ),
        Poison(
            "its active version lacks a handler too",
            "pipeline_not_runnable",
            _encoded(_request(pipeline=unrunnable)),
        ),
        Poison("a UTF-8 byte order mark", "invalid_json", b"\xef\xbb\xbf" + _encoded(_request())),
        Poison("an empty value", "invalid_json", b""),
        Poison("no key and not JSON", "invalid_json", b"nope", key=None),
        Poison("items is a string", "invalid_schema", _encoded(_request(items="essays"))),
        Poison("metadata is a list", "invalid_schema", _encoded(_request(metadata=["EN101"]))),
        Poison("tenant is a number", "invalid_schema", _encoded(_envelope(tenant=42))),
        Poison("priority is a word", "invalid_schema", _encoded(_request(priority="high"))),
        Poison("pipeline_version is a string", "invalid_schema", _encoded(_request(pipeline_version="1"))),
        Poison("an empty item key", "invalid_schema", _encoded(_request(items=[{"key": "", "payload": {}}]))),
        Poison(
            "a blank item key", "invalid_schema", _encoded(_request(items=[{"key": "   ", "payload": {}}]))
        ),
        Poison("an item that is not an object", "invalid_schema", _encoded(_request(items=["essay-1"]))),
        Poison("data is null", "invalid_schema", _encoded(_envelope(data=None))),
    ]
    return kinds


def _through(url: str, gate: Gate) -> str:
    """`url`, pointing at the gate instead of its own host and port."""
    parts = urlparse(url)
    auth = parts.netloc.rpartition("@")[0]
    return urlunparse(parts._replace(netloc=(f"{auth}@" if auth else "") + f"127.0.0.1:{gate.port}"))


def _send(topic: str, records: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    """Send each record (the 2 MB one too); the (partition, offset) each got."""
    producer = make_producer(max_request_size=4 * TWO_MB)
    try:
        return [
            (meta.partition, meta.offset)
            for key, value in records
            for meta in [producer.send(topic, key=key, value=value).get(timeout=30)]
        ]
    finally:
        producer.close()


@dataclass
class ConsumerUnderTest:
    proc: Any
    log: Path
    topic: str
    dlq: str
    group: str
    database: Gate
    broker: Gate

    def alive(self) -> bool:
        return self.proc.poll() is None

    def logged(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")


@pytest.fixture
def consumer_process(essay_pipeline: None) -> Iterator[ConsumerUnderTest]:
    suffix = uuid.uuid4().hex[:8]
    group = f"{settings.BOS_CONSUMER_GROUP}-poison-{suffix}"
    topic = f"{settings.BOS_TOPIC_REQUESTS}.poison-{suffix}"
    dlq = f"{settings.BOS_TOPIC_REQUESTS}.poison-{suffix}.dlq"
    ensure_topics([dlq], partitions=1)
    db = connection.settings_dict
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"consumer-poison-{suffix}.log"
    broker_url = urlparse(settings.CELERY_BROKER_URL)
    with (
        gate_to(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)) as database,
        gate_to(broker_url.hostname or "127.0.0.1", broker_url.port or 6379) as broker,
    ):
        from tests.conftest import database_url

        proc = start_command(
            "consume_batches",
            "--topic",
            topic,
            "--group",
            group,
            log=log,
            DATABASE_URL=_through(database_url(), database),
            CELERY_BROKER_URL=_through(settings.CELERY_BROKER_URL, broker),
            BOS_TOPIC_DLQ=dlq,
            BOS_HANDLER_MODULES="tasks.handlers.essays",  # not the test handlers
        )
        try:
            wait_for(
                lambda: proc.poll() is not None or "step=ready status=ok" in log.read_text(),
                timeout=90,
                what="the consumer to be ready",
            )
            assert proc.poll() is None, log.read_text()[-3000:]
            yield ConsumerUnderTest(proc, log, topic, dlq, group, database, broker)
        finally:
            stop(proc)


def _committed_past(consumer: ConsumerUnderTest, where: tuple[int, int]) -> bool:
    partition, offset = where
    return committed(consumer.group, consumer.topic).get(partition, -1) > offset


@pytest.mark.usefixtures("celery_worker")
def test_a_consumer_process_outlives_poison_and_outages_and_loses_nothing(
    consumer_process: ConsumerUnderTest,
) -> None:
    consumer = consumer_process
    pid = consumer.proc.pid
    unrunnable = f"needs-test-handlers-{uuid.uuid4().hex[:6]}"
    publish_test_pipeline(unrunnable, [{"name": "echo", "handler": "test.echo", "mode": "per_item"}])

    # 1. The Celery broker is down when the batch's start is sent after commit: the batch
    #    is stored, its record committed, and it waits `accepted` for the reconciler.
    consumer.broker.shut()
    start_lost = request_message(external_id=f"start-lost-{uuid.uuid4().hex[:6]}")
    (where,) = _send(consumer.topic, [(b"acme:start-lost", _encoded(start_lost))])
    wait_for(
        lambda: _committed_past(consumer, where), timeout=60, interval=0.5, what="the record to be committed"
    )
    assert Batch.objects.get(external_id=start_lost["data"]["external_id"]).state == "accepted"
    assert consumer.logged("was not sent (OperationalError")
    assert consumer.alive()
    consumer.broker.open()

    # 2. The database is unreachable: the record is read again, with backoff, until stored.
    consumer.database.shut()
    waited = request_message(external_id=f"waited-for-db-{uuid.uuid4().hex[:6]}")
    (where,) = _send(consumer.topic, [(b"acme:waited", _encoded(waited))])
    wait_for(
        lambda: consumer.logged("transient failure (OperationalError"), timeout=60, what="a transient failure"
    )
    wait_for(lambda: consumer.logged("backing off 2.0s"), timeout=60, what="the backoff to grow")
    assert consumer.alive()
    assert not Batch.objects.filter(external_id=waited["data"]["external_id"]).exists()
    assert not _committed_past(consumer, where)
    consumer.database.open()
    stored = wait_for(
        lambda: Batch.objects.filter(external_id=waited["data"]["external_id"]).first(),
        timeout=90,
        what="the request to be stored once the database is back",
    )

    # 3. The poison corpus, then good requests after it.
    kinds = corpus(unrunnable=unrunnable)
    assert len(kinds) >= 30
    goods = [request_message(external_id=f"good-after-poison-{n}-{uuid.uuid4().hex[:6]}") for n in range(3)]
    placed = _send(
        consumer.topic,
        [(p.key, p.value) for p in kinds] + [(b"acme:good", _encoded(g)) for g in goods],
    )
    dlq = read_topic(consumer.dlq, min_records=len(kinds), timeout=120)
    by_source = {
        (int(h["bos-source-partition"]), int(h["bos-source-offset"])): (r, h)
        for r in dlq
        for h in [headers_of(r)]
    }
    assert len(dlq) == len(by_source) == len(kinds), [h["bos-error"] for _, h in by_source.values()]
    for poison, source in zip(kinds, placed, strict=False):
        record, headers = by_source[source]
        validate_headers("dlq", headers)
        assert headers["bos-error-class"] == poison.code, (poison.name, headers)
        assert headers["bos-error"], poison.name
        assert headers["bos-source-topic"] == consumer.topic
        assert record.key == poison.key, poison.name
        if poison.name == "2 MB":
            assert headers["bos-truncated"] == "true" and headers["bos-original-size"] == str(TWO_MB)
            assert poison.value is not None and poison.value.startswith(record.value)
            assert 1_000_000 < len(record.value) <= settings.BOS_KAFKA_DLQ_MAX_BYTES
        else:
            assert record.value == poison.value and "bos-truncated" not in headers, poison.name

    for good in goods:
        batch = wait_for(
            lambda good=good: Batch.objects.filter(external_id=good["data"]["external_id"]).first(),
            timeout=60,
            what="a good request after the poison",
        )
        assert wait_for_terminal(batch.id, timeout=120).state == "completed"
    assert wait_for_terminal(stored.id, timeout=120).state == "completed"

    # 4. The start lost while the broker was down is sent by the reconciler (its clock
    #    driven past the stale window, not shortened).
    lost = Batch.objects.get(external_id=start_lost["data"]["external_id"])
    assert lost.state == "accepted"
    assert str(lost.id) in reconcile(now=timezone.now() + timedelta(days=1)).started
    assert wait_for_terminal(lost.id, timeout=120).state == "completed"

    # Nothing twice, nothing lost, and the same process all along.
    ids = [m["data"]["external_id"] for m in [start_lost, waited, *goods]]
    assert Batch.objects.filter(external_id__in=ids).count() == len(ids)
    assert BatchItem.objects.filter(batch__external_id__in=ids).count() == 5 * len(ids)
    assert consumer.alive() and consumer.proc.pid == pid
    assert not consumer.logged("Traceback"), "an unclassified failure: see " + str(consumer.log)
    stop(consumer.proc)
    assert consumer.proc.returncode == 0
