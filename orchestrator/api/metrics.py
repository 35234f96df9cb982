"""`/metrics`: the machine's process metrics plus families computed at scrape time.

Two sources (docs/observability.md, "Metrics"):
- process-local instruments of every BOS process on this machine, added up from the
  multiprocess folder (orchestrator/observability/metrics.py);
- families read at scrape time, the same from every web process whatever worker did
  the work: from PostgreSQL (batches by state, phase durations over the last 24 h, the
  outbox backlog and its oldest event's age, SLA events counted from the outbox), Redis
  (breakers, service clients), the Celery broker (queue depth) and Kafka (consumer lag).

With `BOS_METRICS_TOKEN` set, only `Authorization: Bearer <token>` reads them (a 401 JSON
otherwise; orchestrator/security/bearer.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, Min
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from orchestrator.api.lag_metrics import ConsumerLagCollector
from orchestrator.breakers import breaker_states
from orchestrator.models import Batch, OutboxEvent, PhaseRun
from orchestrator.observability import metrics as process_metrics
from orchestrator.observability import multiprocess
from orchestrator.security import bearer
from orchestrator.service_clients.metrics import ServiceClientCollector
from orchestrator.services.reconcile import broker_queue_depth
from orchestrator.states import BatchState

logger = logging.getLogger(__name__)

PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
PHASE_WINDOW = timedelta(hours=24)


class DatabaseCollector:
    def collect(self) -> Iterator[Metric]:
        batches = GaugeMetricFamily("bos_batches", "Batches by state", labels=["state"])
        counts = dict(Batch.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
        for state in BatchState:
            batches.add_metric([state.value], counts.get(state.value, 0))
        yield batches

        durations = HistogramMetricFamily(
            "bos_phase_duration_seconds",
            "Durations of phases finished in the last 24 hours",
            labels=["pipeline", "phase"],
        )
        rows = (
            PhaseRun.objects.filter(finished_at__gte=timezone.now() - PHASE_WINDOW, started_at__isnull=False)
            .annotate(d=F("finished_at") - F("started_at"))
            .values_list("batch__pipeline_version__pipeline__name", "name", "d")
        )
        series: dict[tuple[str, str], list[float]] = {}
        for pipeline, phase, duration in rows.iterator(chunk_size=5000):
            series.setdefault((pipeline, phase), []).append(duration.total_seconds())
        for labels, values in sorted(series.items()):
            buckets = [(str(b), sum(1 for v in values if v <= b)) for b in PHASE_BUCKETS]
            buckets.append(("+Inf", len(values)))
            durations.add_metric(list(labels), buckets, sum(values))
        yield durations

        circuits = GaugeMetricFamily(
            "bos_circuit_open",
            "1 while a dependency's circuit breaker is open (or half-open: 0.5)",
            labels=["dependency"],
        )
        failures = GaugeMetricFamily(
            "bos_circuit_failures", "Consecutive failures counted", labels=["dependency"]
        )
        for circuit in breaker_states():
            level = {"open": 1.0, "half-open": 0.5}.get(circuit["state"], 0.0)
            circuits.add_metric([circuit["dependency"]], level)
            failures.add_metric([circuit["dependency"]], float(circuit["failures"]))
        yield circuits
        yield failures

        pending = OutboxEvent.objects.filter(published_at__isnull=True).aggregate(
            n=Count("id"), oldest=Min("created_at")
        )
        backlog = GaugeMetricFamily("bos_outbox_unpublished", "Outbox events not yet published")
        backlog.add_metric([], pending["n"])
        yield backlog
        age = GaugeMetricFamily(
            "bos_outbox_oldest_unpublished_seconds",
            "Age of the oldest outbox event not yet published (0: none)",
        )
        oldest = pending["oldest"]
        age.add_metric([], max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0)
        yield age
        yield from sla_families()


# The SLA events (CONTRACT §3) counted by sla_families(), and the family of each.
SLA_EVENTS = {
    "batch.sla_at_risk": (
        "bos_sla_at_risk",
        "Batches predicted to miss their deadline (batch.sla_at_risk events)",
    ),
    "batch.sla_breached": (
        "bos_sla_breached",
        "Batches whose deadline passed before they ended (batch.sla_breached events)",
    ),
}


def sla_families() -> Iterator[Metric]:
    """SLA counters by pipeline and tenant, counted from the outbox at scrape time.

    The events are the record (an event exists iff its change committed, and outbox rows
    are kept), so whichever process detected the risk or the breach, every scrape counts
    the same, also after restarts. The partial index `outbox_sla_events` keeps it cheap.
    Tenants and pipelines beyond the caps are summed as `_other`.
    """
    rows = (
        OutboxEvent.objects.filter(event_type__in=SLA_EVENTS)
        .values_list("event_type", "tenant__slug", "envelope__data__pipeline")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[tuple[str, str, str], int] = {}
    tenants = process_metrics.BoundedLabel(process_metrics.MAX_TENANTS)
    pipelines = process_metrics.BoundedLabel(process_metrics.MAX_PIPELINES)
    for event_type, tenant, pipeline, n in sorted(rows, key=lambda r: (-r[3], str(r[1]), str(r[2]))):
        key = (event_type, pipelines(pipeline), tenants(tenant))
        counts[key] = counts.get(key, 0) + n
    for event_type, (name, documentation) in SLA_EVENTS.items():
        family = CounterMetricFamily(name, documentation, labels=["pipeline", "tenant"])
        for (kind, pipeline, tenant), n in sorted(counts.items()):
            if kind == event_type:
                family.add_metric([pipeline, tenant], n)
        yield family


class QueueDepthCollector:
    """Messages waiting in each of BOS's Celery queues (reconcile.broker_queue_depth)."""

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "bos_celery_queue_depth", "Messages waiting in a Celery queue", labels=["queue"]
        )
        up = GaugeMetricFamily(
            "bos_celery_queue_depth_up", "1 if the broker answered the queue depths, else 0"
        )
        try:
            for queue in settings.BOS_QUEUES:
                depth.add_metric([queue], float(broker_queue_depth(queue)))
        except Exception as exc:  # noqa: BLE001 - a scrape never fails because of the broker
            logger.warning("Celery queue depth not measured: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield depth


def metrics(request: HttpRequest) -> HttpResponse:
    if not bearer.allowed(request.META.get("HTTP_AUTHORIZATION"), settings.BOS_METRICS_TOKEN):
        response = HttpResponse(bearer.UNAUTHORIZED, status=401, content_type="application/json")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry()
    path = multiprocess.active_path()
    if path is not None:
        registry.register(multiprocess.LockedMultiProcessCollector(path))
    registry.register(QueueDepthCollector())
    registry.register(DatabaseCollector())
    registry.register(ConsumerLagCollector())
    registry.register(ServiceClientCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
