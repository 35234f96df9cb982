"""Chaos: real processes killed mid-flight; nothing is lost, nothing is done twice.

Each scenario checks the end state, the item counts, the transition history and the
outbox (`bos_check` finds nothing), not only that something finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from django.conf import settings
from django.core.management import call_command

from bos_project.settings.environment import BASE_DIR
from orchestrator.kafka.clients import ensure_topics
from orchestrator.models import Batch, ChunkRun, ItemResult, OutboxEvent, PhaseRun, ProcessedEvent
from orchestrator.services.batches import batch_create
from orchestrator.services.reconcile import reconcile
from tests.conftest import database_url
from tests.support.factories import batch_request, publish_test_pipeline, request_message
from tests.support.handlers import handler_calls
from tests.support.kafka import send_requests
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = [pytest.mark.chaos]


def spawn(args: list[str], **env: str) -> subprocess.Popen[bytes]:
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=full_env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def assert_consistent(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("bos_check")  # raises if anything is inconsistent
    assert "consistent" in capsys.readouterr().out


def start_chaos_batch(size: int, *, started_chunks: int) -> Batch:
    """A batch of `size` items in chunks of 10 (0.5 s each), once `started_chunks` are done."""
    publish_test_pipeline(
        "chaos",
        [
            {
                "name": "work",
                "handler": "test.slow",
                "mode": "per_item",
                "chunk_size": 10,
                "options": {"seconds": 0.05},
            },
            {"name": "count", "handler": "test.count", "mode": "per_batch", "after": ["work"]},
        ],
    )
    items = [{"key": f"i{n}", "payload": {}} for n in range(size)]
    batch = batch_create(request=batch_request(pipeline="chaos", items=items), actor="test").batch
    wait_for(
        lambda: ChunkRun.objects.filter(phase_run__batch=batch).count() >= started_chunks,
        timeout=60,
        what="work to start",
    )
    return batch


def recover(batch: Batch, *, timeout: float, what: str) -> float:
    """Run the reconciler (at the default lease) until the batch ends, as beat would; the
    seconds it took."""
    started = time.monotonic()

    def done() -> bool:
        try:
            reconcile()
        except Exception:  # noqa: BLE001 - a service may still be settling; try again next round
            return False
        return Batch.objects.get(id=batch.id).is_terminal

    wait_for(done, timeout=timeout, interval=2, what=what)
    return time.monotonic() - started


def assert_nothing_lost(batch: Batch, size: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Completed, every item recorded once per phase, one completion event, bos_check clean."""
    batch = Batch.objects.get(id=batch.id)
    assert batch.state == "completed", batch.error
    assert (batch.items_succeeded, batch.items_failed) == (size, 0)
    assert ItemResult.objects.filter(phase_run__batch=batch, phase_run__name="work").count() == size
    assert ChunkRun.objects.filter(phase_run__batch=batch).count() == size // 10
    assert batch.phases.get(name="count").output == {"items": size}
    assert OutboxEvent.objects.filter(batch=batch, event_type="batch.completed").count() == 1
    assert_consistent(capsys)


def start_beat(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A real `celery beat` at the default schedule: the reconciler every 10 s."""
    return spawn(["-m", "celery", "-A", "bos_project", "beat", "-s", str(tmp_path / "beat-schedule")])


def counted_batch(size: int, run: str) -> Batch:
    """A batch of `size` items in chunks of 100 (`test.counted`, 5 ms an item)."""
    publish_test_pipeline(
        "chaos-counted",
        [
            {
                "name": "work",
                "handler": "test.counted",
                "mode": "per_item",
                "chunk_size": 100,
                "options": {"seconds": 0.005},
            },
            {"name": "count", "handler": "test.count", "mode": "per_batch", "after": ["work"]},
        ],
    )
    items = [{"key": f"i{n}", "payload": {}} for n in range(size)]
    request = batch_request(pipeline="chaos-counted", items=items, metadata={"run": run})
    return batch_create(request=request, actor="test").batch


def assert_every_item_once(batch: Batch, size: int, run: str, capsys: pytest.CaptureFixture[str]) -> int:
    """Completed, each item's result stored once, its handler called at most twice; the
    most calls of any item."""
    done = Batch.objects.get(id=batch.id)
    assert done.state == "completed", done.error
    assert (done.items_succeeded, done.items_failed) == (size, 0)
    results = ItemResult.objects.filter(phase_run__batch=batch, phase_run__name="work")
    assert results.count() == results.values("item_id").distinct().count() == size
    calls = handler_calls(run)
    assert len(calls) == size
    assert max(calls.values()) <= 2, sorted(calls.items(), key=lambda kv: -kv[1])[:5]
    assert done.phases.get(name="count").output == {"items": size}
    assert OutboxEvent.objects.filter(batch=batch, event_type="batch.completed").count() == 1
    assert_consistent(capsys)
    return max(calls.values())


def wait_for_chunks(batch: Batch, n: int) -> None:
    wait_for(
        lambda: ChunkRun.objects.filter(phase_run__batch=batch).count() >= n,
        timeout=120,
        what="work to start",
    )


@pytest.mark.usefixtures("celery_worker", "transactional_db")
@pytest.mark.parametrize("victim", ["pool process", "whole worker"])
def test_a_killed_worker_costs_seconds_at_default_settings(
    victim: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill -9 mid-phase of a 10,000-item batch, with beat at its default schedule."""
    worker = spawn(
        ["-m", "celery", "-A", "bos_project", "worker", "-c", "2", "-n", f"victim-{uuid.uuid4().hex[:6]}@%h"]
    )
    beat = start_beat(tmp_path)
    run = uuid.uuid4().hex
    try:
        wait_for(
            lambda: len(psutil.Process(worker.pid).children()) >= 2, timeout=60, what="the victim's pool"
        )
        time.sleep(3)  # the victim is taking tasks
        batch = counted_batch(10_000, run)
        wait_for_chunks(batch, 5)
        if victim == "pool process":
            for _ in range(2):  # twice, a second apart
                children = psutil.Process(worker.pid).children()
                os.kill(children[0].pid, signal.SIGKILL)
                time.sleep(1)
        else:
            kill_group(worker)
        killed_at = time.monotonic()
        wait_for(
            lambda: Batch.objects.get(id=batch.id).is_terminal, timeout=180, interval=0.5, what="the end"
        )
        recovered_in = time.monotonic() - killed_at
    finally:
        for proc in (worker, beat):
            if proc.poll() is None:
                kill_group(proc)
    most = assert_every_item_once(batch, 10_000, run, capsys)
    assert recovered_in < 60, f"{recovered_in:.1f} s from the kill to the end"
    print(
        f"\nkill -9 of a {victim}: 10,000 items, 0 lost, at most {most} calls an item, ended {recovered_in:.1f} s after the kill"
    )


@pytest.mark.usefixtures("celery_worker", "transactional_db")
def test_chunks_queued_behind_a_backlog_longer_than_the_lease_are_not_sent_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """2,000 one-item chunks wait behind each other for longer than a lease; beat runs."""
    publish_test_pipeline(
        "backlog",
        [
            {
                "name": "work",
                "handler": "test.counted",
                "mode": "per_item",
                "chunk_size": 1,
                "options": {"seconds": 0.1},
            }
        ],
    )
    run = uuid.uuid4().hex
    beat = start_beat(tmp_path)
    try:
        items = [{"key": f"i{n}", "payload": {}} for n in range(2000)]
        request = batch_request(pipeline="backlog", items=items, metadata={"run": run})
        started = time.monotonic()
        batch = batch_create(request=request, actor="test").batch
        done = wait_for_terminal(batch.id, timeout=300)
        took = time.monotonic() - started
    finally:
        kill_group(beat)
    assert done.state == "completed", done.error
    assert took > settings.BOS_LEASE_SECONDS + settings.BOS_RECONCILE_INTERVAL_SECONDS  # a real backlog
    calls = handler_calls(run)
    assert sum(calls.values()) == len(calls) == 2000  # handler calls equal items, exactly
    assert PhaseRun.objects.get(batch=batch, name="work").reconciled_at is None
    assert_consistent(capsys)
    print(
        f"\nbacklog: 2,000 chunks over {took:.0f} s (lease {settings.BOS_LEASE_SECONDS:.0f} s), 0 sent again"
    )


@pytest.mark.usefixtures("transactional_db", "essay_pipeline")
def test_a_consumer_killed_with_1000_requests_in_flight_makes_exactly_1000_batches() -> None:
    group = f"chaos-{uuid.uuid4().hex[:6]}"
    topic = f"{settings.BOS_TOPIC_REQUESTS}.{group}"
    ensure_topics([topic])
    messages = [request_message(items=[{"key": "e", "payload": {"text": "a b c d"}}]) for _ in range(1000)]
    send_requests(messages, topic=topic)
    # Its batches' tasks go to queues no worker serves: this is about ingestion only.
    env = {"BOS_QUEUE_PREFIX": f"{group}.", "BOS_LOG_LEVEL": "WARNING"}
    args = [
        "manage.py",
        "consume_batches",
        "--topic",
        topic,
        "--group",
        group,
        "--session-timeout-ms",
        "6000",
    ]
    first = spawn(args, **env)
    try:
        wait_for(lambda: Batch.objects.count() >= 200, timeout=90, what="the first consumer to store some")
    finally:
        kill_group(first)  # kill -9 mid-stream: uncommitted offsets are read again
    at_kill = Batch.objects.count()
    second = spawn(args, **env)
    try:
        wait_for(lambda: Batch.objects.count() >= 1000, timeout=180, what="all 1000 batches")
        time.sleep(3)  # anything extra would show up now
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    assert at_kill < 1000
    assert Batch.objects.count() == 1000
    assert ProcessedEvent.objects.count() == 1000
    ids = {m["data"]["external_id"] for m in messages}
    assert set(Batch.objects.values_list("external_id", flat=True)) == ids
    # The start tasks of these batches went to queues of their own: drop them.
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{group}.*"):
        client.delete(key)
    print(f"\nconsumer kill -9 after {at_kill} batches: 1000 requests, 1000 batches, 0 lost, 0 duplicated")


POISON_KAFKA: list[tuple[str, Any]] = [
    ("invalid_json", b"{not json"),
    ("invalid_json", b"\xff\xfe\x00"),
    ("empty_message", None),
    ("invalid_schema", b"[1, 2, 3]"),
    ("invalid_schema", b'"just a string"'),
    ("invalid_schema", {"event_type": "batch.requested", "schema_version": 1, "tenant": "acme", "data": {}}),
    (
        "invalid_schema",
        {"event_id": "x", "event_type": "batch.exploded", "schema_version": 1, "tenant": "acme", "data": {}},
    ),
    (
        "invalid_schema",
        {"event_id": "x", "event_type": "batch.requested", "schema_version": 7, "tenant": "acme", "data": {}},
    ),
    (
        "invalid_schema",
        {
            "event_id": "x",
            "event_type": "batch.requested",
            "schema_version": 1,
            "tenant": "ACME!",
            "data": {},
        },
    ),
    ("invalid_schema", "no-items"),
    ("invalid_schema", "duplicate-keys"),
    ("invalid_schema", "priority-11"),
    ("invalid_schema", "naive-deadline"),
    ("invalid_schema", "long-key"),
    ("unknown_pipeline", "unknown-pipeline"),
    ("unknown_pipeline_version", "unknown-version"),
    ("too_many_items", "too-many-items"),
    ("too_large", "too-large"),
    ("item_too_large", "item-too-large"),
    ("batch_not_found", "cancel-unknown"),
    ("invalid_schema", "cancel-without-external-id"),
]


def _poison(kind: str) -> bytes:
    base = request_message()
    data = base["data"]
    if kind == "no-items":
        data["items"] = []
    elif kind == "duplicate-keys":
        data["items"] = [{"key": "a"}, {"key": "a"}]
    elif kind == "priority-11":
        data["priority"] = 11
    elif kind == "naive-deadline":
        data["deadline"] = "2026-11-29T10:00:00"
    elif kind == "long-key":
        data["items"] = [{"key": "k" * 500}]
    elif kind == "unknown-pipeline":
        data["pipeline"] = "no-such-pipeline"
    elif kind == "unknown-version":
        data["pipeline_version"] = 99
    elif kind == "too-many-items":
        data["items"] = [{"key": f"k{n}"} for n in range(settings.BOS_MAX_ITEMS + 1)]
    elif kind == "too-large":
        data["items"] = [{"key": "a", "payload": {"text": "x" * 300_000}}]
    elif kind == "item-too-large":  # a message under its limit, one item over BOS_MAX_ITEM_BYTES
        data["items"] = [{"key": "a", "payload": {"text": "x" * 100_000}}]
    elif kind == "cancel-unknown":
        base.update(event_type="batch.cancel_requested", data={"external_id": "never-was"})
    elif kind == "cancel-without-external-id":
        base.update(event_type="batch.cancel_requested", data={})
    return json.dumps(base).encode()


@pytest.mark.usefixtures("celery_worker", "essay_pipeline")
def test_poison_on_kafka_is_dead_lettered_with_reasons_and_the_rest_goes_on(
    request_consumer: Any, settings: Any
) -> None:
    from tests.integration.test_batch_flow import consume_until
    from tests.support.kafka import headers_of, read_topic, send_raw

    settings.BOS_MAX_MESSAGE_BYTES = 200_000
    settings.BOS_MAX_ITEM_BYTES = 50_000
    before = len(read_topic(settings.BOS_TOPIC_DLQ, timeout=3))
    good = request_message(external_id="good-among-poison")
    values: list[tuple[bytes | None, bytes | None]] = []
    for n, (_, value) in enumerate(POISON_KAFKA):
        raw = (
            value
            if isinstance(value, bytes | type(None))
            else (json.dumps(value).encode() if isinstance(value, dict) else _poison(value))
        )
        values.append((f"poison:{n}".encode(), raw))
        if n == 10:
            values.append((b"acme:good", json.dumps(good).encode()))
    send_raw(settings.BOS_TOPIC_REQUESTS, values)
    assert consume_until(request_consumer, processed=len(values), timeout=60) == len(POISON_KAFKA)

    dlq = read_topic(settings.BOS_TOPIC_DLQ, min_records=before + len(POISON_KAFKA))[before:]
    by_key = {r.key: headers_of(r) for r in dlq}
    for n, (expected, _) in enumerate(POISON_KAFKA):
        headers = by_key[f"poison:{n}".encode()]
        assert headers["bos-error-class"] == expected, (n, headers)
        assert headers["bos-error"] and headers["bos-source-topic"] == settings.BOS_TOPIC_REQUESTS
    batch = wait_for(
        lambda: Batch.objects.filter(external_id="good-among-poison").first(), what="the good batch"
    )
    wait_for(lambda: Batch.objects.get(id=batch.id).state == "completed", what="the good batch to complete")


@pytest.mark.usefixtures("transactional_db", "essay_pipeline", "held_batches")
def test_poison_on_rest_is_refused_with_4xx_codes_and_nothing_stored() -> None:
    from tests.integration.test_api import body, client_for

    api = client_for("op", "acme", "operator")
    bad: list[tuple[Any, str]] = [
        ("{not json", "parse_error"),
        ("[]", "invalid_request"),
        ({}, "invalid_request"),
        (body(items=[]), "invalid_request"),
        (body(items="essays"), "invalid_request"),
        (body(items=[{"key": "a"}, {"key": "a"}]), "invalid_request"),
        (body(items=[{"payload": {}}]), "invalid_request"),
        (body(items=[{"key": "k" * 500}]), "invalid_request"),
        (body(priority=-1), "invalid_request"),
        (body(priority="high"), "invalid_request"),
        (body(tenant="Not A Tenant"), "invalid_request"),
        (body(tenant="globex"), "forbidden"),
        (body(external_id=""), "invalid_request"),
        (body(external_id="x" * 500), "invalid_request"),
        (body(deadline="soon"), "invalid_request"),
        (body(metadata=["not", "a", "dict"]), "invalid_request"),
        (body(pipeline="no-such-pipeline"), "unknown_pipeline"),
        (body(pipeline_version=42), "unknown_pipeline_version"),
        (body(pipeline_version=0), "invalid_request"),
        (body(items=[{"key": f"k{n}"} for n in range(settings.BOS_MAX_ITEMS + 1)]), "too_many_items"),
    ]
    for payload, code in bad:
        if isinstance(payload, str):
            response = api.post("/api/v1/batches/", payload, content_type="application/json")
        else:
            response = api.post("/api/v1/batches/", payload, format="json")
        assert 400 <= response.status_code < 500, (payload, response.status_code)
        assert response.json()["code"] == code, (str(payload)[:80], response.json())
        assert response.json()["message"]
    assert Batch.objects.count() == 0
    assert api.post("/api/v1/batches/", body(), format="json").status_code == 201


@pytest.mark.usefixtures("celery_worker", "transactional_db")
def test_a_redis_restart_mid_batch_loses_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.chaos.outages import restart_redis

    batch = start_chaos_batch(500, started_chunks=5)
    restart_redis(down_for=3)  # queued tasks and chord counters are gone with it
    recovered_in = recover(batch, timeout=180, what="the batch to end after the Redis restart")
    assert_nothing_lost(batch, 500, capsys)
    print(f"\nredis restart: 500 items, 0 lost, 0 duplicated, recovered in {recovered_in:.1f} s")


@pytest.mark.usefixtures("celery_worker", "transactional_db")
def test_postgres_cut_for_15_seconds_mid_batch_recovers_by_itself(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.chaos.outages import cut_postgres

    batch = start_chaos_batch(500, started_chunks=5)
    cut_postgres(down_for=15)  # tasks fail on the database and retry with backoff meanwhile
    # The reconciler only for what the retries did not recover by themselves.
    recovered_in = recover(batch, timeout=240, what="the batch to end after the database came back")
    assert_nothing_lost(batch, 500, capsys)
    print(f"\npostgres cut 15 s: 500 items, 0 lost, 0 duplicated, recovered in {recovered_in:.1f} s")


@pytest.mark.usefixtures("celery_worker", "transactional_db")
def test_a_dependency_down_for_a_while_opens_its_breaker_and_work_waits_then_completes(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from rest_framework.test import APIClient

    from orchestrator.breakers import NAMESPACE, breaker_states
    from orchestrator.models import PhaseRun

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{NAMESPACE}:test-scoring:*"):
        client.delete(key)
    publish_test_pipeline(
        "scored",
        [
            {
                "name": "score",
                "handler": "test.scoring",
                "mode": "per_item",
                "chunk_size": 10,
                "retry": {"max_attempts": 20, "base": 0.2, "cap": 1},
            }
        ],
    )
    gate = tmp_path / "down"
    gate.touch()
    items = [{"key": f"i{n}", "payload": {}} for n in range(100)]
    batch = batch_create(
        request=batch_request(pipeline="scored", items=items, metadata={"gate": str(gate)}), actor="t"
    ).batch

    def breaker_open() -> bool:
        return any(s["dependency"] == "test-scoring" and s["state"] == "open" for s in breaker_states())

    wait_for(breaker_open, timeout=60, what="the breaker to open")
    phase = wait_for(
        lambda: PhaseRun.objects.filter(batch=batch, waiting_on="test-scoring").first(), what="work to wait"
    )
    assert (
        phase.state == "running" and Batch.objects.get(id=batch.id).state == "running"
    )  # waiting, not failed
    metrics = APIClient().get("/metrics").content.decode()
    assert 'bos_circuit_open{dependency="test-scoring"} 1.0' in metrics

    time.sleep(3)
    gate.unlink()  # the service is back: the next probe closes the breaker
    started = time.monotonic()
    wait_for(lambda: Batch.objects.get(id=batch.id).is_terminal, timeout=120, what="the batch to end")
    done = Batch.objects.get(id=batch.id)
    assert done.state == "completed", done.error
    assert done.items_succeeded == 100
    assert not breaker_open()
    assert_consistent(capsys)
    print(
        f"\ndependency down: 100 items, 0 lost, 0 failed, breaker opened, recovered in {time.monotonic() - started:.1f} s"
    )
