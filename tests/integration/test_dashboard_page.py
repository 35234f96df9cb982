"""`/dashboard/` through Django's test client: the admin's login, tenant scoping, the
range selector, bounded queries, and the service panels when Kafka does not answer."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests.support.dashboard_data import member, security_data, service_alert, superuser, tenant_data
from tests.support.factories import BatchFactory, ChunkRunFactory, MembershipFactory, PipelineVersionFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

URL = "/dashboard/"


def charts_of(response: Any) -> dict[str, Any]:
    return response.context["charts"]


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_anonymous_visitor_is_sent_to_the_admin_login() -> None:
    response = Client().get(URL)

    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/dashboard/"


def test_an_anonymous_visitor_gets_no_batch_graph() -> None:
    batch = tenant_data("acme", timezone.now(), finished=1).finished[0]

    response = Client().get(reverse("dashboard:batch-graph", args=[batch.id]))

    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_a_tenant_member_sees_their_tenant_and_nothing_of_another() -> None:
    now = timezone.now()
    acme = tenant_data("acme", now)
    tenant_data("zeta", now, finished=2)
    service_alert(now)

    response = logged_in(member(acme.tenant, "ann")).get(URL)

    assert response.status_code == 200
    page = response.content.decode()
    for name in ("acme-essays", "acme-done-2", "acme-running-0", "acme-secret failure", "sla_at_risk"):
        assert name in page
    assert "zeta" not in page
    assert "scoring-dashboard" not in page  # an alert of no tenant: superusers only
    charts = charts_of(response)
    step = response.context["board"].window.step.total_seconds()
    items = sum(sum(d["data"]) for d in charts["throughput"]["datasets"]) * step
    assert round(items) == acme.items_succeeded + acme.items_failed
    finished = sum(sum(d["data"]) for d in charts["batches"]["datasets"])
    assert finished == len(acme.finished)
    assert {label.split(" · ")[0] for label in charts["durations"]["labels"]} == {"acme-essays"}
    deadlines = {
        row["batch"].external_id: row["status"] for row in response.context["board"].deadline_batches
    }
    assert deadlines == {"acme-running-0": "breached", "acme-running-1": "at risk"}
    # The service's panels are no tenant's.
    assert "queues" not in charts and "lag" not in charts
    assert 'id="panel-breakers"' not in page


def test_a_superuser_sees_every_tenant_and_the_service() -> None:
    now = timezone.now()
    acme, zeta = tenant_data("acme", now), tenant_data("zeta", now, finished=2)
    service_alert(now)

    response = logged_in(superuser()).get(URL)

    page = response.content.decode()
    assert "acme-running-1" in page and "zeta-running-1" in page and "scoring-dashboard" in page
    charts = charts_of(response)
    assert sum(sum(d["data"]) for d in charts["batches"]["datasets"]) == len(acme.finished) + len(
        zeta.finished
    )
    assert charts["queues"]["labels"] == settings.BOS_QUEUES
    assert 'id="panel-breakers"' in page


def test_the_charts_reach_the_page_as_json_and_no_inline_script() -> None:
    tenant_data("acme", timezone.now())

    response = logged_in(superuser()).get(URL)

    page = response.content.decode()
    start = page.index('<script id="dashboard-charts" type="application/json">')
    body = page[page.index(">", start) + 1 : page.index("</script>", start)]
    assert set(json.loads(body)) >= {"throughput", "batches", "durations", "error_rate", "alerts"}
    assert "script-src 'self'" in response["Content-Security-Policy"]
    scripts = page.count("<script")
    assert scripts == page.count("<script src=") + 1  # the data block; every other script is a file


def test_a_superuser_may_narrow_the_page_to_one_tenant() -> None:
    now = timezone.now()
    tenant_data("acme", now)
    zeta = tenant_data("zeta", now, finished=2)
    service_alert(now)

    response = logged_in(superuser()).get(URL, {"tenant": "zeta", "range": "6h"})

    page = response.content.decode()
    assert response.status_code == 200 and "zeta-running-0" in page
    assert "acme-" not in page and "scoring-dashboard" not in page
    assert sum(sum(d["data"]) for d in charts_of(response)["batches"]["datasets"]) == len(zeta.finished)
    assert 'href="?range=1h&amp;tenant=zeta"' in page  # the range chips keep the tenant
    assert "queues" in charts_of(response)  # the service's panels are not a tenant's


def test_a_member_of_two_tenants_chooses_between_them_and_no_other() -> None:
    now = timezone.now()
    acme, globex = tenant_data("acme", now), tenant_data("globex", now, finished=1)
    tenant_data("zeta", now, finished=1)
    user = member(acme.tenant, "ann")
    MembershipFactory(user=user, tenant=globex.tenant, role="viewer")
    client = logged_in(user)

    both = client.get(URL)
    one = client.get(URL, {"tenant": "globex"})
    other = client.get(URL, {"tenant": "zeta"})
    unknown = client.get(URL, {"tenant": "nope"})

    assert both.context["board"].tenant_choices == ["acme", "globex"]
    assert "acme-running-0" in both.content.decode() and "globex-running-0" in both.content.decode()
    assert "globex-running-0" in one.content.decode() and "acme-running-0" not in one.content.decode()
    # Another's tenant and no tenant at all answer alike.
    assert other.status_code == unknown.status_code == 404
    assert "you have no tenant &#x27;zeta&#x27;" in other.content.decode()
    assert "zeta-" not in other.content.decode()


def test_each_range_reads_its_own_window() -> None:
    now = timezone.now()
    data = tenant_data("acme", now)
    client = logged_in(member(data.tenant, "ann"))

    for key, buckets in (("1h", 60), ("6h", 72), ("24h", 48), ("7d", 56)):
        response = client.get(URL, {"range": key})
        assert response.status_code == 200
        assert len(charts_of(response)["throughput"]["labels"]) == buckets
        assert response.context["board"].window.key == key


def test_an_unknown_range_is_a_clear_400() -> None:
    client = logged_in(superuser())

    response = client.get(URL, {"range": "1y"})

    assert response.status_code == 400
    assert "range must be one of 1h, 6h, 24h, 7d; got &#x27;1y&#x27;" in response.content.decode()


def test_empty_panels_say_what_is_missing() -> None:
    response = logged_in(superuser()).get(URL, {"range": "1h"})

    page = response.content.decode()
    for text in (
        "No item processed in the last hour.",
        "No batch finished in the last hour.",
        "No phase finished in the last hour.",
        "No error fingerprint seen in the last hour.",
        "No deadline at risk or breached in the last hour.",
        "No anomaly or prediction in the last hour.",
        "No batch is at work.",
    ):
        assert text in page
    assert charts_of(response).keys() <= {"queues", "lag"}


def test_a_range_whose_items_were_all_skipped_has_no_failure_rate() -> None:
    ChunkRunFactory(succeeded=0, skipped=30)

    response = logged_in(superuser()).get(URL)

    board = response.context["board"]
    tiles = {t.label: t.value for t in board.tiles}
    assert tiles["items processed"] == "30" and tiles["item failure rate"] == "–"
    assert [d["label"] for d in charts_of(response)["throughput"]["datasets"]] == ["skipped"]
    assert all(v is None for v in charts_of(response)["error_rate"]["datasets"][0]["data"])


def test_a_user_of_no_tenant_is_told_so() -> None:
    from django.contrib.auth import get_user_model

    tenant_data("acme", timezone.now())
    lonely = get_user_model().objects.create_user("lonely", password="x", is_staff=True)

    response = logged_in(lonely).get(URL)

    page = response.content.decode()
    assert response.status_code == 200 and "You belong to no tenant yet" in page and "acme" not in page


def test_the_page_costs_the_same_queries_whatever_the_rows() -> None:
    now = timezone.now()
    data = tenant_data("acme", now, finished=1)
    client = logged_in(member(data.tenant, "ann"))
    client.get(URL)  # the session and the user, read once

    with CaptureQueriesContext(connection) as few:
        client.get(URL)
    tenant_data("acme", now, finished=6, tag="more-")  # more batches, phases, chunks, alerts
    with CaptureQueriesContext(connection) as many:
        client.get(URL)

    assert len(many) == len(few) <= 20


def test_a_batch_graph_is_shown_to_its_tenant_only() -> None:
    now = timezone.now()
    acme, zeta = tenant_data("acme", now, finished=1), tenant_data("zeta", now, finished=1)
    client = logged_in(member(acme.tenant, "ann"))

    own = client.get(reverse("dashboard:batch-graph", args=[acme.running[0].id]))
    other = client.get(reverse("dashboard:batch-graph", args=[zeta.running[0].id]))

    assert own.status_code == 200
    assert "<svg" in own.content.decode() and "acme-running-0" in own.content.decode()
    assert other.status_code == 404


def test_a_batch_graph_this_process_cannot_plan_says_why() -> None:
    version = PipelineVersionFactory(
        definition={"phases": [{"name": "gone", "handler": "retired.handler", "mode": "per_batch"}]}
    )
    batch = BatchFactory(pipeline_version=version)

    response = logged_in(superuser()).get(reverse("dashboard:batch-graph", args=[batch.id]))

    assert response.status_code == 200
    assert "cannot be drawn here: phase &#x27;gone&#x27;: unknown handler" in response.content.decode()


@pytest.fixture
def silent_kafka() -> Iterator[str]:
    """A port that accepts connections and never answers, as a hung broker would."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_kafka_that_does_not_answer_shows_lag_unavailable_without_holding_the_page(
    silent_kafka: str, settings: Any
) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = [silent_kafka]
    client = logged_in(superuser())

    began = time.monotonic()
    response = client.get(URL)
    took = time.monotonic() - began

    assert response.status_code == 200
    board = response.context["board"]
    assert not board.lag.ok and board.queues.ok and board.breakers.ok
    assert "Unavailable: " in response.content.decode()
    # The page waited for the probes at most their deadline (plus the page's own work).
    assert took < settings.BOS_DASHBOARD_PROBE_SECONDS + 3


def test_security_events_are_shown_to_admins_of_their_tenant_and_all_of_them_to_superusers() -> None:
    now = timezone.now()
    acme, zeta = tenant_data("acme", now), tenant_data("zeta", now)
    security_data(acme.tenant, now)
    security_data(zeta.tenant, now)

    viewer = logged_in(member(acme.tenant, "vic"))
    assert 'id="panel-security"' not in viewer.get(URL).content.decode()

    admin = logged_in(member(acme.tenant, "ada", role="admin")).get(URL)
    chart = charts_of(admin)["security"]
    # acme's three refusals; the failed logins and the throttled minute belong to no tenant.
    assert [(d["label"], sum(d["data"])) for d in chart["datasets"]] == [("refused", 3)]
    page = admin.content.decode()
    assert "250 payload items read" in page and "security.login_failures" not in page

    root = logged_in(superuser()).get(URL)
    totals = {d["label"]: sum(d["data"]) for d in charts_of(root)["security"]["datasets"]}
    assert totals == {"refused": 6, "failed login": 4, "throttled minute": 2}
    page = root.content.decode()
    assert "security.login_failures" in page and "500 payload items read" in page
