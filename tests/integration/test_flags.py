"""Feature flags with real processes: set through the API (superusers), versioned with the
runtime configuration, read by a Celery worker that was never restarted within
BOS_CONFIG_RELOAD_SECONDS, sticky per batch in a phase's `when: flag("…")`, targeted by
tenant, and rolled back like any setting."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from orchestrator.config import flag_enabled
from orchestrator.config.flags import bucket
from orchestrator.models import Batch, ConfigVersion
from orchestrator.security.tokens import issue as issue_token
from orchestrator.services.batches import batch_create
from orchestrator.services.users import api_user_grant
from tests.support.factories import batch_request, publish_test_pipeline
from tests.support.waiting import wait_for_terminal

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db")]

FLAGGED = [
    {"name": "first", "handler": "test.echo", "mode": "per_item"},
    {
        "name": "trial",
        "handler": "test.count",
        "mode": "per_batch",
        "after": ["first"],
        "when": 'flag("trial")',
    },
]


def superuser_api() -> APIClient:
    user = get_user_model().objects.create(username="root", is_superuser=True, is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(user).key}")
    return client


def member_api(username: str, tenant: str) -> APIClient:
    client = APIClient()
    token = api_user_grant(username=username, tenant=tenant, role="operator")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def items(n: int) -> list[dict[str, Any]]:
    return [{"key": f"i{i}", "payload": {}} for i in range(n)]


def wait_reload(since: float) -> None:
    """The worker looks for a new version at most every BOS_CONFIG_RELOAD_SECONDS."""
    time.sleep(max(0.0, since + settings.BOS_CONFIG_RELOAD_SECONDS - time.monotonic()))


def trial_state(batch: Batch) -> str:
    return batch.phases.get(name="trial").state


def test_setting_a_flag_is_a_new_version_and_invalid_values_are_refused() -> None:
    api = superuser_api()
    answer = api.put(
        "/api/v1/flags/trial/",
        {"enabled": True, "percent": 25, "tenants": ["acme"], "reason": "try"},
        format="json",
    )
    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert body["enabled"] is True and body["percent"] == 25 and body["tenants"] == ["acme"]
    assert body["version"] == 1 and body["changed_by"] == "user:root"
    assert ConfigVersion.objects.get(version=1).changes == {
        "flag.trial": {
            "old": None,
            "new": {"enabled": True, "percent": 25, "tenants": ["acme"], "pipelines": [], "description": ""},
        }
    }

    refused = api.put("/api/v1/flags/trial/", {"enabled": True, "percent": 150, "reason": "x"}, format="json")
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_config"
    assert refused.json()["details"] == {"key": "flag.trial", "rule": "bounds"}
    assert ConfigVersion.objects.count() == 1


def test_only_superusers_change_flags_and_members_see_only_what_applies_to_them() -> None:
    api = superuser_api()
    api.put("/api/v1/flags/acme-only/", {"enabled": True, "tenants": ["acme"], "reason": "r"}, format="json")
    api.put(
        "/api/v1/flags/both/", {"enabled": True, "tenants": ["acme", "globex"], "reason": "r"}, format="json"
    )
    api.put("/api/v1/flags/everyone/", {"enabled": False, "reason": "r"}, format="json")
    member = member_api("ann", "acme")
    api_user_grant(username="gil", tenant="globex", role="viewer")

    assert member.put("/api/v1/flags/x/", {"enabled": True, "reason": "r"}, format="json").status_code == 403
    seen = {f["name"]: f["tenants"] for f in member.get("/api/v1/flags/").json()["results"]}
    assert seen == {"acme-only": ["acme"], "both": ["acme"], "everyone": []}
    everything = {f["name"] for f in api.get("/api/v1/flags/").json()["results"]}
    assert everything == {"acme-only", "both", "everyone"}


@pytest.mark.usefixtures("celery_worker")
def test_a_flag_turns_a_phase_on_in_a_running_worker_sticky_per_batch_and_a_rollback_undoes_it() -> None:
    publish_test_pipeline("flagged", FLAGGED)
    api = superuser_api()

    def run(n: int) -> list[Batch]:
        made = [
            batch_create(request=batch_request(pipeline="flagged", items=items(3)), actor="test").batch
            for _ in range(n)
        ]
        return [wait_for_terminal(b.id, timeout=90) for b in made]

    # No such flag: the phase is skipped, saying why.
    [before] = run(1)
    trial = before.phases.get(name="trial")
    assert trial.state == "skipped" and trial.skip_reason == 'when: flag("trial") is false'

    # 50 %: the worker (never restarted) picks it up within the reload time, and exactly
    # the batches whose bucket is below 50 run the phase.
    api.put("/api/v1/flags/trial/", {"enabled": True, "percent": 50, "reason": "half"}, format="json")
    wait_reload(time.monotonic())
    batches = run(12)
    for batch in batches:
        expected = "succeeded" if bucket("trial", str(batch.id)) < 50 else "skipped"
        assert trial_state(batch) == expected, batch.id
    assert {trial_state(b) for b in batches} == {"succeeded", "skipped"}
    # Sticky: asking again, anywhere, gives each batch the same answer.
    for batch in batches:
        answer = flag_enabled("trial", batch_id=str(batch.id), tenant=batch.tenant.slug, pipeline="flagged")
        assert answer == (trial_state(batch) == "succeeded")

    # Rolled back to before the flag existed: off again, everywhere.
    back = api.post("/api/v1/config/rollback/", {"version": 0, "reason": "end of trial"}, format="json")
    assert back.status_code == 201
    assert back.json()["changes"]["flag.trial"]["new"] is None
    wait_reload(time.monotonic())
    assert {trial_state(b) for b in run(4)} == {"skipped"}


@pytest.mark.usefixtures("celery_worker")
def test_a_flag_targeted_at_one_tenant_leaves_the_others_alone() -> None:
    publish_test_pipeline("flagged", FLAGGED)
    superuser_api().put(
        "/api/v1/flags/trial/", {"enabled": True, "tenants": ["acme"], "reason": "acme first"}, format="json"
    )
    wait_reload(time.monotonic())
    acme = batch_create(
        request=batch_request(pipeline="flagged", tenant="acme", items=items(3)), actor="t"
    ).batch
    globex = batch_create(
        request=batch_request(pipeline="flagged", tenant="globex", items=items(3)), actor="t"
    ).batch
    assert trial_state(wait_for_terminal(acme.id, timeout=90)) == "succeeded"
    assert trial_state(wait_for_terminal(globex.id, timeout=90)) == "skipped"


def test_the_command_sets_and_lists_flags(capsys: pytest.CaptureFixture[str]) -> None:
    call_command(
        "bos_config",
        "flag",
        "trial",
        "--enabled",
        "true",
        "--percent",
        "10",
        "--tenants",
        "acme",
        "--reason",
        "cli",
    )
    call_command("bos_config", "flags")
    out = capsys.readouterr().out
    assert 'flag.trial: null → {"enabled": true, "percent": 10' in out
    assert "trial: on for 10 % · tenants acme (v1, system:" in out
