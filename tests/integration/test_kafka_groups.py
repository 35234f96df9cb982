"""Consumer groups on the real broker: lag, description, offset moves, the lag alert, /metrics.

Every test makes topics and groups of its own. Records are sent in batches (linger) where
it matters: after batched sends the embedded broker's ListOffsets is wrong, and the lag
must still be exact.
"""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings
from kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.contracts import validate_event
from orchestrator.kafka.groups import Broker, GroupDescription, LiveMembers, topic_lag
from orchestrator.models import Alert, OutboxEvent
from orchestrator.services.lag_alerts import ALERT_EVENT, ALERT_KIND, STATE_KEY, lag_check
from tests.support.groups import commit, committed, create_topic, live_member, produce, unique

pytestmark = pytest.mark.integration


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("kafka_groups", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def topic() -> str:
    return create_topic(3)


# -- end offsets and lag ------------------------------------------------------------------


def test_end_offsets_after_batched_sends_are_the_true_log_end(topic: str) -> None:
    ends = produce(topic, {0: 10, 1: 3}, linger_ms=200)
    ends = {**ends, **produce(topic, {1: 4}, linger_ms=200), 2: 0}
    assert ends == {0: 10, 1: 7, 2: 0}

    with Broker(end_offsets_mode="highwater") as broker:
        assert broker.end_offsets(topic, [0, 1, 2]) == ends
    with Broker(end_offsets_mode="list_offsets") as broker:
        listed = broker.end_offsets(topic, [0, 1, 2])
    # Right on Apache Kafka; the embedded broker answers the last batch's base offset + 1.
    assert all(listed[p] <= ends[p] for p in ends)


def test_lag_per_partition_equals_the_truth(topic: str) -> None:
    ends = produce(topic, {0: 25, 1: 7}, linger_ms=100)
    group = unique("lag")
    commit(group, topic, {0: 10, 1: 7})

    with Broker() as broker:
        lag = topic_lag(broker, group, topic)

    assert {p.partition: p.lag for p in lag.partitions} == {0: 15, 1: 0, 2: 0}
    assert {p.partition: p.end for p in lag.partitions} == {**ends, 2: 0}
    assert lag.total == 15


def test_a_partition_without_commit_lags_from_its_earliest_offset(topic: str) -> None:
    produce(topic, {0: 5, 1: 12}, linger_ms=50)
    group = unique("lag")
    commit(group, topic, {0: 5})

    with Broker() as broker:
        lag = topic_lag(broker, group, topic)

    assert [(p.partition, p.committed, p.lag) for p in lag.partitions] == [
        (0, 5, 0),
        (1, None, 12),
        (2, None, 0),
    ]


def test_lag_command_prints_a_table_with_a_total_and_json(topic: str) -> None:
    produce(topic, {0: 8, 2: 3}, linger_ms=50)
    group = unique("lag")
    commit(group, topic, {0: 2, 2: 3})

    text = run("lag", "--group", group, "--topic", topic)
    assert f"Lag of group {group} on {topic}" in text
    assert "total lag: 6 on 3 partition(s)" in text
    assert "█" in text  # the bar of the lagging partition

    doc = json.loads(run("lag", "--group", group, "--topic", topic, "--json"))
    assert doc["total_lag"] == 6
    assert [(p["partition"], p["committed"], p["end"], p["lag"]) for p in doc["partitions"]] == [
        (0, 2, 8, 6),
        (1, None, 0, 0),
        (2, 3, 3, 0),
    ]


def test_lag_of_an_unknown_topic_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match="does not exist"):
        run("lag", "--group", unique("g"), "--topic", unique("missing"))


# -- describe and live members ------------------------------------------------------------


def test_describe_shows_state_members_and_lag_of_a_live_group(topic: str) -> None:
    produce(topic, {0: 4})
    group = unique("describe")
    commit(group, topic, {0: 1})

    with live_member(group, topic):
        with Broker() as broker:
            description = broker.describe(group)
            check = broker.live_members(group)
        doc = json.loads(run("describe", "--group", group, "--json"))
        text = run("describe", "--group", group)

    assert description.available and len(description.members) == 1
    assert check.live is True and check.how == "describe_groups"
    assert doc["description"]["members"][0]["member_id"] == description.members[0].member_id
    assert doc["lag"][0]["topic"] == topic and doc["lag"][0]["total_lag"] == 3
    assert f"group {group}: state" in text and "1 member(s)" in text
    assert "total lag: 3" in text

    with Broker() as broker:
        assert broker.live_members(group).live is False


def test_without_describe_a_commit_probe_still_tells_live_members(
    topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where DescribeGroups fails, re-committing a committed offset from outside the group tells."""
    produce(topic, {0: 4})
    group = unique("probe")
    commit(group, topic, {0: 2})
    monkeypatch.setattr(
        Broker, "describe", lambda self, group: GroupDescription(group=group, available=False, error="test")
    )
    with Broker() as broker:
        assert broker.live_members(group).live is False
        assert broker.live_members(unique("no-commits")).live is None  # nothing to probe with
        with live_member(group, topic):
            check = broker.live_members(group)
            assert broker.live_members(group, probe=False).live is None  # a dry run never writes
    assert check.live is True and check.how == "offset_commit_probe"
    assert committed(group, topic) == {0: 2}  # the probe changed nothing


def test_the_broker_refuses_a_commit_from_outside_while_a_member_is_live(topic: str) -> None:
    """The guard that remains if a member joins between the check and the write."""
    produce(topic, {0: 4})
    group = unique("guard")
    commit(group, topic, {0: 1})
    with live_member(group, topic), Broker() as broker, pytest.raises(LiveMembers):
        broker.commit(group, {TopicPartition(topic, 0): 3})
    assert committed(group, topic) == {0: 1}


# -- moving offsets -----------------------------------------------------------------------


def test_copy_offsets_dry_run_changes_nothing_and_execute_makes_them_equal(topic: str) -> None:
    produce(topic, {0: 9, 1: 6, 2: 2}, linger_ms=50)
    source, target = unique("from"), unique("to")
    commit(source, topic, {0: 7, 1: 6, 2: 1})
    commit(target, topic, {0: 2})

    text = run("copy-offsets", "--from", source, "--to", target, "--topic", topic)
    assert "dry run: nothing changed; add --execute" in text
    assert committed(target, topic) == {0: 2}

    text = run("copy-offsets", "--from", source, "--to", target, "--topic", topic, "--execute")
    assert "done: 3 partition offset(s)" in text
    assert committed(target, topic) == committed(source, topic) == {0: 7, 1: 6, 2: 1}


def test_reset_to_earliest_latest_and_a_time_then_import_restores_the_export(
    topic: str, tmp_path: Path
) -> None:
    first = produce(topic, {0: 6, 1: 4}, linger_ms=50)
    time.sleep(0.05)
    between = datetime.now(tz=UTC)
    time.sleep(0.05)
    ends = produce(topic, {0: 5, 2: 3}, linger_ms=50)
    ends = {0: ends[0], 1: first[1], 2: ends[2]}
    group = unique("reset")
    original = {0: 8, 1: 2, 2: 3}
    commit(group, topic, original)
    backup = tmp_path / "offsets.json"
    run("export", "--group", group, "--topic", topic, "--file", str(backup))
    doc = json.loads(backup.read_text())
    assert doc["group"] == group and doc["topic"] == topic
    assert doc["partitions"] == {"0": 8, "1": 2, "2": 3}
    assert doc["exported_at"].endswith("Z") and doc["broker"]

    assert "dry run" in run("reset-offsets", "--group", group, "--topic", topic, "--to-earliest")
    assert committed(group, topic) == original

    run("reset-offsets", "--group", group, "--topic", topic, "--to-earliest", "--execute")
    assert committed(group, topic) == {0: 0, 1: 0, 2: 0}

    run("reset-offsets", "--group", group, "--topic", topic, "--to-latest", "--execute")
    assert committed(group, topic) == ends == {0: 11, 1: 4, 2: 3}

    iso = between.isoformat().replace("+00:00", "Z")
    run("reset-offsets", "--group", group, "--topic", topic, "--to-datetime", iso, "--execute")
    # The first record at or after the time; the log end where there is none (partition 1).
    assert committed(group, topic) == {0: 6, 1: 4, 2: 0}

    assert "dry run" in run("import", "--file", str(backup))
    assert committed(group, topic) == {0: 6, 1: 4, 2: 0}
    run("import", "--file", str(backup), "--execute")
    assert committed(group, topic) == original


def test_import_into_another_group_and_reject_a_bad_file(topic: str, tmp_path: Path) -> None:
    produce(topic, {0: 3})
    source, target = unique("src"), unique("dst")
    commit(source, topic, {0: 3})
    backup = tmp_path / "offsets.json"
    run("export", "--group", source, "--topic", topic, "--file", str(backup))
    run("import", "--group", target, "--file", str(backup), "--execute")
    assert committed(target, topic) == {0: 3}

    backup.write_text('{"group": "g", "topic": "t", "partitions": {"0": -4}}')
    with pytest.raises(CommandError, match="not a non-negative integer"):
        run("import", "--file", str(backup))
    with pytest.raises(CommandError, match="cannot read"):
        run("import", "--file", str(tmp_path / "missing.json"))


def test_offset_changes_are_refused_while_the_group_has_a_live_member(topic: str) -> None:
    produce(topic, {0: 5})
    group, other = unique("busy"), unique("other")
    commit(group, topic, {0: 2})
    commit(other, topic, {0: 4})

    with live_member(group, topic):
        dry = run("reset-offsets", "--group", group, "--topic", topic, "--to-latest")
        with pytest.raises(CommandError, match="has live members") as refused:
            run("reset-offsets", "--group", group, "--topic", topic, "--to-latest", "--execute")
        with pytest.raises(CommandError, match="has live members"):
            run("copy-offsets", "--from", other, "--to", group, "--execute")
        # Copying *from* a busy group is fine: only the target must be idle.
        run("copy-offsets", "--from", group, "--to", other, "--topic", topic, "--execute")
    assert committed(other, topic) == {0: 2}
    assert "--execute would be refused" in dry
    assert refused.value.returncode == 2
    assert committed(group, topic) == {0: 2}


# -- the lag alert ------------------------------------------------------------------------


@pytest.fixture
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@pytest.mark.django_db
def test_lag_over_the_threshold_for_the_period_alerts_once_then_clears(
    topic: str, redis_client: redis.Redis
) -> None:
    produce(topic, {0: 30, 1: 10}, linger_ms=50)
    group = unique("alert")
    commit(group, topic, {0: 5, 1: 10})  # lag 25
    t0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)

    def check(seconds: float):  # type: ignore[no-untyped-def]
        return lag_check(
            now=t0 + timedelta(seconds=seconds),
            group=group,
            topic=topic,
            threshold=20,
            alert_after_seconds=60,
            client=redis_client,
        )

    assert check(0).status == "over"
    assert check(30).status == "over"
    raised = check(60)
    assert raised.status == "alerted" and raised.total_lag == 25
    assert check(90).status == "already_alerted"
    assert check(120).status == "already_alerted"

    alert = Alert.objects.get(kind=ALERT_KIND, details__group=group)
    assert alert.tenant_id is None and alert.id == raised.alert_id
    event = OutboxEvent.objects.get(event_type=ALERT_EVENT, key=group)
    assert event.tenant_id is None
    assert event.envelope["tenant"] is None
    assert event.envelope["data"] == {
        "group": group,
        "topic": topic,
        "total_lag": 25,
        "threshold": 20,
        "over_for_seconds": 60.0,
        "partitions": {"0": 25, "1": 0, "2": 0},
    }
    validate_event(event.envelope)

    commit(group, topic, {0: 30})  # caught up
    cleared = check(150)
    assert cleared.status == "cleared" and cleared.total_lag == 0
    assert not redis_client.exists(STATE_KEY.format(group=group, topic=topic))
    assert check(180).status == "ok"

    # A new episode alerts again, once.
    commit(group, topic, {0: 0})
    assert [check(s).status for s in (200, 230, 260, 290)] == ["over", "over", "alerted", "already_alerted"]
    assert Alert.objects.filter(kind=ALERT_KIND, details__group=group).count() == 2


@pytest.mark.django_db
def test_lag_under_the_threshold_never_alerts_and_an_unreachable_broker_changes_nothing(
    topic: str, redis_client: redis.Redis
) -> None:
    produce(topic, {0: 5})
    group = unique("calm")
    t0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    for s in (0, 100, 1000):
        result = lag_check(
            now=t0 + timedelta(seconds=s),
            group=group,
            topic=topic,
            threshold=5,
            alert_after_seconds=10,
            client=redis_client,
        )
        assert result.status == "ok" and result.total_lag == 5

    with override_settings(KAFKA_BOOTSTRAP_SERVERS=["127.0.0.1:1"]):
        result = lag_check(
            now=t0, group=group, topic=topic, threshold=0, alert_after_seconds=0, client=redis_client
        )
    assert result.status == "unavailable" and "127.0.0.1:1" in result.error
    assert not Alert.objects.filter(kind=ALERT_KIND, details__group=group).exists()


def test_the_lag_check_runs_on_beat_in_a_real_worker(
    celery_worker: object, kafka_topics: list[str], transactional_db: None
) -> None:
    """Its result is kept in PostgreSQL (a maintenance task: docs/observability.md, "Task
    results"), so reading it needs the database."""
    from tasks.maintenance import consumer_lag_check_task

    assert settings.CELERY_BEAT_SCHEDULE["consumer-lag"]["task"] == consumer_lag_check_task.name
    result = consumer_lag_check_task.delay().get(timeout=60)
    assert result["group"] == settings.BOS_CONSUMER_GROUP and result["topic"] == settings.BOS_TOPIC_REQUESTS
    assert result["status"] == "ok"


# -- /metrics -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_export_the_lag_per_partition_and_in_total(client, topic: str) -> None:  # type: ignore[no-untyped-def]
    produce(topic, {0: 12, 2: 4}, linger_ms=50)
    group = unique("metrics")
    commit(group, topic, {0: 2})

    with override_settings(BOS_CONSUMER_GROUP=group, BOS_TOPIC_REQUESTS=topic):
        body = client.get("/metrics").content.decode()

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name.startswith("bos_kafka")
    }
    of = (("group", group), ("topic", topic))
    assert samples[("bos_kafka_lag_up", ())] == 1.0
    assert {
        labels[1][1]: value
        for (name, labels), value in samples.items()
        if name == "bos_kafka_consumer_lag" and labels[0] == of[0]
    } == {"0": 10.0, "1": 0.0, "2": 4.0}
    assert samples[("bos_kafka_consumer_lag_total", of)] == 14.0


@pytest.mark.django_db
def test_metrics_answer_quickly_with_lag_up_0_when_the_broker_is_unreachable(client) -> None:  # type: ignore[no-untyped-def]
    with override_settings(KAFKA_BOOTSTRAP_SERVERS=["127.0.0.1:1"], BOS_LAG_METRICS_TIMEOUT_SECONDS=1.0):
        started = time.monotonic()
        response = client.get("/metrics")
        took = time.monotonic() - started
    body = response.content.decode()
    assert response.status_code == 200
    assert "bos_kafka_lag_up 0.0" in body and "bos_kafka_consumer_lag{" not in body
    assert "bos_batches" in body  # the rest of the scrape is there
    assert took < 5
