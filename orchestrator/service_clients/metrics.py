"""The Prometheus collector of service-client figures, read from Redis at scrape time.

- `bos_service_requests_total{service,outcome}` — calls by outcome (see `health`)
- `bos_service_latency_seconds{service}` — a histogram of attempt latencies
- `bos_service_success_ratio{service}` — over the rolling window (absent while idle)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from orchestrator.service_clients import health

logger = logging.getLogger(__name__)


class ServiceClientCollector:
    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "bos_service_requests", "Calls to downstream services by outcome", labels=["service", "outcome"]
        )
        latency = HistogramMetricFamily(
            "bos_service_latency_seconds",
            "Latency of attempts to call a downstream service",
            labels=["service"],
        )
        ratio = GaugeMetricFamily(
            "bos_service_success_ratio",
            "Share of attempts in the health window the service answered (2xx-4xx but 408/425/429)",
            labels=["service"],
        )
        try:
            for service in health.known_services():
                totals = health.totals(service)
                for outcome, count in totals["outcomes"].items():
                    requests.add_metric([service, outcome], count)
                cumulative, buckets = 0, []
                for bound, count in zip((*health.LATENCY_BUCKETS, "+Inf"), totals["buckets"], strict=True):
                    cumulative += count
                    buckets.append((str(bound), cumulative))
                latency.add_metric([service], buckets, totals["sum"])
                window = health.window(service)
                if window["success_ratio"] is not None:
                    ratio.add_metric([service], window["success_ratio"])
        except redis.RedisError as exc:
            logger.warning("service metrics unavailable: %s", exc)
            return
        yield requests
        yield latency
        yield ratio
