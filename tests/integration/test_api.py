"""The REST API: auth, tenant scoping, creation, filters, pagination, errors, operator actions."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from knox.crypto import hash_token
from knox.models import AuthToken
from rest_framework.test import APIClient

from orchestrator.models import Batch
from orchestrator.services.batches import batch_create
from orchestrator.services.users import api_user_grant
from tests.support.factories import batch_request, essay_items
from tests.support.waiting import wait_for_terminal

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline")]


def client_for(username: str, tenant: str, role: str) -> APIClient:
    token = api_user_grant(username=username, tenant=tenant, role=role)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "tenant": "acme",
        "external_id": "rest-1",
        "pipeline": "essay-analysis",
        "priority": 7,
        "metadata": {"course": "EN101"},
        "items": essay_items(8),
    }
    data.update(overrides)
    return data


@pytest.mark.usefixtures("celery_worker")
def test_rest_submission_completes_and_reads_back() -> None:
    api = client_for("op", "acme", "operator")
    created = api.post("/api/v1/batches/", body(), format="json")
    assert created.status_code == 201, created.json()
    batch_id = created.json()["id"]
    assert created.json()["state"] == "accepted"

    again = api.post("/api/v1/batches/", body(), format="json")
    assert again.status_code == 200 and again.json()["id"] == batch_id

    wait_for_terminal(batch_id)
    detail = api.get(f"/api/v1/batches/{batch_id}/").json()
    assert detail["state"] == "completed"
    assert detail["priority"] == 7 and detail["tenant"] == "acme"
    assert (detail["items_total"], detail["items_succeeded"], detail["items_failed"]) == (8, 8, 0)
    states = {p["name"]: p["state"] for p in detail["phases"]}
    assert list(states) == ["validate", "spellcheck", "text_stats", "score", "grading", "aggregate"]
    # The batch asked for neither scoring nor grading.
    assert states["score"] == states["grading"] == "skipped"
    ran = [p for p in detail["phases"] if p["name"] not in ("score", "grading")]
    assert all(p["state"] == "succeeded" and p["started_at"] and p["finished_at"] for p in ran)
    assert detail["report"]["aggregate"]["essays_analysed"] == 8

    history = api.get(f"/api/v1/batches/{batch_id}/history/").json()
    assert [h["to_state"] for h in history] == ["received", "accepted", "running", "completed"]
    assert history[0]["actor"] == "user:op" and history[-1]["actor"] == "orchestrator"

    items = api.get(f"/api/v1/batches/{batch_id}/items/?page_size=5").json()
    assert items["count"] == 8 and len(items["results"]) == 5
    assert items["results"][0]["state"] == "succeeded"


def test_unauthenticated_requests_are_refused() -> None:
    response = APIClient().get("/api/v1/batches/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.usefixtures("held_batches")
def test_another_tenants_batch_answers_404() -> None:
    mine = batch_create(request=batch_request(tenant="acme"), actor="test").batch
    theirs = batch_create(request=batch_request(tenant="globex"), actor="test").batch
    api = client_for("viewer", "acme", "viewer")

    assert api.get(f"/api/v1/batches/{mine.id}/").status_code == 200
    for path in ("", "history/", "items/"):
        response = api.get(f"/api/v1/batches/{theirs.id}/{path}")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    listed = api.get("/api/v1/batches/").json()
    assert [b["id"] for b in listed["results"]] == [str(mine.id)]


@pytest.mark.usefixtures("held_batches")
def test_viewer_cannot_submit_or_cancel() -> None:
    api = client_for("viewer", "acme", "viewer")
    response = api.post("/api/v1/batches/", body(), format="json")
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    batch = batch_create(request=batch_request(tenant="acme"), actor="test").batch
    assert api.post(f"/api/v1/batches/{batch.id}/cancel/").status_code == 403


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"items": []}, "items"),
        ({"items": [{"key": "a"}, {"key": "a"}]}, "items"),
        ({"priority": 11}, "priority"),
        ({"tenant": "Bad Tenant"}, "tenant"),
        ({"external_id": ""}, "external_id"),
        ({"deadline": "tomorrow"}, "deadline"),
    ],
)
def test_bad_input_is_a_400_with_a_code(overrides: dict[str, Any], field: str) -> None:
    api = client_for("op", "acme", "operator")
    response = api.post("/api/v1/batches/", body(**overrides), format="json")
    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == "invalid_request" and field in payload["details"]
    assert payload["message"]


def test_unknown_pipeline_and_non_json_are_400s() -> None:
    api = client_for("op", "acme", "operator")
    response = api.post("/api/v1/batches/", body(pipeline="nope"), format="json")
    assert response.status_code == 400 and response.json()["code"] == "unknown_pipeline"
    response = api.post("/api/v1/batches/", "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "parse_error"


@pytest.mark.usefixtures("held_batches")
def test_list_filters_and_paginates() -> None:
    for i in range(7):
        batch_create(request=batch_request(external_id=f"list-{i}"), actor="test")
    api = client_for("viewer", "acme", "viewer")

    page = api.get("/api/v1/batches/?page_size=3&page=2").json()
    assert page["count"] == 7 and len(page["results"]) == 3 and page["next"] and page["previous"]
    only = api.get("/api/v1/batches/?external_id=list-4").json()
    assert [b["external_id"] for b in only["results"]] == ["list-4"]
    assert api.get("/api/v1/batches/?pipeline=essay-analysis").json()["count"] == 7
    assert api.get("/api/v1/batches/?pipeline=other").json()["count"] == 0
    assert api.get("/api/v1/batches/?state=accepted").json()["count"] == 7
    assert api.get("/api/v1/batches/?state=completed").json()["count"] == 0
    assert api.get("/api/v1/batches/?created_before=2000-01-01T00:00:00Z").json()["count"] == 0
    assert api.get("/api/v1/batches/?created_after=2000-01-01T00:00:00Z").json()["count"] == 7
    bad = api.get("/api/v1/batches/?state=sideways")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"


@pytest.mark.usefixtures("held_batches")
def test_cancel_then_cancel_again_is_a_409() -> None:
    batch = batch_create(request=batch_request(), actor="test").batch
    api = client_for("op", "acme", "operator")
    first = api.post(f"/api/v1/batches/{batch.id}/cancel/", {"reason": "wrong input"}, format="json")
    assert first.status_code == 200 and first.json()["state"] == "cancelled"
    again = api.post(f"/api/v1/batches/{batch.id}/cancel/", {}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "invalid_state"
    last = Batch.objects.get(id=batch.id).transitions.order_by("-seq").first()
    assert last is not None and last.actor == "user:op" and last.reason == "wrong input"


@pytest.mark.usefixtures("held_batches")
def test_retry_of_an_unfinished_batch_is_a_409() -> None:
    batch = batch_create(request=batch_request(), actor="test").batch
    api = client_for("op", "acme", "operator")
    response = api.post(f"/api/v1/batches/{batch.id}/retry/")
    assert response.status_code == 409


def test_pipelines_and_versions_are_listed() -> None:
    api = client_for("viewer", "acme", "viewer")
    pipelines = api.get("/api/v1/pipelines/").json()["results"]
    assert [p["name"] for p in pipelines] == ["essay-analysis"]
    versions = api.get("/api/v1/pipelines/essay-analysis/versions/").json()["results"]
    assert versions[0]["version"] == 1 and versions[0]["active"] is True
    assert versions[0]["stats"]["counts"].get("accepted", 0) == 0
    assert "duration_p95" in versions[0]["stats"]


@pytest.mark.usefixtures("held_batches")
def test_schema_docs_health_and_metrics() -> None:
    client = APIClient()
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/v1/batches/" in schema.content
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    assert set(ready.json()["checks"]) == {"database", "redis", "broker", "kafka", "consumers"}
    batch_create(request=batch_request(), actor="test")
    metrics = client.get("/metrics").content.decode()
    assert 'bos_batches{state="accepted"} 1.0' in metrics
    assert "bos_outbox_unpublished" in metrics


def test_create_api_user_prints_the_token_last(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("create_api_user", "alice", "--tenant", "acme", "--role", "operator")
    call_command("create_api_user", "alice", "--tenant", "globex", "--role", "viewer")
    lines = capsys.readouterr().out.strip().splitlines()
    alice = get_user_model().objects.get(username="alice")
    # Stored hashed: the printed token is known by its digest only, and it works.
    assert AuthToken.objects.filter(user=alice, digest=hash_token(lines[-1])).exists()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {lines[-1]}")
    assert client.get("/api/v1/batches/").status_code == 200
    assert alice.memberships.count() == 2


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_a_failed_batch_retried_by_an_operator_resumes_and_completes(tmp_path: Any) -> None:
    gate = tmp_path / "closed"
    gate.touch()
    items = [{"key": f"i{n}", "payload": {}} for n in range(20)]
    batch = batch_create(
        request=batch_request(pipeline="gated", items=items, metadata={"gate": str(gate)}), actor="test"
    ).batch
    assert wait_for_terminal(batch.id).state == "failed"

    gate.unlink()
    api = client_for("op", "acme", "operator")
    response = api.post(f"/api/v1/batches/{batch.id}/retry/", {"reason": "gate opened"}, format="json")
    assert response.status_code == 200, response.json()
    done = wait_for_terminal(batch.id)

    assert done.state == "completed"
    history = list(done.transitions.order_by("seq").values_list("to_state", "actor", "reason"))
    assert [h[0] for h in history] == ["received", "accepted", "running", "failed", "running", "completed"]
    assert history[4][1:] == ("user:op", "gate opened")
    phases = {p.name: p for p in done.phases.all()}
    # The finished phase was kept; only the failed one and what came after it ran again.
    assert phases["first"].chunks_done == 1 and phases["gate"].state == "succeeded"
    assert phases["last"].output == {"items": 20}


@pytest.mark.usefixtures("held_batches")
def test_a_batch_and_a_version_are_drawn_as_graphs() -> None:
    batch = batch_create(request=batch_request(tenant="acme"), actor="test").batch
    api = client_for("viewer", "acme", "viewer")

    svg = api.get(f"/api/v1/batches/{batch.id}/graph/")
    assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml"
    body = svg.content.decode()
    assert body.startswith("<svg") and all(name in body for name in ("validate", "spellcheck", "aggregate"))
    mermaid = api.get(f"/api/v1/batches/{batch.id}/graph/?as=mermaid").content.decode()
    assert mermaid.lstrip().startswith(("flowchart", "---")) and "class " in mermaid
    version = api.get("/api/v1/pipelines/essay-analysis/versions/1/graph/?as=mermaid")
    assert version.status_code == 200 and "grading" in version.content.decode()
    assert api.get("/api/v1/pipelines/essay-analysis/versions/7/graph/").status_code == 404
    theirs = batch_create(request=batch_request(tenant="globex"), actor="test").batch
    assert api.get(f"/api/v1/batches/{theirs.id}/graph/").status_code == 404


@pytest.mark.usefixtures("held_batches")
def test_the_admin_shows_a_batch_with_its_graph_phases_and_history(admin_client: Any) -> None:
    batch = batch_create(request=batch_request(tenant="acme"), actor="test").batch
    page = admin_client.get(f"/admin/orchestrator/batch/{batch.id}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and "spellcheck" in html and "pipeline planned" in html
    assert admin_client.get("/admin/orchestrator/batch/").status_code == 200
    assert admin_client.get("/admin/orchestrator/pipelineversion/").status_code == 200
    breakers = admin_client.get("/admin/bos/breakers/")
    assert breakers.status_code == 200 and b"Circuit breakers" in breakers.content


def test_breakers_are_listed_in_the_api_for_superusers_alone() -> None:
    from orchestrator.breakers import breaker

    breaker("api-listed").close()
    refused = client_for("viewer", "acme", "viewer").get("/api/v1/breakers/")
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    root = APIClient()
    root.force_authenticate(get_user_model().objects.create(username="root", is_superuser=True))
    found = {b["dependency"]: b for b in root.get("/api/v1/breakers/").json()["results"]}
    assert found["api-listed"]["state"] == "closed"


@pytest.mark.usefixtures("held_batches")
def test_errors_and_alerts_are_listed_for_the_callers_tenants_only() -> None:
    from orchestrator.analytics import analyze_errors
    from orchestrator.models import PhaseRun
    from orchestrator.services.batches import batch_start
    from orchestrator.services.phases import phase_chunk_run

    batch = batch_create(
        request=batch_request(tenant="acme", items=essay_items(5, bad={0, 1})), actor="t"
    ).batch
    batch_start(batch_id=batch.id)  # validate runs (its chunks are held)
    phase_chunk_run(phase_run_id=PhaseRun.objects.get(batch=batch, name="validate").id, start=0, end=5)
    analyze_errors()

    mine = client_for("viewer", "acme", "viewer")
    errors = mine.get("/api/v1/errors/").json()["results"]
    assert errors and errors[0]["count"] == 2 and len(errors[0]["trend"]) == 24
    assert mine.get("/api/v1/alerts/").json()["results"][0]["kind"] == "new_error_pattern"
    theirs = client_for("other", "globex", "viewer")
    assert theirs.get("/api/v1/errors/").json()["results"] == []
    assert mine.get("/api/v1/errors/?since=yesterday").status_code == 400


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
@pytest.mark.parametrize("size", [6, 40], ids=["inline", "fanned-out"])
def test_an_operator_retries_only_the_failed_items(tmp_path: Any, size: int) -> None:
    from orchestrator.models import ChunkRun, ItemResult
    from tests.support.factories import publish_test_pipeline

    publish_test_pipeline(
        "repairable",
        [
            {"name": "check", "handler": "test.gated_item", "mode": "per_item", "chunk_size": 5},
            {"name": "echo", "handler": "test.echo", "mode": "per_item", "after": ["check"], "chunk_size": 5},
            {"name": "total", "handler": "test.count", "mode": "per_batch", "after": ["echo"]},
        ],
    )
    gate = tmp_path / "gate"
    gate.touch()
    items = [{"key": f"i{n}", "payload": {"gated": n % 5 == 1}} for n in range(size)]
    batch = batch_create(
        request=batch_request(pipeline="repairable", items=items, metadata={"gate": str(gate)}), actor="t"
    ).batch
    first = wait_for_terminal(batch.id)
    gated = size // 5 + (1 if size % 5 > 1 else 0)
    assert first.state == "completed_with_errors" and first.items_failed == gated

    gate.unlink()
    api = client_for("op", "acme", "operator")
    response = api.post(f"/api/v1/batches/{batch.id}/retry-items/", {"reason": "gate fixed"}, format="json")
    assert response.status_code == 200, response.json()
    done = wait_for_terminal(batch.id)

    assert done.state == "completed"
    assert (done.items_succeeded, done.items_failed) == (size, 0)
    for name in ("check", "echo"):
        assert ItemResult.objects.filter(phase_run__batch=done, phase_run__name=name, ok=True).count() == size
    check = done.phases.get(name="check")
    assert ChunkRun.objects.filter(phase_run=check).count() == check.chunks_total
    history = list(done.transitions.order_by("seq").values_list("to_state", "actor"))
    assert history[-3:] == [
        ("completed_with_errors", "orchestrator"),
        ("running", "user:op"),
        ("completed", "orchestrator"),
    ]
    again = api.post(f"/api/v1/batches/{batch.id}/retry-items/")
    assert again.status_code == 409
