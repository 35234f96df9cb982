"""bos_project.devservices: embedded PostgreSQL, Redis and Kafka broker under a private BOS_HOME.

The CLI runs in subprocesses (as `make` runs it), against a temporary .bos folder under /tmp
(short, for the PostgreSQL socket) with the service variables removed, so the embedded
services are started fresh and never collide with a developer's own `.bos`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bos_project import devservices

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SERVICE_VARS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "KAFKA_BOOTSTRAP_SERVERS")


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `python -m bos_project.devservices ARGS` with the current (patched) environment."""
    result = subprocess.run(
        [sys.executable, "-m", "bos_project.devservices", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"devservices {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def pids(home: Path) -> dict[str, int | None]:
    """The server pids recorded under a .bos folder (None when absent)."""

    def first_int(path: Path) -> int | None:
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    return {
        "postgres": first_int(home / "postgres" / "postmaster.pid"),
        "redis": first_int(home / "redis.pid"),
        "kafka": first_int(home / "kafka.pid"),
    }


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return devservices._pid_alive(pid, "")


def postgres_select_one(url: str) -> int:
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def bos_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="bos-", dir="/tmp"))  # noqa: S108 - short socket path
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BOS_HOME", str(home))
        for name in SERVICE_VARS:
            mp.delenv(name, raising=False)
        yield home
        cli("down", check=False)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def services(bos_home: Path) -> dict[str, str]:
    """`up` from cold; returns services.env as a dict."""
    started = time.monotonic()
    result = cli("up")
    print(f"cold up took {time.monotonic() - started:.1f}s\n{result.stderr}")
    return devservices.read_services_env(bos_home / "services.env")


@pytest.mark.integration
def test_up_writes_all_four_urls(bos_home: Path, services: dict[str, str]) -> None:
    assert list(services) == list(SERVICE_VARS)
    assert services["CELERY_BROKER_URL"] == services["REDIS_URL"]
    assert services["DATABASE_URL"].startswith("postgres://postgres@127.0.0.1:")
    assert services["DATABASE_URL"].endswith("/bos")
    assert services["REDIS_URL"].startswith("redis://127.0.0.1:")
    assert services["KAFKA_BOOTSTRAP_SERVERS"].startswith("127.0.0.1:")
    for default in (":5432/", ":6379/"):
        assert default not in services["DATABASE_URL"] + services["REDIS_URL"]
    assert not services["KAFKA_BOOTSTRAP_SERVERS"].endswith(":9092")
    assert cli("env").stdout == (bos_home / "services.env").read_text()


@pytest.mark.integration
def test_postgres_accepts_queries(services: dict[str, str]) -> None:
    assert postgres_select_one(services["DATABASE_URL"]) == 1


@pytest.mark.integration
def test_redis_answers_ping(services: dict[str, str]) -> None:
    import redis

    client = redis.Redis.from_url(services["REDIS_URL"], socket_timeout=5)
    try:
        assert client.ping()
    finally:
        client.close()


@pytest.mark.integration
def test_kafka_round_trip(services: dict[str, str]) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    bootstrap = services["KAFKA_BOOTSTRAP_SERVERS"]
    topic = f"devservices-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for i in range(3):
            producer.send(topic, f"message-{i}".encode(), partition=0)
        producer.flush(timeout=10)
    finally:
        producer.close()

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    partition = TopicPartition(topic, 0)
    try:
        consumer.assign([partition])
        consumer.seek(partition, 0)
        received: list[bytes] = []
        deadline = time.monotonic() + 15
        while len(received) < 3 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(record.value for record in records)
        # highwater(), not end_offsets(): the broker's ListOffsets is wrong after batched sends.
        assert received == [b"message-0", b"message-1", b"message-2"]
        assert consumer.highwater(partition) == 3
    finally:
        consumer.close()


@pytest.mark.integration
def test_second_up_reuses_running_services(bos_home: Path, services: dict[str, str]) -> None:
    before = pids(bos_home)
    assert all(alive(pid) for pid in before.values()), before

    cli("up")

    assert devservices.read_services_env(bos_home / "services.env") == services
    assert pids(bos_home) == before


@pytest.mark.integration
def test_postgres_restarts_on_the_same_url(bos_home: Path, services: dict[str, str]) -> None:
    import psycopg

    old_pid = pids(bos_home)["postgres"]
    cli("stop-service", "postgres")
    assert not alive(old_pid)
    with pytest.raises(psycopg.OperationalError):
        postgres_select_one(services["DATABASE_URL"])

    restarted = cli("start-service", "postgres")

    assert restarted.stdout.strip() == services["DATABASE_URL"]
    assert postgres_select_one(services["DATABASE_URL"]) == 1
    assert alive(pids(bos_home)["redis"]) and alive(pids(bos_home)["kafka"])


@pytest.mark.integration
def test_down_stops_everything_and_run_stops_what_it_started(bos_home: Path) -> None:
    cli("up")
    running = pids(bos_home)

    cli("down")

    assert not any(alive(pid) for pid in running.values()), running
    assert not (bos_home / "redis.pid").exists() and not (bos_home / "kafka.pid").exists()

    script = "import os, sys; print(os.environ['DATABASE_URL']); sys.exit(3)"
    result = cli("run", "--", sys.executable, "-c", script, check=False)

    assert result.returncode == 3, result.stderr
    in_use = devservices.read_services_env(bos_home / "services.env")
    assert result.stdout.strip() == in_use["DATABASE_URL"]
    assert not any(alive(pid) for pid in pids(bos_home).values())
