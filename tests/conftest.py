"""Fixtures: a real Celery worker process, Kafka topics and consumer, published pipelines."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from bos_project.settings.environment import BASE_DIR, BOS_HOME
from orchestrator.config import invalidation, reload, store
from orchestrator.kafka.clients import ensure_topics
from orchestrator.kafka.consumer import BatchRequestConsumer
from orchestrator.kafka.publisher import OutboxPublisher
from tests.support.contracts import stored_event_problems
from tests.support.factories import publish_essay_pipeline, publish_test_pipeline
from tests.support.sending import HeldSender
from tests.support.waiting import worker_answers

LOG_DIR = BOS_HOME / "test-logs"
# Fixtures that give a test the database (pytest-django's; `django_db` marks do too).
DB_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback"}


def database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] or "postgres"
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class SupervisedWorker:
    """The test run's Celery worker, restarted when it exits, as a process supervisor
    restarts one in production (docs/operations.md): a worker may die of a broker outage
    (kombu's Redis transport can raise while restoring unacknowledged messages on a lost
    connection), and the tests after a chaos scenario need one running."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Any) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.restarts = 0
        self._stopping = threading.Event()
        self.proc = self._spawn()
        self._watch = threading.Thread(target=self._supervise, name="test-worker-supervisor", daemon=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=BASE_DIR
        )

    def start_watching(self) -> None:
        self._watch.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            if self.proc.poll() is not None and not self._stopping.is_set():
                self.restarts += 1
                self.log.write(
                    f"\n[supervisor] worker exited ({self.proc.returncode}); restarting\n".encode()
                )
                self.log.flush()
                self.proc = self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: None, django_db_blocker: object) -> Iterator[SupervisedWorker]:
    """A real `celery worker` process (prefork, 4 children) on the test database."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / "worker.log", "wb")  # noqa: SIM115 - closed at teardown
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings"}
    node = f"test-{os.environ['BOS_TEST_RUN_ID']}@%h"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bos_project",
        "worker",
        "-c",
        "4",
        "-l",
        "info",
        "-n",
        node,
        "--without-gossip",
        "--without-mingle",
    ]
    worker = SupervisedWorker(argv, env, log)
    deadline = time.monotonic() + 60
    while not worker_answers():
        if worker.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"test worker did not start; see {LOG_DIR / 'worker.log'}")
    worker.start_watching()
    yield worker
    worker.stop()
    log.close()


TESTS = Path(__file__).resolve().parent
# Each kind of test lives in its folder, and its folder is its marker (tests/README.md).
FOLDERS = ("unit", "integration", "e2e", "chaos", "contract", "browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its folder's kind, so `-m unit` (or any other) cannot miss one.

    A test outside those folders, or a `unit` test elsewhere (`-m unit` runs with no
    services), is a usage error naming it.
    """
    problems = []
    for item in items:
        parts = item.path.resolve().relative_to(TESTS).parts
        folder = parts[0] if len(parts) > 1 else ""
        if folder not in FOLDERS:
            problems.append(f"{item.nodeid}: tests live in tests/<{'|'.join(FOLDERS)}>/")
            continue
        if folder != "unit" and item.get_closest_marker("unit") is not None:
            problems.append(
                f"{item.nodeid}: marked unit but in tests/{folder}/ (unit tests live in tests/unit/)"
            )
        item.add_marker(getattr(pytest.mark, folder))
    if problems:
        raise pytest.UsageError("\n".join(problems))


@pytest.fixture(scope="session", autouse=True)
def flush_outlasts_a_worker_deadlock() -> Iterator[None]:
    """A transactional test's database is flushed (TRUNCATE) at its end while the session's
    worker may still finish that test's work (a rollback, a settle): PostgreSQL then picks
    one of the two as a deadlock's victim. When it is the TRUNCATE, it is tried again (the
    worker's transaction has ended by then) instead of failing the test's teardown."""
    from django.db.backends.postgresql.operations import DatabaseOperations
    from django.db.utils import OperationalError

    original = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self: Any, sql_list: list[str]) -> None:
        for attempt in range(1, 6):
            try:
                return original(self, sql_list)
            except OperationalError as exc:
                if "deadlock detected" not in str(exc) or attempt == 5:
                    raise
                time.sleep(0.2 * attempt)

    DatabaseOperations.execute_sql_flush = execute_sql_flush  # type: ignore[method-assign]
    yield
    DatabaseOperations.execute_sql_flush = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def runtime_config_starts_fresh(request: pytest.FixtureRequest) -> None:
    """Each test that uses the database starts at the default runtime configuration.

    A change made by an earlier test stays in Redis and in every process's cache even
    when its database rows were rolled back or flushed; a batch created next would take
    that test's `chunk_size`. So: drop the published version, tell the worker (it reads
    the database again, now the fresh one) and forget this process's values.
    """
    uses_db = bool(DB_FIXTURES & set(request.fixturenames)) or request.node.get_closest_marker("django_db")
    if not uses_db:
        return
    redis_client = store.client()
    redis_client.delete(store.REDIS_KEY)
    invalidation.announce(-1, redis_client)
    reload.reset()


@pytest.fixture(autouse=True)
def stored_events_match_their_schemas(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the database, every outbox event must match its schema.

    So any change that makes BOS emit an event its schema (schemas/events/) does not
    describe fails the tests that emit it. One query per such test; docs/contracts.md.
    """
    uses_db = bool(DB_FIXTURES & set(request.fixturenames)) or request.node.get_closest_marker("django_db")
    if not uses_db:
        yield
        return
    # Set the database up before this fixture's body, so the check below runs before the
    # database's own teardown (the rollback or flush that removes the test's rows).
    request.getfixturevalue("db")
    yield
    with request.getfixturevalue("django_db_blocker").unblock():
        problems = stored_event_problems()
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        pytest.fail(f"{len(problems)} stored event(s) break their schemas:\n  {shown}{more}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_topics() -> list[str]:
    topics = [settings.BOS_TOPIC_REQUESTS, settings.BOS_TOPIC_EVENTS, settings.BOS_TOPIC_DLQ]
    ensure_topics(topics)
    return topics


@pytest.fixture(scope="session")
def request_consumer(kafka_topics: list[str]) -> Iterator[BatchRequestConsumer]:
    consumer = BatchRequestConsumer(session_timeout_ms=6000, poll_timeout_ms=200)
    yield consumer
    consumer.close()


@pytest.fixture
def publisher(kafka_topics: list[str]) -> Iterator[OutboxPublisher]:
    pub = OutboxPublisher()
    yield pub
    pub.close()


@pytest.fixture
def essay_pipeline(transactional_db: None) -> None:
    publish_essay_pipeline()


@pytest.fixture
def test_pipelines(transactional_db: None) -> None:
    publish_test_pipeline(
        "echo",
        [
            {"name": "first", "handler": "test.echo", "mode": "per_item", "chunk_size": 4},
            {"name": "count", "handler": "test.count", "mode": "per_batch", "after": ["first"]},
        ],
    )
    publish_test_pipeline(
        "explodes",
        [
            {"name": "first", "handler": "test.echo", "mode": "per_item"},
            {"name": "boom", "handler": "test.explode", "mode": "per_batch", "after": ["first"]},
        ],
    )
    publish_test_pipeline(
        "gated",
        [
            {"name": "first", "handler": "test.echo", "mode": "per_item"},
            {"name": "gate", "handler": "test.gate", "mode": "per_batch", "after": ["first"]},
            {"name": "last", "handler": "test.count", "mode": "per_batch", "after": ["gate"]},
        ],
    )
    publish_test_pipeline(
        "compensated",
        [
            {"name": "first", "handler": "test.echo", "mode": "per_item", "compensate": "test.undo"},
            {
                "name": "second",
                "handler": "test.count",
                "mode": "per_batch",
                "after": ["first"],
                "compensate": "test.undo",
            },
            {
                "name": "third",
                "handler": "test.count",
                "mode": "per_batch",
                "after": ["second"],
                "compensate": "test.undo_gated",
            },
        ],
    )
    publish_test_pipeline(
        "self-healing",
        [
            {"name": "first", "handler": "test.echo", "mode": "per_item", "compensate": "test.undo"},
            {"name": "boom", "handler": "test.explode", "mode": "per_batch", "after": ["first"]},
        ],
        on_failure="rollback",
    )
    publish_test_pipeline(
        "slow",
        [
            {
                "name": "wait",
                "handler": "test.slow",
                "mode": "per_item",
                "chunk_size": 1,
                "options": {"seconds": 0.5},
            }
        ],
    )
    publish_test_pipeline(
        "parent",
        [
            {"name": "prepare", "handler": "test.echo", "mode": "per_item"},
            {"name": "child", "mode": "sub_pipeline", "pipeline": "slow", "after": ["prepare"]},
            {"name": "after", "handler": "test.count", "mode": "per_batch", "after": ["child"]},
        ],
    )


@pytest.fixture
def held_batches(monkeypatch: pytest.MonkeyPatch) -> HeldSender:
    """Nothing is sent to the workers: new batches stay `accepted`, started phases stay
    `running` until the test moves them, as when no worker is up.

    For tests that read or steer batches without running them, so a worker left
    running by another test cannot move them on underneath. The engine's one send seam
    (`orchestrator.workflows.SENDER`) holds what is sent; `lose()` drops it.
    """
    sender = HeldSender()
    monkeypatch.setattr("orchestrator.workflows.SENDER", sender)
    return sender


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run's own metrics folder goes with the run (tests/settings.py), once every
    process it started has ended; so do folders other test-settings processes left
    (mypy's Django plugin loads tests.settings too) that no live process uses."""
    import shutil
    from pathlib import Path

    from orchestrator.observability import multiprocess

    folder = Path(os.environ.get("BOS_METRICS_DIR", ""))
    if not folder.name.startswith("metrics-test-"):
        return
    shutil.rmtree(folder, ignore_errors=True)
    for other in folder.parent.glob("metrics-test-*"):
        if not set(multiprocess.registered(other)) - multiprocess.dead_processes(other):
            shutil.rmtree(other, ignore_errors=True)
