"""Running BOS commands as real processes in tests, and an embedded broker of their own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from bos_project.devservices import KafkaService
from bos_project.settings.environment import BASE_DIR
from tests.conftest import database_url


def start_command(*args: str, log: Path | None = None, **env: str) -> subprocess.Popen[str]:
    """`manage.py <args>` on the test database, with extra environment variables."""
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        **env,
    }
    out = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 - the caller's process owns it
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """SIGTERM, then wait; kill if it does not stop in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(port: int, log: Path) -> subprocess.Popen[bytes]:
    """A throw-away embedded Kafka-protocol broker (tansu, in memory) on `port`."""
    argv = KafkaService("kafka", "KAFKA_BOOTSTRAP_SERVERS", port, log.parent).argv(port)
    return subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
