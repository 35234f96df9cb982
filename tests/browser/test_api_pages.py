"""The browsable API and the API docs in headless Chromium: a person submits a batch from
the POST form of /api/v1/batches/ (its input fields, items included, as a sample body),
and /api/docs/ groups the operations by resource."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from orchestrator.models import Batch, Membership, Tenant
from tests.support.browser import BrowserPage

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("essay_pipeline"),
]

PASSWORD = "s3cret-pass"


def _operator(username: str = "ops") -> None:
    user = get_user_model().objects.create_user(username, password=PASSWORD, is_staff=True)
    tenant, _ = Tenant.objects.get_or_create(slug="acme")
    Membership.objects.create(user=user, tenant=tenant, role="operator")


def test_a_person_submits_a_batch_from_the_browsable_api(browser_page: BrowserPage) -> None:
    _operator()
    browser_page.login("ops", PASSWORD, next_path="/api/v1/batches/")
    page = browser_page.page

    body = page.locator("#post-generic-content-form textarea[name=_content]")
    sample = json.loads(body.input_value())
    assert {"tenant", "external_id", "pipeline", "items", "priority", "metadata"} <= set(sample)
    assert sample["tenant"] == "acme" and sample["items"] and "payload" in sample["items"][0]
    assert "items_total" not in sample  # output fields are not offered as input
    browser_page.screenshot("api-browsable-post")

    with page.expect_response(lambda r: r.request.method == "POST" and "/api/v1/batches/" in r.url) as sent:
        page.locator("#post-generic-content-form button:has-text('POST')").click()
    assert sent.value.status == 201
    page.wait_for_selector("text=HTTP 201 Created")
    batch = Batch.objects.get(tenant__slug="acme", external_id=sample["external_id"])
    assert batch.items_total == len(sample["items"])
    assert browser_page.problems() == []


def test_the_api_docs_group_operations_by_resource(browser_page: BrowserPage) -> None:
    _operator()
    browser_page.login("ops", PASSWORD, next_path="/api/docs/")
    browser_page.page.wait_for_selector(".opblock-tag")
    tags = {
        t.strip()
        for t in browser_page.page.locator(".opblock-tag a span, .opblock-tag > a").all_inner_texts()
    }

    assert {"batches", "pipelines", "config", "errors", "health"} <= tags, tags
    summaries = browser_page.page.locator(".opblock-summary-description").all_inner_texts()
    assert "Submit a batch" in summaries and "Cancel a batch" in summaries
    assert browser_page.problems() == []
