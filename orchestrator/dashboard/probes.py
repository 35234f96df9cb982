"""The service's health as the dashboard shows it: Celery queue depths, the Kafka
consumer's lag and the circuit breakers, each asked with a deadline.

The three are asked at once, each in a daemon thread, when the page starts being built,
and waited for together for at most `BOS_DASHBOARD_PROBE_SECONDS`: the page is never
held up longer by a broker, Kafka or Redis that does not answer; what did not answer in
time shows as unavailable, with why. A probe still running then is abandoned (the
Kafka and Redis clients time out on their own).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections

from orchestrator.breakers import breaker_states
from orchestrator.kafka.groups import Broker, GroupError, TopicLag, topic_lag
from orchestrator.services.reconcile import broker_queue_depth

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    """What one probe found: its `value`, or why there is none (`error`)."""

    value: Any = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


class Probes:
    """Named calls run at once in daemon threads; `results()` waits until one deadline."""

    def __init__(self, calls: Mapping[str, Callable[[], Any]], *, timeout: float) -> None:
        self.timeout = timeout
        self._found: dict[str, Probe] = {}
        self._lock = threading.Lock()
        self._threads = {
            name: threading.Thread(target=self._run, args=(name, call), name=f"bos-probe-{name}", daemon=True)
            for name, call in calls.items()
        }
        self._started = 0.0

    def _run(self, name: str, call: Callable[[], Any]) -> None:
        try:
            found = Probe(value=call())
        except GroupError as exc:
            found = Probe(error=exc.message)
        except Exception as exc:  # noqa: BLE001 - the page shows why, it never fails because of it
            logger.warning("dashboard probe %s failed", name, exc_info=True)
            found = Probe(error=f"{type(exc).__name__}: {exc}"[:300])
        finally:
            # A probe may read the runtime configuration from the database (when Redis
            # holds none): this thread's connection must not outlive it.
            connections.close_all()
        with self._lock:
            self._found[name] = found

    def start(self) -> Probes:
        self._started = time.monotonic()
        for thread in self._threads.values():
            thread.start()
        return self

    def results(self) -> dict[str, Probe]:
        """Every probe's result; those without one by the deadline are unavailable."""
        deadline = self._started + self.timeout
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        late = Probe(error=f"no answer within {self.timeout:g} s")
        with self._lock:
            return {name: self._found.get(name, late) for name in self._threads}


def queue_depths() -> dict[str, int]:
    """Messages waiting in each of BOS's Celery queues."""
    return {queue: broker_queue_depth(queue) for queue in settings.BOS_QUEUES}


def consumer_lag() -> TopicLag:
    """The consumer group's lag on the request topic."""
    with Broker(timeout=settings.BOS_DASHBOARD_PROBE_SECONDS) as broker:
        return topic_lag(broker, settings.BOS_CONSUMER_GROUP, settings.BOS_TOPIC_REQUESTS)


def service_probes(*, timeout: float | None = None) -> Probes:
    """The three probes, started."""
    calls: dict[str, Callable[[], Any]] = {
        "queues": queue_depths,
        "lag": consumer_lag,
        "breakers": breaker_states,
    }
    return Probes(calls, timeout=settings.BOS_DASHBOARD_PROBE_SECONDS if timeout is None else timeout).start()
