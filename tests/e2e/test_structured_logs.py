"""Structured logs across processes: one batch's correlation id on the JSON lines of the
Kafka consumer, a Celery worker and the outbox publisher; and on HTTP requests."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from bos_project.settings.environment import BASE_DIR
from orchestrator.kafka.clients import ensure_topics
from orchestrator.kafka.consumer import BatchRequestConsumer
from orchestrator.models import Batch, OutboxEvent
from orchestrator.observability.logging import logging_config
from tests.conftest import LOG_DIR, database_url
from tests.support.factories import MembershipFactory, essay_items, request_message
from tests.support.kafka import send_requests
from tests.support.processes import free_port, stop
from tests.support.waiting import wait_for, wait_for_terminal, worker_answers

# Celery prints this itself on SIGTERM, past logging (celery.platforms.signals).
NOT_LOGGED = {"worker: Warm shutdown (MainProcess)"}


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the log, each of which must be one JSON object."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and line not in NOT_LOGGED]
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}:{number} is not JSON: {line[:200]!r}")
        assert isinstance(value, dict), f"{path.name}:{number} is not an object"
        for key in ("message", "level", "logger", "timestamp", "pid"):
            assert key in value, f"{path.name}:{number} has no {key!r}: {line[:200]}"
        parsed.append(value)
    return parsed


def start(argv: list[str], logs: Path, name: str, **env: str) -> subprocess.Popen[bytes]:
    """A process whose log (stderr) goes to `<name>.log`; a command's own output (stdout)
    to `<name>.out`."""
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        # The tests run as root, which Celery warns about before logging is set up.
        "PYTHONWARNINGS": "ignore:You're running the worker with superuser privileges",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, *argv],
        env=full_env,
        stdout=(logs / f"{name}.out").open("wb"),
        stderr=(logs / f"{name}.log").open("wb"),
        cwd=BASE_DIR,
    )


@pytest.mark.e2e
@pytest.mark.usefixtures("essay_pipeline", "kafka_topics")
def test_one_batch_correlation_id_is_on_json_lines_of_consumer_worker_and_publisher() -> None:

    run = uuid.uuid4().hex[:6]
    # Queues, topic and group of their own: only these processes see this batch.
    env = {"BOS_LOG_FORMAT": "json", "BOS_QUEUE_PREFIX": f"logs-{run}."}
    group = f"logs-{run}"
    topic = f"{settings.BOS_TOPIC_REQUESTS}.{group}"
    ensure_topics([topic])
    logs = LOG_DIR / f"structured-{run}"
    logs.mkdir(parents=True, exist_ok=True)
    node = f"logs-{run}@{socket.gethostname()}"
    celery = ["-m", "celery", "-A", "bos_project", "--quiet", "worker", "-c", "2", "-l", "info", "-n", node]
    worker = start([*celery, "--without-gossip", "--without-mingle"], logs, "worker", **env)
    consume = [
        "manage.py",
        "consume_batches",
        "--topic",
        topic,
        "--group",
        group,
        "--session-timeout-ms",
        "6000",
    ]
    consumer = start(consume, logs, "consumer", **env)
    publisher = start(["manage.py", "publish_outbox"], logs, "publisher", **env)
    # More items than run inline in the start task: the phases run as tasks of their own.
    message = request_message(items=essay_items(settings.BOS_INLINE_MAX_ITEMS + 2))
    cid = message["correlation_id"] = f"trace-{run}"
    try:
        wait_for(lambda: worker_answers(node), timeout=60, what="the worker")
        send_requests([message], topic=topic)
        batch = wait_for(
            lambda: Batch.objects.filter(external_id=message["data"]["external_id"]).first(),
            timeout=60,
            what="the batch",
        )
        batch = wait_for_terminal(batch.id, timeout=120)
        wait_for(
            lambda: not OutboxEvent.objects.filter(key=str(batch.id), published_at__isnull=True).exists(),
            timeout=60,
            what="the batch's events published",
        )
    finally:
        for proc in (consumer, publisher):
            proc.send_signal(signal.SIGTERM)
        worker.send_signal(signal.SIGTERM)
        for proc in (consumer, publisher, worker):
            stop(proc)  # type: ignore[arg-type]
    assert batch.correlation_id == cid
    batch_id = str(batch.id)

    lines = {name: json_lines(logs / f"{name}.log") for name in ("consumer", "worker", "publisher")}
    ours = {
        name: [line for line in found if line.get("correlation_id") == cid] for name, found in lines.items()
    }
    for name, found in ours.items():
        assert found, f"no {name} line carries correlation id {cid}"
        assert all(line["batch_id"] == batch_id and line["tenant"] == "acme" for line in found), found
    # Three processes, not one.
    pids = {name: {line["pid"] for line in found} for name, found in ours.items()}
    assert not (pids["consumer"] & pids["worker"]) and not (pids["worker"] & pids["publisher"])

    assert any("batch.requested: batch" in line["message"] for line in ours["consumer"])
    # Every task of the batch ran in its context: the task id, and the phase where it has one.
    tasks = [line for line in ours["worker"] if "task_id" in line]
    assert tasks, ours["worker"]
    assert {"validate", "spellcheck", "aggregate"} <= {line.get("phase") for line in tasks}, tasks
    published = {
        line["message"].split()[1] for line in ours["publisher"] if line["message"].startswith("published")
    }
    assert {"batch.accepted", "batch.completed"} <= published, published
    # No line of another batch borrowed this one's id.
    for found in lines.values():
        assert all(line.get("batch_id") == batch_id for line in found if line.get("correlation_id") == cid)


@pytest.fixture
def operator(transactional_db: None) -> APIClient:
    membership = MembershipFactory(tenant__slug="acme")
    client = APIClient()
    client.force_authenticate(membership.user)
    return client


def test_http_response_echoes_the_callers_correlation_id(operator: APIClient) -> None:
    response = operator.get("/api/v1/batches/", HTTP_X_CORRELATION_ID="caller-123")
    assert response.status_code == 200
    assert response["X-Correlation-ID"] == "caller-123"


def test_http_request_without_a_usable_correlation_id_gets_a_new_one(operator: APIClient) -> None:
    first = operator.get("/api/v1/batches/")["X-Correlation-ID"]
    second = operator.get("/api/v1/batches/", HTTP_X_CORRELATION_ID="x" * 201)["X-Correlation-ID"]
    assert len(first) == 32 and len(second) == 32 and first != second


@pytest.mark.usefixtures("essay_pipeline", "held_batches")
def test_rest_batch_without_correlation_id_takes_the_requests(operator: APIClient) -> None:
    body = {
        "tenant": "acme",
        "external_id": f"rest-{uuid.uuid4().hex[:8]}",
        "pipeline": "essay-analysis",
        "items": essay_items(2),
    }
    response = operator.post("/api/v1/batches/", body, format="json", HTTP_X_CORRELATION_ID="rest-trace-1")
    assert response.status_code == 201, response.content
    assert Batch.objects.get(id=response.json()["id"]).correlation_id == "rest-trace-1"


@pytest.mark.usefixtures("essay_pipeline")
def test_a_dead_lettered_request_is_logged_with_its_correlation_id(
    request_consumer: BatchRequestConsumer,
) -> None:
    stream = io.StringIO()
    formatter = logging_config(fmt="json", level="INFO")["formatters"]["structlog"]
    factory = formatter.pop("()")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(factory(**formatter))
    consumer_log = logging.getLogger("orchestrator.kafka.consumer")
    consumer_log.addHandler(handler)
    message = request_message(items=[{"key": "same", "payload": {}}, {"key": "same", "payload": {}}])
    message["correlation_id"] = cid = f"bad-{uuid.uuid4().hex[:6]}"
    try:
        send_requests([message])

        def dead_lettered() -> bool:
            request_consumer.poll_once()
            return cid in stream.getvalue()

        wait_for(dead_lettered, timeout=60, what="the dead-letter line")
    finally:
        consumer_log.removeHandler(handler)
    ours = [json.loads(line) for line in stream.getvalue().splitlines() if cid in line]
    assert any(line["level"] == "warning" and line["tenant"] == "acme" for line in ours), ours
    assert not Batch.objects.filter(external_id=message["data"]["external_id"]).exists()


@pytest.mark.e2e
@pytest.mark.usefixtures("transactional_db")
def test_gunicorns_own_lines_are_json_and_its_access_line_carries_the_correlation_id() -> None:
    import httpx

    port = free_port()
    logs = LOG_DIR / f"gunicorn-{uuid.uuid4().hex[:6]}"
    logs.mkdir(parents=True, exist_ok=True)
    argv = ["-m", "gunicorn", "bos_project.wsgi", "-c", "python:bos_project.gunicorn_conf"]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--access-logfile", "-"]
    web = start(argv, logs, "web", BOS_LOG_FORMAT="json")
    try:

        def answered() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Correlation-ID": "web-42"})
            except httpx.TransportError:
                return None

        response = wait_for(answered, timeout=60, interval=0.2, what="gunicorn")
        assert response.headers["X-Correlation-ID"] == "web-42"
    finally:
        stop(web)  # type: ignore[arg-type]
    # Gunicorn's access and error lines go to the root handler, as every other line does.
    lines = json_lines(logs / "web.log")
    assert not (logs / "web.out").read_text().strip()
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    assert any(line.get("correlation_id") == "web-42" and "/healthz" in line["message"] for line in access)
    assert any(line["logger"] == "gunicorn.error" for line in lines)
