"""Fixtures for page tests in real headless Chromium against pytest-django's live server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import CHROMIUM_ARGS, VIEWPORT, BrowserPage, chromium_path


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One Chromium for the session.

    Playwright's sync API keeps an event loop running in the test thread, and Django then
    refuses ORM calls from that thread (database set-up and flushes included) unless told
    that this is deliberate: it is, for these tests only, while the browser runs."""
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def browser_page(chromium: Any, live_server: Any) -> Iterator[BrowserPage]:
    """A fresh browser context (no cookies) on the live server, at 1,400 px wide."""
    context = chromium.new_context(viewport=VIEWPORT)
    page = BrowserPage(page=context.new_page(), base_url=live_server.url)
    page.attach()
    try:
        yield page
    finally:
        context.close()
