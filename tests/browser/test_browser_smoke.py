"""The browser fixture works: Chromium renders the admin's login page, served with its
static files, and logs in a user, with no console error and no failed request."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.support.browser import BrowserPage

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_login_page_renders_and_logs_in_without_errors(browser_page: BrowserPage) -> None:
    get_user_model().objects.create_superuser("root", "root@example.com", "s3cret-pass")

    browser_page.login("root", "s3cret-pass")

    assert browser_page.page.url.endswith("/admin/")
    assert "Site administration" in browser_page.page.content()
    assert browser_page.problems() == []
