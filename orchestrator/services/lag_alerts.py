"""The consumer lag alert: lag over a threshold for a period raises one alert per episode.

`lag_check` (run by Celery beat every BOS_LAG_CHECK_INTERVAL_SECONDS) measures the lag of
BOS_CONSUMER_GROUP on BOS_TOPIC_REQUESTS. An *episode* starts at the first check that
sees the total lag above BOS_LAG_ALERT_THRESHOLD; its start is kept in Redis, so every
worker and every run sees the same episode. Once a check finds the episode at least
BOS_LAG_ALERT_SECONDS old, it raises the alert: an `Alert` row (kind `consumer_lag`, no
tenant) and a `consumer.lag_alert` outbox event (published to BOS_TOPIC_SYSTEM_EVENTS), in one transaction, once per episode (a
Redis flag claimed with HSETNX). The first check at or under the threshold ends the
episode. A check that cannot reach the broker changes nothing.

The clock and the measurement are parameters, so the logic is tested without beat.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from kafka.errors import KafkaError

from orchestrator.config import runtime
from orchestrator.kafka.groups import Broker, GroupError, TopicLag, topic_lag
from orchestrator.models import Alert, OutboxEvent
from orchestrator.services.events import SCHEMA_VERSION, emit

logger = logging.getLogger(__name__)

ALERT_KIND = "consumer_lag"
ALERT_EVENT = "consumer.lag_alert"
STATE_KEY = "bos:consumer-lag:{group}:{topic}"
# Broker requests of one check are bounded by this many seconds.
CHECK_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class LagCheck:
    """What one check found and did."""

    status: str  # "ok", "over", "alerted", "already_alerted", "cleared" or "unavailable"
    group: str
    topic: str
    total_lag: int | None
    threshold: int
    over_for_seconds: float = 0.0
    alert_id: int | None = None
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "group": self.group,
            "topic": self.topic,
            "total_lag": self.total_lag,
            "threshold": self.threshold,
            "over_for_seconds": round(self.over_for_seconds, 3),
            "alert_id": self.alert_id,
            "error": self.error or None,
        }


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def measure_lag(group: str, topic: str) -> TopicLag:
    with Broker(timeout=CHECK_TIMEOUT_SECONDS) as broker:
        return topic_lag(broker, group, topic)


def alert_data(lag: TopicLag, *, threshold: int, over_for_seconds: float) -> dict[str, Any]:
    """The `data` of a `consumer.lag_alert` event (and the alert's details)."""
    return {
        "group": lag.group,
        "topic": lag.topic,
        "total_lag": lag.total,
        "threshold": threshold,
        "over_for_seconds": round(over_for_seconds, 1),
        "partitions": {str(p.partition): p.lag for p in lag.partitions},
    }


def lag_check(
    *,
    now: datetime,
    group: str | None = None,
    topic: str | None = None,
    threshold: int | None = None,
    alert_after_seconds: float | None = None,
    measure: Callable[[str, str], TopicLag] = measure_lag,
    client: redis.Redis | None = None,
) -> LagCheck:
    """Measure the lag once and move the episode on (see the module docstring)."""
    group = group or settings.BOS_CONSUMER_GROUP
    topic = topic or settings.BOS_TOPIC_REQUESTS
    threshold = runtime("lag_alert_threshold") if threshold is None else threshold
    alert_after = runtime("lag_alert_seconds") if alert_after_seconds is None else alert_after_seconds
    client = client or _redis()
    key = STATE_KEY.format(group=group, topic=topic)

    try:
        lag = measure(group, topic)
    except (GroupError, KafkaError) as exc:
        error = exc.message if isinstance(exc, GroupError) else f"{type(exc).__name__}: {exc}"
        logger.warning("consumer lag of %s on %s not measured: %s", group, topic, error)
        return LagCheck("unavailable", group, topic, None, threshold, error=error)

    total = lag.total
    stamp = now.timestamp()
    if total <= threshold:
        state = client.hgetall(key)
        if not state:
            return LagCheck("ok", group, topic, total, threshold)
        client.delete(key)
        lasted = stamp - float(state[b"over_since"])
        logger.info(
            "consumer lag of %s on %s back to %d (threshold %d) after %.0fs over it%s",
            group,
            topic,
            total,
            threshold,
            lasted,
            "; the alert is over" if b"alerted_at" in state else "",
        )
        return LagCheck("cleared", group, topic, total, threshold, over_for_seconds=lasted)

    client.hsetnx(key, "over_since", stamp)
    # Forgotten only if checks stop for long (beat down): the next episode starts afresh.
    client.expire(key, int(alert_after + 10 * settings.BOS_LAG_CHECK_INTERVAL_SECONDS) + 60)
    over_for = max(stamp - float(client.hget(key, "over_since") or stamp), 0.0)
    if over_for < alert_after:
        return LagCheck("over", group, topic, total, threshold, over_for_seconds=over_for)
    if not client.hsetnx(key, "alerted_at", stamp):
        return LagCheck("already_alerted", group, topic, total, threshold, over_for_seconds=over_for)
    try:
        alert = _raise_alert(lag, threshold=threshold, over_for=over_for, now=now)
    except Exception:
        client.hdel(key, "alerted_at")  # the next check tries again
        raise
    return LagCheck("alerted", group, topic, total, threshold, over_for_seconds=over_for, alert_id=alert.id)


def _raise_alert(lag: TopicLag, *, threshold: int, over_for: float, now: datetime) -> Alert:
    data = alert_data(lag, threshold=threshold, over_for_seconds=over_for)
    message = (
        f"Consumer group {lag.group} is {lag.total} messages behind on {lag.topic} "
        f"(threshold {threshold}) for {int(over_for)} s"
    )
    event_id = str(uuid.uuid4())
    envelope: dict[str, Any] = {
        "event_id": event_id,
        "event_type": ALERT_EVENT,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "correlation_id": None,
        "tenant": None,  # about the service itself: published to BOS_TOPIC_SYSTEM_EVENTS
        "sequence": None,  # not a batch's event
        "data": data,
    }
    with transaction.atomic():
        alert = Alert.objects.create(tenant=None, kind=ALERT_KIND, message=message, details=data)
        emit(
            [
                OutboxEvent(
                    event_id=event_id,
                    tenant=None,
                    batch=None,
                    event_type=ALERT_EVENT,
                    key=lag.group,
                    envelope=envelope,
                )
            ]
        )
    logger.warning("alert %s: %s", ALERT_KIND, message)
    return alert
