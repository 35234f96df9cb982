"""Every kind of operation lands in the audit log, with who, from where and how it ended:
API writes, denials, cross-tenant reads, admin actions and edits, Kafka commands,
management commands, configuration changes and reads of payloads — and the log reads back
over `GET /api/v1/audit/`, scoped like everything else."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import structlog
from django.contrib.admin.models import LogEntry
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from rest_framework.test import APIClient

from orchestrator.models import AuditRecord, Batch, Tenant
from orchestrator.services.batches import batch_create
from orchestrator.services.intake import Intake, batch_create_many
from tests.support.factories import MembershipFactory, UserFactory, batch_request

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline", "held_batches")]

CLIENT_IP = "198.51.100.7"


def member(role: str, tenant: str = "acme", **user: Any) -> Any:
    account = UserFactory(**user)
    MembershipFactory(user=account, tenant=Tenant.objects.get_or_create(slug=tenant)[0], role=role)
    return account


def api_as(account: Any) -> APIClient:
    client = APIClient(REMOTE_ADDR=CLIENT_IP)
    client.force_authenticate(account)
    return client


def only(**match: Any) -> AuditRecord:
    rows = list(AuditRecord.objects.filter(**match))
    assert len(rows) == 1, f"{len(rows)} records match {match}: {[str(r) for r in AuditRecord.objects.all()]}"
    return rows[0]


def a_batch(tenant: str = "acme") -> Batch:
    return batch_create(request=batch_request(tenant=tenant), actor="system:test").batch


def test_an_api_write_is_recorded_with_actor_address_tenant_and_object() -> None:
    ann = member("operator", username="ann")
    batch = a_batch()
    response = api_as(ann).post(
        f"/api/v1/batches/{batch.id}/cancel/", {"reason": "wrong input"}, format="json"
    )
    assert response.status_code == 200
    row = only(action="batch.cancel")
    assert (row.actor, row.ip, row.outcome, row.object_type, row.object_id, row.tenant_id) == (
        "user:ann",
        CLIENT_IP,
        "ok",
        "batch",
        str(batch.id),
        batch.tenant_id,
    )
    assert row.detail["reason"] == "wrong input"
    assert row.correlation_id == response["X-Correlation-ID"]


def test_a_denied_attempt_is_recorded_as_denied_and_changes_nothing() -> None:
    viewer = member("viewer", username="vic")
    batch = a_batch()
    assert api_as(viewer).post(f"/api/v1/batches/{batch.id}/cancel/", {}, format="json").status_code == 403
    row = only(action="batch.cancel")
    assert (row.actor, row.ip, row.outcome, row.detail["code"]) == (
        "user:vic",
        CLIENT_IP,
        "denied",
        "forbidden",
    )
    batch.refresh_from_db()
    assert batch.state != "cancelled"


def test_a_refused_write_is_recorded_as_an_error() -> None:
    ann = member("operator", username="ann")
    batch = a_batch()
    api = api_as(ann)
    api.post(f"/api/v1/batches/{batch.id}/cancel/", {}, format="json")
    assert api.post(f"/api/v1/batches/{batch.id}/retry/", {}, format="json").status_code == 409
    row = only(action="batch.retry")
    assert (row.outcome, row.detail["code"]) == ("error", "invalid_state")


def test_reading_another_tenants_batch_answers_404_and_is_recorded_as_a_cross_tenant_denial() -> None:
    snoop = member("admin", username="snoop", tenant="globex")
    theirs = a_batch("acme")
    assert api_as(snoop).get(f"/api/v1/batches/{theirs.id}/").status_code == 404
    row = only(action="batch.read", outcome="denied")
    assert row.detail["cross_tenant"] is True
    assert (row.actor, row.tenant_id, row.object_id) == ("user:snoop", theirs.tenant_id, str(theirs.id))
    # An id that exists nowhere is an ordinary 404, nothing to record.
    assert api_as(snoop).get(f"/api/v1/batches/{uuid.uuid4()}/").status_code == 404
    assert AuditRecord.objects.filter(action="batch.read").count() == 1


def test_a_batch_submitted_over_rest_is_recorded_once_with_its_counts_not_its_payloads() -> None:
    ann = member("operator", username="ann")
    body = {
        "tenant": "acme",
        "external_id": "ext-audit-1",
        "pipeline": "essay-analysis",
        "items": [{"key": "e1", "payload": {"text": "secret-marker text"}}],
    }
    assert api_as(ann).post("/api/v1/batches/", body, format="json").status_code == 201
    row = only(action="batch.create")
    assert row.detail == {
        "external_id": "ext-audit-1",
        "pipeline": "essay-analysis",
        "items": 1,
        "created": True,
    }
    assert "secret-marker" not in str(row.detail)


def test_reads_of_payloads_are_recorded_with_the_number_of_items_read() -> None:
    ann = member("viewer", username="ann")
    batch = batch_create(
        request=batch_request(items=[{"key": f"k{i}", "payload": {"text": "t"}} for i in range(7)]), actor="t"
    ).batch
    api = api_as(ann)
    assert api.get(f"/api/v1/batches/{batch.id}/items/?page_size=5").status_code == 200
    assert api.get(f"/api/v1/batches/{batch.id}/").status_code == 200
    reads = list(AuditRecord.objects.filter(action="payload_read").order_by("id"))
    assert [(r.actor, r.detail["items"], r.detail["fields"]) for r in reads] == [
        ("user:ann", 5, ["payload", "last_error"]),
        ("user:ann", 0, ["metadata", "report"]),
    ]
    assert {r.ip for r in reads} == {CLIENT_IP}


@override_settings(BOS_TRUSTED_PROXIES=["10.0.0.0/8"])
def test_behind_a_trusted_proxy_the_forwarded_client_address_is_recorded() -> None:
    ann = member("operator", username="ann")
    batch = a_batch()
    client = APIClient(REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR=f"203.0.113.1, {CLIENT_IP}")
    client.force_authenticate(ann)
    client.post(f"/api/v1/batches/{batch.id}/cancel/", {}, format="json")
    assert only(action="batch.cancel").ip == CLIENT_IP


def test_a_configuration_change_over_the_api_is_recorded_with_its_changes() -> None:
    root = UserFactory(username="root", is_superuser=True, is_staff=True)
    response = api_as(root).put(
        "/api/v1/config/chunk_size/", {"value": 50, "reason": "smaller"}, format="json"
    )
    assert response.status_code == 200, response.json()
    row = only(action="config.set")
    assert (row.actor, row.ip, row.detail["reason"]) == ("user:root", CLIENT_IP, "smaller")
    assert row.detail["changes"]["chunk_size"]["new"] == 50


def test_a_kafka_command_is_recorded_with_its_event_as_actor() -> None:
    event_id = str(uuid.uuid4())
    intake = Intake(request=batch_request(), actor=f"kafka:{event_id}", event_id=event_id)
    [result] = batch_create_many([intake])
    row = only(action="batch.create")
    assert (row.actor, row.object_id, row.outcome) == (f"kafka:{event_id}", str(result.batch.id), "ok")


def test_a_management_command_says_who_acts_and_is_recorded() -> None:
    call_command("bos_config", "set", "chunk_size", "40", "--reason", "tuning")
    command = only(action="command.bos_config")
    assert (command.actor, command.outcome) == ("system:bos_config", "ok")
    assert only(action="config.set").actor == "system:bos_config"


def test_a_command_acting_as_a_user_checks_their_role_and_records_the_denial() -> None:
    member("viewer", username="vic")
    with pytest.raises(CommandError, match="needs a superuser"):
        call_command("bos_config", "set", "chunk_size", "40", "--reason", "r", as_user="vic")
    row = only(action="command.bos_config")
    assert (row.actor, row.outcome) == ("user:vic", "denied")
    assert not AuditRecord.objects.filter(action="config.set").exists()


def _admin_login(account: Any) -> Client:
    account.set_password("pw-123456")
    account.is_staff = True
    account.save()
    browser = Client(REMOTE_ADDR=CLIENT_IP)
    browser.force_login(account)
    return browser


def test_an_admin_action_is_recorded_and_shown_in_recent_actions() -> None:
    ann = member("operator", username="ann")
    batch = a_batch()
    browser = _admin_login(ann)
    response = browser.post(
        "/admin/orchestrator/batch/",
        {"action": "cancel_batches", "_selected_action": [str(batch.id)]},
    )
    assert response.status_code == 302
    row = only(action="batch.cancel")
    assert (row.actor, row.ip, row.detail["reason"]) == ("user:ann", CLIENT_IP, "cancelled from the admin")
    assert LogEntry.objects.filter(object_id=str(batch.id), user=ann).exists()


def test_a_forged_admin_action_on_another_tenants_batch_is_recorded_as_denied() -> None:
    ann = member("operator", username="ann")
    theirs = a_batch("globex")
    browser = _admin_login(ann)
    browser.post(
        "/admin/orchestrator/batch/", {"action": "cancel_batches", "_selected_action": [str(theirs.id)]}
    )
    row = only(action="batch.cancel")
    assert (row.outcome, row.detail["not_found"]) == ("denied", 1)


def test_an_admin_edit_is_recorded() -> None:
    root = UserFactory(username="root", is_superuser=True)
    tenant = Tenant.objects.create(slug="initech", name="Initech")
    browser = _admin_login(root)
    response = browser.post(
        f"/admin/orchestrator/tenant/{tenant.id}/change/", {"slug": "initech", "name": "Initech Ltd"}
    )
    assert response.status_code == 302
    row = only(action="tenant.change")
    assert (row.actor, row.ip, row.object_id, row.tenant_id) == (
        "user:root",
        CLIENT_IP,
        str(tenant.id),
        tenant.id,
    )


def test_an_admin_page_refused_with_403_is_recorded_as_denied() -> None:
    viewer = member("viewer", username="vic")
    browser = _admin_login(viewer)
    # The runtime configuration is platform-wide: a tenant's viewer may not open it.
    assert browser.get("/admin/orchestrator/configversion/add/").status_code == 403
    row = only(outcome="denied")
    assert (row.actor, row.action, row.ip) == ("user:vic", "configversion.add", CLIENT_IP)


def test_every_record_is_also_a_json_log_line() -> None:
    with structlog.testing.capture_logs() as logs:
        call_command("bos_config", "set", "chunk_size", "30", "--reason", "r")
    lines = [line for line in logs if line.get("event") == "audit"]
    assert {line["action"] for line in lines} == {"config.set", "command.bos_config"}
    assert all(line["actor"] == "system:bos_config" for line in lines)


def test_the_audit_api_shows_tenant_admins_their_tenants_records_and_filters_them() -> None:
    boss = member("admin", username="boss")
    viewer = member("viewer", username="vic")
    mine, theirs = a_batch("acme"), a_batch("globex")
    api_as(boss).post(f"/api/v1/batches/{mine.id}/cancel/", {}, format="json")
    api_as(viewer).post(f"/api/v1/batches/{mine.id}/cancel/", {}, format="json")
    call_command("bos_config", "set", "chunk_size", "30", "--reason", "r")  # of no tenant
    batch_create(request=batch_request(tenant="globex"), actor="system:test")
    assert theirs  # globex's records exist, and stay hidden

    response = api_as(boss).get("/api/v1/audit/")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert rows and {r["tenant"] for r in rows} == {"acme"}
    assert {"at", "actor", "ip", "action", "object_type", "object_id", "tenant", "outcome", "detail"} <= set(
        rows[0]
    )
    denied = api_as(boss).get("/api/v1/audit/?outcome=denied").json()["results"]
    assert [(r["actor"], r["action"]) for r in denied] == [("user:vic", "batch.cancel")]
    by_actor = api_as(boss).get("/api/v1/audit/?actor=user:boss&action=batch.").json()["results"]
    assert [r["action"] for r in by_actor] == ["batch.cancel"]
    assert api_as(boss).get("/api/v1/audit/?since=not-a-date").json()["code"] == "invalid_since"

    assert api_as(viewer).get("/api/v1/audit/").status_code == 403
    root = UserFactory(username="root", is_superuser=True)
    everything = api_as(root).get("/api/v1/audit/?page_size=500").json()["results"]
    assert {r["tenant"] for r in everything} >= {"acme", "globex", None}


def test_admin_pages_that_show_payload_derived_fields_are_recorded_as_payload_reads() -> None:
    ann = member("viewer", username="ann")
    batch = a_batch()
    phase = batch.phases.order_by("position").first()
    assert phase is not None
    browser = _admin_login(ann)
    assert browser.get(f"/admin/orchestrator/batch/{batch.id}/change/").status_code == 200
    assert browser.get(f"/admin/orchestrator/phaserun/{phase.id}/change/").status_code == 200
    reads = list(AuditRecord.objects.filter(action="payload_read").order_by("id"))
    assert [(r.actor, r.object_id, r.detail["fields"]) for r in reads] == [
        ("user:ann", str(batch.id), ["metadata", "report"]),
        ("user:ann", str(batch.id), [f"phases.{phase.name}.output"]),
    ]
