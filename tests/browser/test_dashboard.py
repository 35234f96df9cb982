"""`/dashboard/` in headless Chromium: logged in through the admin's form, it draws every
chart with data, shows no console error and no failed request, keeps a tenant member to
their tenant, and links each batch to its admin page and its graph.

The superuser's page is kept as `$BOS_HOME/artifacts/screenshots/dashboard.png`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from orchestrator.breakers import NAMESPACE, _client, breaker
from tests.support.browser import BrowserPage
from tests.support.dashboard_data import (
    PASSWORD,
    member,
    security_data,
    service_alert,
    superuser,
    tenant_data,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Every chart on the page: its name (data-chart) and its datasets' labels and sizes.
CHARTS_JS = """
() => Array.from(document.querySelectorAll("canvas[data-chart]")).map((canvas) => {
  const chart = Chart.getChart(canvas);
  return {
    name: canvas.dataset.chart,
    drawn: Boolean(chart),
    datasets: chart ? chart.data.datasets.map((d) => ({label: d.label, points: d.data.length,
      sum: d.data.reduce((a, b) => a + (b || 0), 0)})) : [],
    labels: chart ? chart.data.labels.length : 0,
    width: canvas.getBoundingClientRect().width,
  };
})
"""
USER_CHARTS = {"throughput", "batches", "durations", "error_rate", "alerts"}
SERVICE_CHARTS = {"queues", "lag"}
SECURITY_CHARTS = {"security"}


@pytest.fixture
def open_breaker() -> Iterator[str]:
    """A dependency whose breaker is open (in Redis, as workers would leave it)."""
    name = "dashboard-scoring"
    breaker(name).open()
    yield name
    for key in _client().scan_iter(f"{NAMESPACE}:{name}:*"):
        _client().delete(key)


@pytest.fixture
def two_tenants() -> dict[str, Any]:
    now = timezone.now()
    data = {"acme": tenant_data("acme", now), "zeta": tenant_data("zeta", now, finished=2)}
    service_alert(now)
    security_data(data["acme"].tenant, now)
    return data


def charts(page: BrowserPage) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in page.page.evaluate(CHARTS_JS)}


def assert_drawn_with_data(found: dict[str, dict[str, Any]], names: set[str]) -> None:
    assert set(found) == names
    for name, chart in found.items():
        assert chart["drawn"], name
        assert chart["datasets"], name
        assert all(d["points"] > 0 for d in chart["datasets"]), name
        assert chart["width"] > 200, name


@pytest.mark.usefixtures("kafka_topics")
def test_a_superuser_sees_every_chart_drawn_with_data(
    browser_page: BrowserPage, two_tenants: dict[str, Any], open_breaker: str
) -> None:
    superuser("root")

    browser_page.login("root", PASSWORD, next_path="/dashboard/")

    assert browser_page.page.url.endswith("/dashboard/")
    found = charts(browser_page)
    assert_drawn_with_data(found, USER_CHARTS | SERVICE_CHARTS | SECURITY_CHARTS)
    items = two_tenants["acme"].items_succeeded + two_tenants["zeta"].items_succeeded
    assert sum(d["sum"] for d in found["throughput"]["datasets"]) * 1800 == pytest.approx(
        items + two_tenants["acme"].items_failed + two_tenants["zeta"].items_failed, abs=0.01
    )
    security = browser_page.page.inner_text("#panel-security")
    assert "security.login_failures" in security and "203.0.113.50" in security
    assert sum(d["sum"] for d in found["security"]["datasets"]) == 6  # 3 refused, 2 logins, 1 throttled
    breakers = browser_page.page.inner_text("#panel-breakers")
    assert open_breaker in breakers and "open" in breakers
    text = browser_page.page.inner_text("main")
    assert "acme-running-0" in text and "zeta-running-0" in text and "scoring-dashboard" in text
    assert browser_page.problems() == []
    shot = browser_page.screenshot("dashboard")
    assert shot.stat().st_size > 20_000


def test_a_tenant_member_sees_only_their_tenant(
    browser_page: BrowserPage, two_tenants: dict[str, Any]
) -> None:
    member(two_tenants["acme"].tenant, "ann")

    browser_page.login("ann", PASSWORD, next_path="/dashboard/")

    assert_drawn_with_data(charts(browser_page), USER_CHARTS)
    html = browser_page.page.content()
    assert "acme-essays" in html and "acme-secret failure" in html
    assert "zeta" not in html
    assert browser_page.problems() == []


def test_each_range_draws_its_buckets(browser_page: BrowserPage, two_tenants: dict[str, Any]) -> None:
    member(two_tenants["acme"].tenant, "ann")
    browser_page.login("ann", PASSWORD, next_path="/dashboard/")

    for key, buckets in (("1h", 60), ("7d", 56)):
        browser_page.page.click(f"nav.ranges a[href='?range={key}']")
        browser_page.page.wait_for_load_state("networkidle")
        assert browser_page.page.url.endswith(f"?range={key}")
        assert charts(browser_page)["throughput"]["labels"] == buckets
    assert browser_page.problems() == []


def test_a_batch_links_to_its_admin_page_and_its_graph(
    browser_page: BrowserPage, two_tenants: dict[str, Any]
) -> None:
    acme = two_tenants["acme"]
    member(acme.tenant, "ann")
    browser_page.login("ann", PASSWORD, next_path="/dashboard/")
    running = acme.running[0]

    row = browser_page.page.locator("#panel-active tr", has_text=running.external_id)
    with browser_page.page.expect_navigation(wait_until="networkidle"):
        row.locator("a.batch-link").click()
    assert browser_page.page.url.endswith(f"/admin/orchestrator/batch/{running.id}/change/")
    assert running.external_id in browser_page.page.content()

    browser_page.goto("/dashboard/")
    row = browser_page.page.locator("#panel-active tr", has_text=running.external_id)
    with browser_page.page.expect_navigation(wait_until="networkidle"):
        row.locator("a.graph-link").click()
    assert browser_page.page.url.endswith(f"/dashboard/batches/{running.id}/graph/")
    assert browser_page.page.locator(".graph svg").count() == 1
    assert browser_page.problems() == []


def test_a_superuser_picks_one_tenant_from_the_menu(
    browser_page: BrowserPage, two_tenants: dict[str, Any]
) -> None:
    superuser("root")
    browser_page.login("root", PASSWORD, next_path="/dashboard/?range=6h")

    with browser_page.page.expect_navigation(wait_until="networkidle"):
        browser_page.page.select_option("#tenant-select", "zeta")

    assert browser_page.page.url.endswith("/dashboard/?range=6h&tenant=zeta")
    found = charts(browser_page)
    assert_drawn_with_data({n: c for n, c in found.items() if n in USER_CHARTS}, USER_CHARTS)
    text = browser_page.page.inner_text("main")
    assert "zeta-running-0" in text and "acme-" not in text
    assert browser_page.problems() == []
