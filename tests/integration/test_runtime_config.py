"""Runtime configuration with real processes: a chunk size changed through the API is used
by a Celery worker that was never restarted, within BOS_CONFIG_RELOAD_SECONDS; invalid
values are refused naming the key and rule (API, admin, command); rollback; history;
a process that loses Redis keeps its last good values; the cost of a read."""

from __future__ import annotations

import json
import os
import time
import timeit
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from orchestrator.config import reload, runtime, store
from orchestrator.models import Batch, ChunkRun, ConfigVersion
from orchestrator.security.tokens import issue as issue_token
from orchestrator.services.batches import batch_create
from tests.support.factories import batch_request, publish_test_pipeline
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db")]


def api_as(username: str, *, superuser: bool) -> APIClient:
    user = get_user_model().objects.create(username=username, is_superuser=superuser, is_staff=superuser)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(user).key}")
    return client


def items(n: int) -> list[dict[str, Any]]:
    return [{"key": f"i{i}", "payload": {}} for i in range(n)]


def chunks_of(batch: Batch, phase: str) -> list[tuple[int, int]]:
    return sorted(
        ChunkRun.objects.filter(phase_run__batch=batch, phase_run__name=phase).values_list("start", "end")
    )


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_a_chunk_size_set_through_the_api_is_used_by_the_running_worker_within_the_reload_time(
    tmp_path: Path,
) -> None:
    publish_test_pipeline("cfg-child", [{"name": "work", "handler": "test.echo", "mode": "per_item"}])
    publish_test_pipeline("cfg-parent", [{"name": "child", "mode": "sub_pipeline", "pipeline": "cfg-child"}])
    publish_test_pipeline(
        "cfg-held",
        [
            {"name": "hold", "handler": "test.hold", "mode": "per_batch"},
            {"name": "work", "handler": "test.echo", "mode": "per_item", "after": ["hold"]},
        ],
    )
    default = settings.BOS_CHUNK_SIZE
    assert default == 100 and runtime("chunk_size") == default
    hold = tmp_path / "hold"
    hold.touch()
    running = batch_create(
        request=batch_request(pipeline="cfg-held", items=items(30), metadata={"hold": str(hold)}),
        actor="test",
    ).batch
    wait_for(lambda: Batch.objects.get(id=running.id).state == "running", what="the held batch to run")

    api = api_as("root", superuser=True)
    changed = api.put("/api/v1/config/chunk_size/", {"value": 7, "reason": "smaller chunks"}, format="json")
    changed_at = time.monotonic()
    assert changed.status_code == 200, changed.json()
    assert changed.json()["value"] == 7 and changed.json()["changed_by"] == "user:root"
    assert runtime("chunk_size") == 7  # this process: at once

    # The worker (never restarted) looks at most every BOS_CONFIG_RELOAD_SECONDS: by then
    # it chunks a new batch — here a child batch, which the worker itself creates — by 7.
    time.sleep(max(0.0, changed_at + settings.BOS_CONFIG_RELOAD_SECONDS - time.monotonic()))
    parent = batch_create(request=batch_request(pipeline="cfg-parent", items=items(30)), actor="test").batch
    assert wait_for_terminal(parent.id, timeout=90).state == "completed"
    child = Batch.objects.get(parent=parent)
    assert child.phases.get(name="work").chunk_size == 7
    assert chunks_of(child, "work") == [(0, 7), (7, 14), (14, 21), (21, 28), (28, 30)]

    # The batch that was already running keeps the size it started with.
    hold.unlink()
    assert wait_for_terminal(running.id, timeout=90).state == "completed"
    assert running.phases.get(name="work").chunk_size == default
    assert chunks_of(running, "work") == [(0, 30)]

    # A rollback to before the change: new batches get the default again, everywhere.
    back = api.post("/api/v1/config/rollback/", {"version": 0, "reason": "back to defaults"}, format="json")
    assert back.status_code == 201, back.json()
    rolled_at = time.monotonic()
    assert runtime("chunk_size") == default
    time.sleep(max(0.0, rolled_at + settings.BOS_CONFIG_RELOAD_SECONDS - time.monotonic()))
    again = batch_create(request=batch_request(pipeline="cfg-parent", items=items(30)), actor="test").batch
    assert wait_for_terminal(again.id, timeout=90).state == "completed"
    assert Batch.objects.get(parent=again).phases.get(name="work").chunk_size == default


def test_invalid_values_are_refused_with_the_key_and_the_rule() -> None:
    api = api_as("root", superuser=True)
    cases = [
        ("chunk_size", 0, "min"),
        ("chunk_size", 20_000, "max"),
        ("chunk_size", "lots", "type"),
        ("retry_jitter", 1.5, "max"),
        ("lease_seconds", 1, "min"),
        ("retry_base_seconds", 120, "retry_base_seconds <= retry_cap_seconds"),
        ("max_items", 5, "inline_max_items <= max_items"),
        ("no_such_key", 1, "known_key"),
    ]
    for key, value, rule in cases:
        response = api.put(f"/api/v1/config/{key}/", {"value": value, "reason": "try"}, format="json")
        assert response.status_code == 400, (key, response.json())
        body = response.json()
        assert body["code"] == "invalid_config"
        assert body["details"]["rule"] == rule and key in body["message"], body
    assert not ConfigVersion.objects.exists()
    missing_reason = api.put("/api/v1/config/chunk_size/", {"value": 5}, format="json")
    assert missing_reason.status_code == 400 and missing_reason.json()["code"] == "invalid_request"


def test_only_superusers_read_or_change_the_runtime_configuration() -> None:
    api = api_as("someone", superuser=False)
    assert api.get("/api/v1/config/").status_code == 403
    assert api.get("/api/v1/config/history/").status_code == 403
    refused = api.put("/api/v1/config/chunk_size/", {"value": 5, "reason": "x"}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert (
        api.post("/api/v1/config/rollback/", {"version": 0, "reason": "x"}, format="json").status_code == 403
    )
    assert APIClient().get("/api/v1/config/").status_code in (401, 403)
    assert not ConfigVersion.objects.exists()


def test_history_shows_actor_reason_and_diff_and_a_rollback_restores_every_key() -> None:
    api = api_as("root", superuser=True)
    for key, value, reason in [
        ("chunk_size", 50, "fewer tasks"),
        ("breaker_fail_max", 9, "flaky downstream"),
        ("chunk_size", 25, "even smaller"),
    ]:
        assert (
            api.put(f"/api/v1/config/{key}/", {"value": value, "reason": reason}, format="json").status_code
            == 200
        )
    listed = {item["key"]: item for item in api.get("/api/v1/config/").json()["results"]}
    assert listed["chunk_size"]["value"] == 25 and listed["chunk_size"]["default"] == 100
    assert listed["chunk_size"]["version"] == 3 and listed["chunk_size"]["changed_by"] == "user:root"
    assert listed["lease_seconds"]["changed_by"] is None and listed["lease_seconds"]["type"] == "float"

    back = api.post("/api/v1/config/rollback/", {"version": 1, "reason": "undo the rest"}, format="json")
    assert back.status_code == 201
    assert back.json()["version"] == 4 and back.json()["rollback_of"] == 1
    assert back.json()["changes"] == {
        "breaker_fail_max": {"old": 9, "new": settings.BOS_BREAKER_FAIL_MAX},
        "chunk_size": {"old": 25, "new": 50},
    }
    assert runtime("chunk_size") == 50 and runtime("breaker_fail_max") == settings.BOS_BREAKER_FAIL_MAX

    history = api.get("/api/v1/config/history/").json()["results"]
    assert [(v["version"], v["changed_by"], v["reason"]) for v in history] == [
        (4, "user:root", "undo the rest"),
        (3, "user:root", "even smaller"),
        (2, "user:root", "flaky downstream"),
        (1, "user:root", "fewer tasks"),
    ]
    assert history[2]["changes"] == {"breaker_fail_max": {"old": settings.BOS_BREAKER_FAIL_MAX, "new": 9}}
    missing = api.post("/api/v1/config/rollback/", {"version": 99, "reason": "x"}, format="json")
    assert missing.status_code == 404


def test_the_command_gets_sets_lists_and_rolls_back(capsys: pytest.CaptureFixture[str]) -> None:
    call_command(
        "bos_config", "set", "lag_alert_threshold", "5000", "--reason", "noisy", "--actor", "user:ops"
    )
    call_command("bos_config", "set", "retry_jitter", "0.2", "--reason", "steadier")
    call_command("bos_config", "get", "lag_alert_threshold")
    assert "lag_alert_threshold = 5000  default 1000 (v1, user:ops)" in capsys.readouterr().out
    with pytest.raises(CommandError, match=r"invalid_config: .*retry_jitter.*rule: max"):
        call_command("bos_config", "set", "retry_jitter", "3", "--reason", "too much")
    call_command("bos_config", "rollback", "1", "--reason", "jitter back")
    assert runtime("retry_jitter") == 0.5 and runtime("lag_alert_threshold") == 5000
    call_command("bos_config", "history")
    out = capsys.readouterr().out.splitlines()[1:]  # the history, after rollback's own line
    assert [line.split()[0] for line in out] == ["v3", "v2", "v1"]
    assert out[0].startswith("v3 ") and "[rollback to v1]: jitter back" in out[0]
    assert "retry_jitter: 0.2 → 0.5" in out[0]
    assert "user:ops: noisy" in out[2] and "lag_alert_threshold: 1000 → 5000" in out[2]


def test_the_admin_adds_a_version_through_the_same_validation() -> None:
    root = get_user_model().objects.create(username="admin-root", is_superuser=True, is_staff=True)
    client = Client()
    client.force_login(root)
    add = "/admin/orchestrator/configversion/add/"
    refused = client.post(add, {"key": "retry_base_seconds", "value": "500", "reason": "slow"})
    assert refused.status_code == 200
    assert "invalid_config: retry_base_seconds" in refused.content.decode()
    assert "rule: retry_base_seconds &lt;= retry_cap_seconds" in refused.content.decode()
    assert not ConfigVersion.objects.exists()
    done = client.post(add, {"key": "chunk_size", "value": "64", "reason": "from the admin"})
    assert done.status_code == 302
    row = ConfigVersion.objects.get()
    assert (row.actor, row.reason, row.values) == ("user:admin-root", "from the admin", {"chunk_size": 64})
    assert runtime("chunk_size") == 64

    staff = get_user_model().objects.create(username="staff", is_staff=True)
    other = Client()
    other.force_login(staff)
    assert other.get(add).status_code == 403
    assert other.get("/admin/orchestrator/configversion/").status_code == 403


def test_the_admin_sets_flags_schedules_and_tenant_values_through_the_same_functions() -> None:
    from django_celery_beat.models import PeriodicTask

    from orchestrator.models import Tenant

    Tenant.objects.create(slug="acme")
    root = get_user_model().objects.create(username="admin-root", is_superuser=True, is_staff=True)
    client = Client()
    client.force_login(root)
    add = "/admin/orchestrator/configversion/add/"
    flag = '{"enabled": true, "percent": 30, "tenants": ["acme"]}'
    assert client.post(add, {"key": "flag.trial", "value": flag, "reason": "r"}).status_code == 302
    assert (
        client.post(
            add, {"key": "schedule.snapshots", "value": '{"every_seconds": 90}', "reason": "r"}
        ).status_code
        == 302
    )
    assert (
        client.post(add, {"key": "chunk_size", "tenant": "acme", "value": "12", "reason": "r"}).status_code
        == 302
    )
    assert [i["percent"] for i in store.flag_items()] == [30]
    assert PeriodicTask.objects.get(name="snapshots").interval.every == 90
    assert runtime("chunk_size", tenant="acme") == 12

    for key, value, tenant in [
        ("flag.trial", '{"enabled": true, "percent": 130}', ""),
        ("schedule.snapshots", '{"every_seconds": 0}', ""),
        ("lag_alert_threshold", "5", "acme"),
    ]:
        refused = client.post(add, {"key": key, "tenant": tenant, "value": value, "reason": "r"})
        assert refused.status_code == 200 and "invalid_config" in refused.content.decode(), key
    assert ConfigVersion.objects.count() == 3


def test_a_process_that_loses_redis_keeps_its_last_good_values_and_says_so(
    monkeypatch: pytest.MonkeyPatch, admin_client: Any
) -> None:
    store.config_set(changes={"chunk_size": 33}, actor="test", reason="before the outage")
    assert runtime("chunk_size") == 33
    # Another process changes it while this one cannot reach Redis.
    monkeypatch.setattr(settings, "REDIS_URL", "redis://127.0.0.1:1/0")
    reload.refresh(force=True)
    status = reload.status()
    assert status["stale"] is True and status["version"] == 1 and "error" in status
    assert runtime("chunk_size") == 33
    ready = admin_client.get("/readyz").json()
    assert ready["config"]["stale"] is True and ready["checks"]["redis"]["ok"] is False

    monkeypatch.undo()
    store.publish(2, {"chunk_size": 44})
    reload.refresh(force=True)
    assert reload.status() == {"version": 2, "stale": False}
    assert runtime("chunk_size") == 44


def test_a_new_redis_is_filled_from_the_database() -> None:
    store.config_set(changes={"max_wait_seconds": 600}, actor="test", reason="shorter waits")
    store.client().delete(store.REDIS_KEY)  # a flushed Redis
    reload.reset()
    assert runtime("max_wait_seconds") == 600
    assert store.client().get(store.REDIS_KEY) is not None


def test_after_a_database_restore_a_change_replaces_the_version_redis_held_from_before() -> None:
    # Redis outlived the database: it holds version 5, which the restored history lacks.
    store.client().set(store.REDIS_KEY, json.dumps({"version": 5, "values": {"chunk_size": 99}}))
    store.config_set(changes={"chunk_size": 8}, actor="t", reason="after the restore")
    assert json.loads(store.client().get(store.REDIS_KEY)) == {"version": 1, "values": {"chunk_size": 8}}
    reload.reset()
    assert runtime("chunk_size") == 8


def test_an_older_version_published_late_does_not_replace_a_newer_one() -> None:
    store.config_set(changes={"chunk_size": 8}, actor="t", reason="first")
    store.config_set(changes={"chunk_size": 9}, actor="t", reason="second")
    assert store.publish(1, {"chunk_size": 8}) is False
    assert json.loads(store.client().get(store.REDIS_KEY))["values"] == {"chunk_size": 9}


def test_reading_a_runtime_setting_is_a_local_lookup() -> None:
    """Not a timed assertion: the numbers are printed (`-s`) and in docs/configuration.md's
    note. A read is a dict lookup, far from a Redis round trip."""
    store.config_set(changes={"chunk_size": 10}, actor="test", reason="bench")
    runtime("chunk_size")
    n = 200_000
    plain = {"chunk_size": 10}
    results = {
        "dict lookup": timeit.timeit(lambda: plain["chunk_size"], number=n),
        "settings.BOS_CHUNK_SIZE": timeit.timeit(lambda: settings.BOS_CHUNK_SIZE, number=n),
        'runtime("chunk_size")': timeit.timeit(lambda: runtime("chunk_size"), number=n),
        "Redis GET (for scale)": timeit.timeit(lambda: store.client().get(store.REDIS_KEY), number=2_000)
        * n
        / 2_000,
    }
    print(f"\nreading a setting, ns per read over {n:,} reads:")
    for name, seconds in results.items():
        print(f"  {name:26} {seconds / n * 1e9:10.0f}")
    assert runtime("chunk_size") == 10
    # Each read hit the local dict: no Redis round trip per read (the check runs at most
    # every BOS_CONFIG_RELOAD_SECONDS and these reads took far less than that).
    assert reload._cache.version == 1


def test_the_version_numbers_count_every_change() -> None:
    tag = uuid.uuid4().hex[:4]
    store.config_set(changes={"chunk_size": 11}, actor=f"test:{tag}", reason="one")
    store.config_set(changes={"chunk_size": 11}, actor=f"test:{tag}", reason="same value")
    store.config_rollback(version=0, actor=f"test:{tag}", reason="defaults")
    rows = list(ConfigVersion.objects.order_by("version").values_list("version", "changes"))
    assert rows == [
        (1, {"chunk_size": {"old": 100, "new": 11}}),
        (2, {}),
        (3, {"chunk_size": {"old": 11, "new": 100}}),
    ]


def test_a_breaker_already_made_takes_new_thresholds() -> None:
    from orchestrator.breakers import breaker

    name = f"cfg-{uuid.uuid4().hex[:6]}"
    assert breaker(name).fail_max == settings.BOS_BREAKER_FAIL_MAX
    store.config_set(changes={"breaker_fail_max": 42, "breaker_reset_seconds": 7.5}, actor="test", reason="x")
    assert (breaker(name).fail_max, breaker(name).reset_timeout) == (42, 7.5)


def test_reads_between_two_checks_never_ask_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    store.config_set(changes={"chunk_size": 12}, actor="test", reason="x")
    reload.refresh(force=True)
    asked: list[str] = []
    real = store.client

    class Counting:
        def get(self, key: str) -> Any:
            asked.append(key)
            return real().get(key)

    monkeypatch.setattr(store, "client", Counting)
    assert all(runtime("chunk_size") == 12 for _ in range(10_000))
    assert asked == []
    # Once the check is due, one GET (and nothing more) sees the current version.
    reload._cache.next_check = 0.0
    assert runtime("chunk_size") == 12 and asked == [store.REDIS_KEY]
    monkeypatch.undo()


WATCHER = """
import sys, time
import django
django.setup()
from orchestrator.config import runtime
print("start", runtime("chunk_size"), flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    value = runtime("chunk_size")
    if value != int(sys.argv[1]):
        print("saw", value, flush=True)
        break
    time.sleep(0.02)
"""


def test_a_change_is_announced_to_other_processes_at_once_not_at_their_next_poll() -> None:
    """The watcher polls Redis only every hour, so only the pub/sub announcement can make
    it see the change (docs/configuration.md, "Hot reload")."""
    import subprocess
    import sys

    from tests.conftest import database_url

    default = runtime("chunk_size")
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER, str(default)],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url(),
            "BOS_CONFIG_RELOAD_SECONDS": "300",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        first = ""
        while not first.startswith("start"):  # its log lines come first
            first = watcher.stdout.readline()
            assert first, "the watcher exited"
        assert first.split() == ["start", str(default)], first
        time.sleep(1)  # its subscriber thread connects (it starts with the first read)
        store.config_set(changes={"chunk_size": default + 3}, actor="test", reason="announce it")
        out, _ = watcher.communicate(timeout=90)
    finally:
        watcher.kill()
    assert f"saw {default + 3}" in out, out
