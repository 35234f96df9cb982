"""Per-tenant values of runtime settings (scope `tenant`): set through the API and the
command, used for that tenant's batches only, refused for global settings and unknown
tenants, kept consistent with the global values, and rolled back like any change."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from orchestrator.config import runtime, store
from orchestrator.config.store import InvalidConfig
from orchestrator.errors import InvalidRequest
from orchestrator.models import Batch, Tenant
from orchestrator.security.tokens import issue as issue_token
from orchestrator.services.batches import batch_create
from tests.support.factories import TenantFactory, batch_request, publish_test_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db")]


@pytest.fixture(autouse=True)
def tenants() -> None:
    TenantFactory(slug="acme")
    TenantFactory(slug="globex")


def items(n: int) -> list[dict[str, Any]]:
    return [{"key": f"i{i}", "payload": {}} for i in range(n)]


@pytest.mark.usefixtures("held_batches")  # read, not run: no worker writes while the test ends
def test_a_tenant_s_own_value_applies_to_that_tenant_only() -> None:
    default = runtime("chunk_size")
    store.config_set(changes={"chunk_size": 7}, actor="test", reason="acme's items are big", tenant="acme")
    acme, globex = Tenant.objects.get(slug="acme"), Tenant.objects.get(slug="globex")
    assert runtime("chunk_size", tenant="acme") == 7
    assert runtime("chunk_size", tenant=acme.id) == 7
    assert runtime("chunk_size", tenant=globex.id) == default
    assert runtime("chunk_size") == default

    publish_test_pipeline("tenant-chunks", [{"name": "work", "handler": "test.echo", "mode": "per_item"}])
    made = {
        slug: batch_create(
            request=batch_request(pipeline="tenant-chunks", tenant=slug, items=items(20)), actor="test"
        ).batch
        for slug in ("acme", "globex")
    }
    assert Batch.objects.get(id=made["acme"].id).phases.get(name="work").chunk_size == 7
    assert Batch.objects.get(id=made["globex"].id).phases.get(name="work").chunk_size == default


@pytest.mark.usefixtures("held_batches")
def test_a_tenant_may_accept_larger_batches_than_the_others() -> None:
    store.config_set(changes={"max_items": 3, "inline_max_items": 3}, actor="test", reason="small by default")
    store.config_set(changes={"max_items": 50}, actor="test", reason="acme sends more", tenant="acme")
    publish_test_pipeline("tenant-limit", [{"name": "work", "handler": "test.echo", "mode": "per_item"}])
    batch_create(request=batch_request(pipeline="tenant-limit", tenant="acme", items=items(10)), actor="test")
    with pytest.raises(InvalidRequest) as refused:
        batch_create(
            request=batch_request(pipeline="tenant-limit", tenant="globex", items=items(10)), actor="t"
        )
    assert refused.value.code == "too_many_items"


def test_global_settings_and_unknown_tenants_are_refused() -> None:
    with pytest.raises(InvalidConfig) as scoped:
        store.config_set(changes={"lag_alert_threshold": 5}, actor="t", reason="x", tenant="acme")
    assert scoped.value.details == {"key": "lag_alert_threshold", "rule": "scope"}
    with pytest.raises(InvalidConfig) as unknown:
        store.config_set(changes={"chunk_size": 5}, actor="t", reason="x", tenant="initech")
    assert unknown.value.details["rule"] == "known_tenant"


def test_a_global_change_that_breaks_a_tenant_s_combination_is_refused() -> None:
    store.config_set(changes={"inline_max_items": 40}, actor="t", reason="x", tenant="acme")
    with pytest.raises(InvalidConfig) as refused:
        store.config_set(changes={"max_items": 20}, actor="t", reason="lower for all")
    assert refused.value.details["rule"] == "inline_max_items <= max_items"
    assert "for tenant acme" in str(refused.value.message)


def test_the_api_sets_and_lists_tenant_values_and_a_rollback_removes_them() -> None:
    user = get_user_model().objects.create(username="root", is_superuser=True, is_staff=True)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(user).key}")
    answer = api.put(
        "/api/v1/config/chunk_size/", {"value": 9, "tenant": "globex", "reason": "per tenant"}, format="json"
    )
    assert answer.status_code == 200, answer.json()
    assert answer.json()["tenant_values"] == {"globex": 9}
    assert answer.json()["value"] == runtime("chunk_size")  # the global value is unchanged
    history = api.get("/api/v1/config/history/").json()["results"]
    assert history[0]["changes"] == {"tenant.globex.chunk_size": {"old": None, "new": 9}}

    api.post("/api/v1/config/rollback/", {"version": 0, "reason": "undo"}, format="json")
    listed = {i["key"]: i for i in api.get("/api/v1/config/").json()["results"]}
    assert listed["chunk_size"]["tenant_values"] == {}
    assert runtime("chunk_size", tenant="globex") == runtime("chunk_size")
