"""Flower always asks for a login (CONTRACT §1: BOS_FLOWER_USER / BOS_FLOWER_PASSWORD):
the real `celery flower` process started as the Procfile starts it."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bos_project.settings.environment import BASE_DIR
from tests.support.processes import free_port, stop

pytestmark = pytest.mark.integration


def procfile_flower_argv(port: int) -> list[str]:
    """The Procfile's flower line, with the test's port."""
    line = next(x for x in (BASE_DIR / "Procfile").read_text().splitlines() if x.startswith("flower:"))
    argv = line.split(":", 1)[1].split()
    argv = [a.replace("${BOS_FLOWER_PORT:-5555}", str(port)) for a in argv]
    assert argv[0] == "celery"
    return [str(Path(sys.executable).parent / "celery"), *argv[1:]]


def wait_for_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "flower exited"
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError(f"flower did not answer at {url}")


@pytest.fixture
def flower_home(tmp_path: Path) -> Path:
    return tmp_path


def start_flower(port: int, home: Path, **env: str) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "BOS_HOME": str(home), **env}
    for name in ("BOS_FLOWER_USER", "BOS_FLOWER_PASSWORD"):
        if name not in env:
            full_env.pop(name, None)
    return subprocess.Popen(
        procfile_flower_argv(port),
        cwd=BASE_DIR,
        env=full_env,
        stdout=open(home / "flower.log", "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
def running_flower(flower_home: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = start_flower(port, flower_home, BOS_FLOWER_USER="ops", BOS_FLOWER_PASSWORD="flower-pass-1")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/", proc)
        yield url, proc
    finally:
        stop(proc)  # type: ignore[arg-type]


def test_flower_refuses_pages_and_api_without_the_login(running_flower: tuple[str, object]) -> None:
    url, _ = running_flower
    for path in ("/", "/tasks", "/workers"):
        answer = httpx.get(url + path, timeout=10)
        assert answer.status_code == 401, path
        assert "Basic" in answer.headers.get("www-authenticate", ""), path  # a browser asks for it
    assert httpx.get(url + "/api/tasks", timeout=10).status_code == 401
    assert httpx.get(url + "/", auth=("ops", "wrong"), timeout=10).status_code == 401


def test_flower_serves_its_pages_with_the_configured_login(running_flower: tuple[str, object]) -> None:
    url, _ = running_flower
    answer = httpx.get(url + "/tasks", auth=("ops", "flower-pass-1"), timeout=10)
    assert answer.status_code == 200
    assert "Flower" in answer.text


def test_flower_uses_the_generated_development_password_when_none_is_set(flower_home: Path) -> None:
    port = free_port()
    proc = start_flower(port, flower_home, BOS_ENV="development")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/", proc)
        password = (flower_home / "flower_password").read_text().strip()
        assert len(password) >= 16
        assert httpx.get(url + "/", timeout=10).status_code == 401
        assert httpx.get(url + "/", auth=("flower", password), timeout=10).status_code == 200
    finally:
        stop(proc)  # type: ignore[arg-type]


def test_flower_will_not_start_in_production_without_a_password(flower_home: Path) -> None:
    production = {
        "BOS_ENV": "production",
        "BOS_SECRET_KEY": "x" * 50,
        "BOS_ENCRYPTION_KEYS": base64.urlsafe_b64encode(b"k" * 32).decode(),
    }
    proc = start_flower(free_port(), flower_home, **production)
    try:
        proc.wait(timeout=60)
    finally:
        stop(proc)  # type: ignore[arg-type]
    assert proc.returncode != 0
    assert (
        "BOS_FLOWER_PASSWORD must be set when BOS_ENV=production" in (flower_home / "flower.log").read_text()
    )
