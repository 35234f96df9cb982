"""`/metrics`: Prometheus metrics computed from PostgreSQL at scrape time.

Reading them from the database (not per-process counters) gives the same answer from
every web process, whatever worker did the work: batches by state, phase durations
as a histogram over recently finished phases, the outbox backlog.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.db.models import Count, F
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from orchestrator.api.lag_metrics import ConsumerLagCollector
from orchestrator.breakers import breaker_states
from orchestrator.models import Batch, OutboxEvent, PhaseRun
from orchestrator.service_clients.metrics import ServiceClientCollector
from orchestrator.states import BatchState

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

        backlog = GaugeMetricFamily("bos_outbox_unpublished", "Outbox events not yet published")
        backlog.add_metric([], OutboxEvent.objects.filter(published_at__isnull=True).count())
        yield backlog


def metrics(request: HttpRequest) -> HttpResponse:
    registry = CollectorRegistry()
    registry.register(DatabaseCollector())
    registry.register(ConsumerLagCollector())
    registry.register(ServiceClientCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
