"""Consumer start-up checks: reach the broker, make sure the topics are usable.

Each step logs one line, `kafka.startup step=<name> status=<ok|retry|failed> ...`, with
the same fields in the record's `extra`, so a failed start says what to fix. The steps:

1. `connect`: reach a broker with the admin client, backing off exponentially (capped
   at BOS_KAFKA_BACKOFF_CAP_SECONDS) for as long as the broker is unreachable;
2. `topics`: every topic exists with at least its expected partitions; a missing topic
   is created when BOS_KAFKA_CREATE_TOPICS is on, else start-up stops naming it;
3. `writable`: every partition of the DLQ and events topics has a leader (and, where
   the broker reports authorized operations, WRITE is among them).

`StartupError` carries the failed step and the operator's fix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from orchestrator.kafka.clients import BOOTSTRAP_TIMEOUT_MS, with_backoff

logger = logging.getLogger("orchestrator.kafka.startup")
UNKNOWN_TOPIC = 3
# The WRITE bit of Kafka's authorized-operations bit field (AclOperation.WRITE = 4).
WRITE_BIT = 1 << 4


class StartupError(RuntimeError):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    # Must accept writes from BOS (DLQ, events); the requests topic is only read.
    written: bool = False


def expected_partitions(topic: str) -> int:
    """The partitions BOS expects a topic of its to have, by the topic's role."""
    from orchestrator.kafka.routing import all_event_topics

    if topic in all_event_topics():
        return int(settings.BOS_KAFKA_EVENT_PARTITIONS)
    if topic == settings.BOS_TOPIC_DLQ or topic.endswith(".dlq"):
        return int(settings.BOS_KAFKA_DLQ_PARTITIONS)
    return int(settings.BOS_KAFKA_REQUEST_PARTITIONS)


def consumer_topics(request_topic: str, dlq_topic: str) -> list[TopicSpec]:
    """The topics a request consumer needs: its input, its DLQ, and every events topic."""
    from orchestrator.kafka.routing import all_event_topics

    specs = [
        TopicSpec(request_topic, settings.BOS_KAFKA_REQUEST_PARTITIONS),
        TopicSpec(dlq_topic, settings.BOS_KAFKA_DLQ_PARTITIONS, written=True),
    ]
    specs += [TopicSpec(t, settings.BOS_KAFKA_EVENT_PARTITIONS, written=True) for t in all_event_topics()]
    return list({s.name: s for s in specs}.values())


def log_step(step: str, status: str, **fields: Any) -> None:
    detail = " ".join(f"{k}={v}" for k, v in fields.items())
    level = {"ok": logging.INFO, "retry": logging.WARNING}.get(status, logging.ERROR)
    logger.log(
        level,
        "kafka.startup step=%s status=%s %s",
        step,
        status,
        detail,
        # One key, so the fields never collide with LogRecord's own attributes.
        extra={"kafka_startup": {"step": step, "status": status, **fields}},
    )


@contextmanager
def startup_step(step: str, on_step: Callable[[str, str, str], None]) -> Iterator[dict[str, Any]]:
    """Time a step and log its outcome; `fields` collects what the log line reports."""
    started = time.perf_counter()
    fields: dict[str, Any] = {}
    on_step(step, "running", "")
    try:
        yield fields
    except StartupError as exc:
        log_step(step, "failed", ms=_ms(started), error=repr(exc.message))
        on_step(step, "failed", exc.message)
        raise
    log_step(step, "ok", ms=_ms(started), **fields)
    on_step(step, "ok", " ".join(f"{k}={v}" for k, v in fields.items()))


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def prepare_topics(
    topics: list[TopicSpec],
    *,
    create: bool | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_step: Callable[[str, str, str], None] = lambda step, status, detail: None,
) -> dict[str, int]:
    """Run the start-up steps; each topic's partition count, as the broker described it.

    Raises StartupError naming the step that failed.
    """
    create = settings.BOS_KAFKA_CREATE_TOPICS if create is None else create
    servers = ",".join(settings.KAFKA_BOOTSTRAP_SERVERS)
    with startup_step("connect", on_step) as fields:
        attempts = 0

        def connect() -> KafkaAdminClient:
            nonlocal attempts
            attempts += 1
            return KafkaAdminClient(
                bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                client_id="bos-startup",
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            )

        def retrying(delay: float, exc: Exception) -> None:
            log_step(
                "connect",
                "retry",
                servers=servers,
                attempt=attempts,
                retry_in=f"{delay:.1f}s",
                error=type(exc).__name__,
            )
            on_step("connect", "retry", f"no broker reachable at {servers}; attempt {attempts}")

        admin = with_backoff(
            connect,
            what="kafka.startup step=connect",
            should_stop=should_stop,
            cap=settings.BOS_KAFKA_BACKOFF_CAP_SECONDS,
            on_retry=retrying,
        )
        fields.update(servers=servers, attempts=attempts)
    try:
        with startup_step("topics", on_step) as fields:
            found, partitions = _check_topics(admin, topics, create=create)
            fields.update(found)
        with startup_step("writable", on_step) as fields:
            fields.update(_check_writable(admin, [t for t in topics if t.written]))
    finally:
        admin.close()
    return partitions


def _describe(admin: KafkaAdminClient, names: list[str]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in admin.describe_topics(names)}


def _check_topics(
    admin: KafkaAdminClient, topics: list[TopicSpec], *, create: bool
) -> tuple[dict[str, Any], dict[str, int]]:
    described = _describe(admin, [t.name for t in topics])
    missing = [
        t for t in topics if described.get(t.name, {}).get("error_code", UNKNOWN_TOPIC) == UNKNOWN_TOPIC
    ]
    if missing and not create:
        names = ", ".join(f"{t.name} ({t.partitions} partitions)" for t in missing)
        raise StartupError(
            "topics",
            f"missing topics: {names}. Create them, or set BOS_KAFKA_CREATE_TOPICS=true to let BOS create them",
        )
    if missing:
        try:
            admin.create_topics(
                [
                    NewTopic(
                        name=t.name,
                        num_partitions=t.partitions,
                        replication_factor=settings.BOS_KAFKA_REPLICATION_FACTOR,
                    )
                    for t in missing
                ]
            )
        except TopicAlreadyExistsError:
            pass  # another consumer created it first
        except KafkaError as exc:
            raise StartupError("topics", f"could not create {[t.name for t in missing]}: {exc}") from exc
        described = _describe(admin, [t.name for t in topics])
    problems = []
    for spec in topics:
        info = described.get(spec.name, {})
        if info.get("error_code"):
            problems.append(f"{spec.name}: broker error code {info['error_code']}")
        elif len(info.get("partitions", [])) < spec.partitions:
            problems.append(
                f"{spec.name} has {len(info.get('partitions', []))} partitions, at least {spec.partitions} expected "
                "(add partitions on the broker, or lower the BOS_KAFKA_*_PARTITIONS setting)"
            )
    if problems:
        raise StartupError("topics", "; ".join(problems))
    partitions = {t.name: len(described[t.name]["partitions"]) for t in topics}
    fields = {
        "topics": ",".join(f"{name}:{count}" for name, count in partitions.items()),
        "created": ",".join(t.name for t in missing) or "none",
    }
    return fields, partitions


def _check_writable(admin: KafkaAdminClient, topics: list[TopicSpec]) -> dict[str, Any]:
    described = _describe(admin, [t.name for t in topics])
    problems = []
    for spec in topics:
        info = described[spec.name]
        leaderless = [p["partition_index"] for p in info["partitions"] if p.get("leader_id", -1) < 0]
        if leaderless:
            problems.append(f"{spec.name} partitions {leaderless} have no leader")
        operations = info.get("authorized_operations")
        if isinstance(operations, int) and operations > 0 and not operations & WRITE_BIT:
            problems.append(f"{spec.name}: this client is not authorized to write (ACL)")
    if problems:
        raise StartupError("writable", "; ".join(problems))
    return {"topics": ",".join(t.name for t in topics)}
