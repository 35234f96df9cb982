"""Consumer lag in `/metrics`, measured on the broker at scrape time.

The lag of BOS_CONSUMER_GROUP on BOS_TOPIC_REQUESTS, per partition and in total (see
orchestrator.kafka.groups for how it is computed, also on the embedded broker). Every
scrape waits at most BOS_LAG_METRICS_TIMEOUT_SECONDS for the broker; when the broker cannot
be reached in time, or answers something unusable, the scrape still succeeds with
`bos_kafka_lag_up 0` and no lag series.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily, Metric

from orchestrator.kafka.groups import Broker, TopicLag, topic_lag

logger = logging.getLogger(__name__)


class ConsumerLagCollector:
    def __init__(
        self, *, group: str | None = None, topic: str | None = None, timeout: float | None = None
    ) -> None:
        self.group = group or settings.BOS_CONSUMER_GROUP
        self.topic = topic or settings.BOS_TOPIC_REQUESTS
        self.timeout = settings.BOS_LAG_METRICS_TIMEOUT_SECONDS if timeout is None else timeout

    def _measure(self) -> TopicLag | None:
        """The lag, or None if it could not be had within the timeout.

        It is measured in a thread so the scrape waits at most `timeout` seconds in all,
        however many requests it takes; a measurement still running then is abandoned
        (its own requests time out on their own).
        """
        result: list[TopicLag] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with Broker(timeout=self.timeout) as broker:
                    result.append(topic_lag(broker, self.group, self.topic))
            except Exception as exc:  # noqa: BLE001 - a scrape never fails because of the broker
                errors.append(exc)

        worker = threading.Thread(target=run, name="bos-lag-metrics", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if result:
            return result[0]
        why = repr(errors[0]) if errors else f"no answer within {self.timeout:g}s"
        logger.warning("consumer lag of %s on %s not measured: %s", self.group, self.topic, why)
        return None

    def collect(self) -> Iterator[Metric]:
        lag = self._measure()
        up = GaugeMetricFamily(
            "bos_kafka_lag_up", "1 if the consumer lag was measured at this scrape, 0 if the broker failed"
        )
        up.add_metric([], 1.0 if lag is not None else 0.0)
        yield up
        if lag is None:
            return
        per_partition = GaugeMetricFamily(
            "bos_kafka_consumer_lag",
            "Messages of the partition the consumer group has not committed yet",
            labels=["group", "topic", "partition"],
        )
        for p in lag.partitions:
            per_partition.add_metric([lag.group, lag.topic, str(p.partition)], float(p.lag))
        yield per_partition
        total = GaugeMetricFamily(
            "bos_kafka_consumer_lag_total",
            "Messages of the topic the consumer group has not committed yet",
            labels=["group", "topic"],
        )
        total.add_metric([lag.group, lag.topic], float(lag.total))
        yield total
