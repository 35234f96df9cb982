"""Each example environment in docs/examples/ starts BOS's settings in a fresh process;
bad values and old names at start-up are reported naming the variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from bos_project.settings.environment import BASE_DIR
from orchestrator.config.registry import BY_ENV, RUNTIME

pytestmark = [pytest.mark.integration]

EXAMPLES = sorted((BASE_DIR / "docs" / "examples").glob("*.env"))
# Print what the settings made of the environment: every runtime setting's value.
PROBE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "from orchestrator.config.registry import RUNTIME; "
    "print(json.dumps({s.env: getattr(settings, s.env) for s in RUNTIME.values()} | "
    "{'BOS_ENV': settings.BOS_ENV, 'KAFKA_BOOTSTRAP_SERVERS': settings.KAFKA_BOOTSTRAP_SERVERS}))"
)


def read_env(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def start_settings(
    tmp_path: Path, env: dict[str, str], services: dict[str, str] | None = None, *flags: str
) -> subprocess.CompletedProcess[str]:
    """Import the project's settings in a new process with only `env` (and PATH); the
    services' URLs, when given, in `.bos/services.env` as `make run` writes them."""
    home = tmp_path / ".bos"
    home.mkdir(exist_ok=True)
    if services:
        (home / "services.env").write_text("".join(f"{k}={v}\n" for k, v in services.items()))
    full = {
        "PATH": os.environ["PATH"],
        "BOS_HOME": str(home),
        "DJANGO_SETTINGS_MODULE": "bos_project.settings",
        **env,
    }
    return subprocess.run(
        [sys.executable, *flags, "-c", PROBE],
        cwd=BASE_DIR,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_services() -> dict[str, str]:
    return {
        "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x"),
        "REDIS_URL": settings.REDIS_URL,
        "KAFKA_BOOTSTRAP_SERVERS": ",".join(settings.KAFKA_BOOTSTRAP_SERVERS),
    }


def test_there_is_an_example_for_each_deployment() -> None:
    assert [p.name for p in EXAMPLES] == ["cluster.env", "laptop.env", "one-server.env"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_environment_starts_the_settings(example: Path, tmp_path: Path) -> None:
    env = read_env(example)
    assert set(env) <= set(BY_ENV), f"undeclared: {set(env) - set(BY_ENV)}"
    # The laptop relies on the embedded services, whose URLs `make run` writes to services.env.
    services = None if "DATABASE_URL" in env else run_services()
    done = start_settings(tmp_path, env, services)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["BOS_ENV"] == env["BOS_ENV"]
    for name, value in env.items():
        if name in loaded and BY_ENV[name].kind == "runtime":
            assert loaded[name] == type(loaded[name])(value), name
    if "KAFKA_BOOTSTRAP_SERVERS" in env:
        assert loaded["KAFKA_BOOTSTRAP_SERVERS"] == env["KAFKA_BOOTSTRAP_SERVERS"].split(",")


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("BOS_CHUNK_SIZE", "0", "BOS_CHUNK_SIZE"),
        ("BOS_RETRY_JITTER", "2", "BOS_RETRY_JITTER: must be at most 1"),
        ("BOS_RETRY_BASE_SECONDS", "120", "BOS_RETRY_BASE_SECONDS: the first retry delay"),
        ("BOS_LEASE_SECONDS", "2", "BOS_LEASE_SECONDS"),
        ("BOS_CONFIG_RELOAD_SECONDS", "0", "BOS_CONFIG_RELOAD_SECONDS"),
        ("BOS_INLINE_MAX_ITEMS", "20000", "BOS_INLINE_MAX_ITEMS"),
    ],
)
def test_a_bad_runtime_default_stops_start_up_naming_the_variable(
    name: str, value: str, says: str, tmp_path: Path
) -> None:
    done = start_settings(tmp_path, {name: value}, run_services())
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and says in done.stderr, done.stderr[-1500:]


def test_a_removed_setting_still_set_warns_and_starts(tmp_path: Path) -> None:
    done = start_settings(
        tmp_path, {"BOS_STALE_AFTER_SECONDS": "120"}, run_services(), "-W", "always::DeprecationWarning"
    )
    assert done.returncode == 0, done.stderr[-1500:]
    assert "DeprecationWarning: BOS_STALE_AFTER_SECONDS was removed" in done.stderr
    assert "BOS_LEASE_SECONDS" in done.stderr
    assert (
        json.loads(done.stdout.strip().splitlines()[-1])["BOS_LEASE_SECONDS"]
        == RUNTIME["lease_seconds"].default
    )
