"""The browsable API's POST form of /api/v1/batches/ offers the input (items included) as a
sample body in the caller's tenant, not the output fields (Django's test client; the
submission itself is tests/browser/test_api_pages.py)."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.test import Client

from tests.support.factories import MembershipFactory, TenantFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _raw_form_body(page: str) -> dict[str, object]:
    found = re.search(r'<textarea name="_content"[^>]*>(.*?)</textarea>', page, re.S)
    assert found, "no raw-data POST form"
    return json.loads(html.unescape(found.group(1)))


def test_the_post_form_holds_a_sample_body_with_items_in_the_operators_tenant() -> None:
    membership = MembershipFactory(tenant=TenantFactory(slug="globex"), role="operator")
    client = Client()
    client.force_login(membership.user)

    page = client.get("/api/v1/batches/", HTTP_ACCEPT="text/html").content.decode()

    body = _raw_form_body(page)
    assert body["tenant"] == "globex"
    assert body["pipeline"] == "essay-analysis"
    assert isinstance(body["items"], list) and body["items"][0]["key"]
    assert not {"id", "state", "items_total", "created_at"} & set(body)
