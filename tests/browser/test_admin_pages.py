"""The admin's batch list and batch page in headless Chromium at 1,400 px: newest first,
every column inside the viewport, states coloured, long ids on one line with the whole
id in a tooltip; the report as tables, failed items with their errors, the graph whole,
phase durations in ms, times to the second, and the batch's task results a click away."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model

from orchestrator.models import Batch, BatchItem, Membership, Tenant
from orchestrator.services.batches import batch_create
from orchestrator.task_results import task_results_of
from tests.support.browser import VIEWPORT, BrowserPage
from tests.support.factories import batch_request, essay_items
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker", "essay_pipeline"),
]

LONG_ID = "acme-2026-11-29-EN101-spring-term-section-42-final-essays-batch-0001"
PASSWORD = "s3cret-pass"


def _operator() -> None:
    """An operator of `acme` who logs in to the admin (as `create_api_user --password` makes one)."""
    user = get_user_model().objects.create_user("ops", password=PASSWORD, is_staff=True)
    Membership.objects.create(user=user, tenant=Tenant.objects.get(slug="acme"), role="operator")


def _batches() -> tuple[Batch, Batch]:
    """A batch with a long external id that completes with errors (fanned out: 12 items,
    one too short), then a newer small one that completes."""
    with_errors = batch_create(
        request=batch_request(tenant="acme", external_id=LONG_ID, items=essay_items(12, bad={3})),
        actor="test",
    ).batch
    wait_for_terminal(with_errors.id)
    done = batch_create(request=batch_request(tenant="acme", items=essay_items(3)), actor="test").batch
    wait_for_terminal(done.id)
    wait_for(lambda: task_results_of(with_errors).exists(), what="the batch's task results")
    return Batch.objects.get(id=with_errors.id), Batch.objects.get(id=done.id)


def test_the_batch_list_fits_1400_px_newest_first_with_coloured_states(browser_page: BrowserPage) -> None:
    with_errors, done = _batches()
    _operator()
    browser_page.login("ops", PASSWORD, next_path="/admin/orchestrator/batch/")
    page = browser_page.page
    browser_page.screenshot("admin-batch-list")

    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).locator(".field-batch span.bos-id").get_attribute("title") == done.external_id
    # Every column, the last included, inside the viewport; nothing to scroll sideways.
    last = page.locator("#result_list thead th").last.bounding_box()
    assert last is not None and last["x"] + last["width"] <= VIEWPORT["width"]
    shown = page.locator("#changelist .results").bounding_box()
    assert shown is not None and last["x"] + last["width"] <= shown["x"] + shown["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    results = page.locator("#changelist .results").evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert results[0] <= results[1], f"the list scrolls sideways: {results}"
    # The long id on one line, cut, with the whole id in its tooltip.
    long_cell = rows.nth(1).locator(".field-batch span.bos-id")
    assert long_cell.get_attribute("title") == LONG_ID
    assert long_cell.inner_text().endswith("…")
    one_line = page.evaluate(
        "parseFloat(getComputedStyle(document.querySelector('#result_list td')).lineHeight)"
    )
    box = long_cell.bounding_box()
    assert box is not None and box["height"] < 2 * one_line
    # States coloured by their tone.
    warn = rows.nth(1).locator("td.field-batch_state span.bos-state--warn")
    assert warn.inner_text() == "completed with errors"
    ok = rows.nth(0).locator("td.field-batch_state span.bos-state--ok")
    assert ok.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(240, 253, 244)"
    assert browser_page.problems() == []


def test_the_batch_page_shows_report_tables_failed_items_the_whole_graph_and_ms(
    browser_page: BrowserPage,
) -> None:
    with_errors, _ = _batches()
    _operator()
    failed = BatchItem.objects.get(batch=with_errors, state="failed")
    browser_page.login("ops", PASSWORD, next_path=f"/admin/orchestrator/batch/{with_errors.id}/change/")
    page = browser_page.page
    browser_page.screenshot("admin-batch-page")

    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    report = page.locator("#bos-report table.bos-report")
    assert report.count() >= 1
    assert "essays analysed" in report.first.inner_text()
    assert "{" not in page.locator("#bos-report").inner_text()  # no JSON blob
    failed_items = page.locator("#bos-failed-items").inner_text()
    assert failed.key in failed_items and failed.failed_phase in failed_items
    assert failed.error_class in failed_items and failed.last_error[:60] in failed_items
    # The graph is drawn whole: scaled into its box, which does not scroll.
    graph = page.locator("#bos-progress .bos-graph")
    assert graph.evaluate("e => e.scrollWidth <= e.clientWidth")
    svg, holder = graph.locator("svg").bounding_box(), graph.bounding_box()
    assert (
        svg is not None
        and holder is not None
        and svg["x"] + svg["width"] <= holder["x"] + holder["width"] + 1
    )
    # Phases of a dozen essays take milliseconds; their times show seconds.
    durations = page.locator("#phases-group td.field-duration").all_inner_texts()
    assert any(d.endswith(" ms") for d in durations), durations
    started = page.locator("#phases-group td.field-started_at").first.inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", started.strip()), started
    # The batch's task results, one click away, and only this batch's.
    with page.expect_navigation(wait_until="networkidle"):
        page.locator("#bos-task-results a").click()
    shown = page.locator("#result_list tbody tr").count()
    assert shown == task_results_of(with_errors).count() > 0
    assert browser_page.problems() == []
