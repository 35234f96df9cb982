"""`/metrics` after real work: 50 batches over 5 tenants through the real Celery worker.

The scrape adds up every process of the run (this one, the worker and its children)
from the run's metrics folder, and adds the families read at scrape time. Every family
of docs/observability.md ("Metrics") must have samples, and no label may hold an id.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections import defaultdict
from typing import Any

import pytest
import yaml
from django.db import connection
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from bos_project.settings.environment import BASE_DIR
from orchestrator.breakers import breaker
from orchestrator.kafka.publisher import OutboxPublisher
from orchestrator.models import Batch, OutboxEvent
from orchestrator.observability import metrics
from orchestrator.observability.exporter import serve_machine_metrics
from orchestrator.observability.queries import metered
from orchestrator.services.batches import batch_create
from orchestrator.states import BATCH_TERMINAL
from tests.support.factories import OutboxEventFactory, batch_request, essay_items
from tests.support.processes import free_port
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("celery_worker", "essay_pipeline", "test_pipelines", "kafka_topics"),
]

TENANTS = [f"metrics-{n}" for n in range(5)]
MONITORING = BASE_DIR / "docs" / "monitoring"
SERIES_OF_TYPE = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
METRIC_NAME = re.compile(r"\bbos_[a-z0-9_]+")
UUID_LIKE = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)
# Families that must have samples after the run (process-local and scrape-time).
FAMILIES = {
    "bos_http_requests": "counter",
    "bos_http_request_duration_seconds": "histogram",
    "bos_batches_finished": "counter",
    "bos_items_finished": "counter",
    "bos_task_queue_wait_seconds": "histogram",
    "bos_task_duration_seconds": "histogram",
    "bos_phase_duration_seconds": "histogram",
    "bos_items_processed": "counter",
    "bos_worker_busy_seconds": "counter",
    "bos_worker_wall_seconds": "counter",
    "bos_celery_queue_depth": "gauge",
    "bos_outbox_unpublished": "gauge",
    "bos_outbox_oldest_unpublished_seconds": "gauge",
    "bos_outbox_publish_latency_seconds": "histogram",
    "bos_kafka_consumer_lag_total": "gauge",
    "bos_db_queries": "histogram",
    "bos_db_query_seconds": "histogram",
    "bos_process_resident_memory_bytes": "gauge",
    "bos_processes": "gauge",
    "bos_sla_at_risk": "counter",
    "bos_sla_breached": "counter",
    "bos_batches": "gauge",
}
# The most values a label may take: the caps, plus `_other` and `unknown`.
LABEL_BOUNDS = {
    "tenant": metrics.MAX_TENANTS + 2,
    "pipeline": metrics.MAX_PIPELINES + 2,
    "outcome": len(BATCH_TERMINAL) + 2,
}


def scrape(client: Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse(response.content.decode())


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = [(dict(s.labels), s.value) for s in family.samples]
    return families


def run_batches() -> list[Batch]:
    """50 batches over 5 tenants: completed, completed with errors (bad items) and failed."""
    ids = []
    for n in range(50):
        tenant = TENANTS[n % 5]
        if n % 10 == 9:
            request = batch_request(tenant=tenant, pipeline="explodes", items=[{"key": "a", "payload": {}}])
        else:
            bad = {0} if n % 4 == 0 else set()
            request = batch_request(tenant=tenant, items=essay_items(5 + n % 20, bad=bad))
        ids.append(batch_create(request=request, actor="test").batch.id)
    return [wait_for_terminal(batch_id, timeout=120) for batch_id in ids]


def test_fifty_batches_show_in_every_family_with_bounded_labels(publisher: OutboxPublisher) -> None:
    batches = run_batches()
    assert {b.state for b in batches} == {"completed", "completed_with_errors", "failed"}
    wait_for(
        lambda: (
            publisher.publish_once() == 0
            and not OutboxEvent.objects.filter(published_at__isnull=True).exists()
        ),
        what="outbox drained",
    )
    # The SLA work emits these through the outbox; stored here as it will store them.
    sla = [
        OutboxEventFactory(batch=batches[0], event_type="batch.sla_at_risk", data={}),
        OutboxEventFactory(batch=batches[0], event_type="batch.sla_breached", data={}),
        OutboxEventFactory(batch=batches[1], event_type="batch.sla_at_risk", data={}),
    ]
    client = Client()
    client.get("/healthz")
    client.get(f"/api/v1/batches/{batches[0].id}/")  # unauthenticated: a 401/403 of a named view
    client.get("/no/such/path/")
    try:
        # The worker's memory and wall time are sampled every few seconds.
        def sampled() -> dict[str, list[tuple[dict[str, str], float]]] | None:
            found = scrape(client)
            return found if found.get("bos_worker_wall_seconds") else None

        wait_for(
            sampled, timeout=3 * metrics.SAMPLE_SECONDS, interval=0.5, what="the worker's wall time sampled"
        )
        families = scrape(client)  # this one also sees the scrapes before it
    finally:
        OutboxEvent.objects.filter(id__in=[e.id for e in sla]).delete()  # their schemas come with that work

    for name in FAMILIES:
        assert families.get(name), f"{name} has no samples"

    finished: dict[str, float] = defaultdict(float)
    for labels, value in families["bos_batches_finished"]:
        if labels["tenant"] in TENANTS:
            finished[labels["outcome"]] += value
    expected: dict[str, float] = defaultdict(float)
    for batch in batches:
        expected[batch.state] += 1
    assert finished == expected
    per_tenant: dict[str, float] = defaultdict(float)
    for labels, value in families["bos_batches_finished"]:
        per_tenant[labels["tenant"]] += value
    assert all(per_tenant[t] == 10 for t in TENANTS)
    items = {
        labels["outcome"]: value
        for labels, value in families["bos_items_finished"]
        if labels["tenant"] == TENANTS[0] and labels["pipeline"] == "essay-analysis"
    }
    ours = [
        b
        for b in batches
        if b.tenant.slug == TENANTS[0] and b.pipeline_version.pipeline.name == "essay-analysis"
    ]
    assert items["succeeded"] == sum(b.items_succeeded for b in ours)
    assert items["failed"] == sum(b.items_failed for b in ours) > 0

    sla_at_risk = {(s["pipeline"], s["tenant"]): v for s, v in families["bos_sla_at_risk"]}
    assert sum(v for (p, t), v in sla_at_risk.items() if t in TENANTS) == 2
    assert {s["kind"] for s, _ in families["bos_process_resident_memory_bytes"]} >= {"worker"}
    assert all(v > 1_000_000 for _, v in families["bos_process_resident_memory_bytes"])
    views = {s["view"] for s, _ in families["bos_http_requests"]}
    assert {"healthz", "batch-detail", "metrics", "unmatched"} <= views
    assert {s["task"] for s, _ in families["bos_task_queue_wait_seconds"]} >= {
        "tasks.phases.run_item_chunk_task"
    }
    assert {s["scope"] for s, _ in families["bos_db_queries"]} == {"http", "task"}
    processed = sum(v for s, v in families["bos_items_processed"] if s["kind"] == "worker")
    assert processed >= sum(b.items_total for b in batches)

    for name, samples in families.items():
        for labels, _ in samples:
            for label, value in labels.items():
                assert not UUID_LIKE.search(value), f"{name}{{{label}={value!r}}} holds an id"
        for label, bound in LABEL_BOUNDS.items():
            assert len({labels[label] for labels, _ in samples if label in labels}) <= bound, (name, label)
        series = {tuple(sorted((k, v) for k, v in labels.items() if k != "le")) for labels, _ in samples}
        limit = LABEL_BOUNDS["tenant"] * LABEL_BOUNDS["pipeline"] * LABEL_BOUNDS["outcome"]
        assert len(series) <= limit, f"{name}: {len(series)} series"


def test_a_slow_query_is_logged_with_its_fingerprint_and_counted(db: None) -> None:
    with capture_logs() as logs, metered("task", lambda: "test.slow_query"), connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.25), 'secret-literal', 42")  # above the 200 ms default
        cursor.execute("SELECT 1")
    slow = [line for line in logs if line["event"] == "slow query"]
    assert len(slow) == 1
    assert slow[0]["sql_fingerprint"] == "SELECT pg_sleep(?), ?, ?"
    assert slow[0]["duration_ms"] >= 250 and slow[0]["threshold_ms"] == 200
    assert slow[0]["scope"] == "task" and slow[0]["name"] == "test.slow_query"
    families = parse(Client().get("/metrics").content.decode())
    counted = {s["name"]: v for s, v in families["bos_db_slow_queries"]}
    assert counted["test.slow_query"] >= 1


def test_a_machine_without_the_web_serves_its_metrics_on_bos_metrics_port(db: None) -> None:
    port = free_port()
    assert serve_machine_metrics("127.0.0.1", port)
    assert not serve_machine_metrics("127.0.0.1", port)  # taken: another process serves it
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:  # noqa: S310
        families = parse(answer.read().decode())
    assert families.get("bos_process_resident_memory_bytes")  # the worker's, from the folder
    assert "bos_batches" not in families  # database families are the web's


def dashboard_expressions(node: Any) -> list[str]:
    """Every PromQL text of the dashboard: its panels' `expr`s and its variables' queries."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(dashboard_expressions(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(dashboard_expressions(value))
    return found


def test_the_dashboard_and_the_alert_rules_use_only_metrics_that_exist(publisher: OutboxPublisher) -> None:
    rules = yaml.safe_load((MONITORING / "prometheus-alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {"alert", "expr"} <= set(alerts[0]) and all(isinstance(r["expr"], str) for r in alerts)
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    expressions = [r["expr"] for r in alerts] + dashboard_expressions(dashboard)
    used = {name for text in expressions for name in METRIC_NAME.findall(text)}
    assert len(used) > 20

    # Activity enough for every family to have samples: a completed and a failed batch
    # through the worker, their events published, a slow query, a known breaker.
    done = [
        batch_create(request=batch_request(tenant="monitoring"), actor="test").batch.id,
        batch_create(
            request=batch_request(
                tenant="monitoring", pipeline="explodes", items=[{"key": "a", "payload": {}}]
            ),
            actor="test",
        ).batch.id,
    ]
    for batch_id in done:
        wait_for_terminal(batch_id)
    wait_for(lambda: publisher.publish_once() == 0, what="outbox drained")
    with metered("task", lambda: "test.monitoring"), connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.25)")
    breaker("scoring")
    client = Client()
    client.get("/healthz")
    body = client.get("/metrics").content.decode()
    exposed = set()
    for family in text_string_to_metric_families(body):
        # A family /metrics declares offers its type's series, with samples yet or not
        # (the SLA counters have none until the SLA work emits its events).
        exposed.add(family.name)
        exposed.update(family.name + suffix for suffix in SERIES_OF_TYPE.get(family.type, ()))
        exposed.update(sample.name for sample in family.samples)
    assert sorted(used - exposed) == []
