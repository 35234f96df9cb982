"""SLA on a real worker: a batch that will miss its deadline is flagged at risk before
it and breached after it; one that will make it is flagged neither. Time after the
deadline is the injected `now` of the same sweep beat runs."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from orchestrator.api.serializers import BatchDetailOutSerializer
from orchestrator.insights.sla import AT_RISK, BREACHED, sla_sweep
from orchestrator.models import Alert, Batch, OutboxEvent
from orchestrator.services.batches import batch_cancel, batch_create
from tests.support.factories import batch_request, publish_test_pipeline
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = [pytest.mark.integration]

SLA_EVENTS = (AT_RISK, BREACHED)


def items(n: int) -> list[dict[str, Any]]:
    return [{"key": f"k-{i}", "payload": {"n": i}} for i in range(n)]


def sla_events(batch: Batch) -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(batch=batch, event_type__in=SLA_EVENTS).order_by("id"))


def detail(batch_id: Any) -> dict[str, Any]:
    batch = Batch.objects.select_related("tenant", "pipeline_version__pipeline").get(id=batch_id)
    return dict(BatchDetailOutSerializer(batch).data)


@pytest.fixture
def sla_pipelines(transactional_db: None) -> None:
    publish_test_pipeline(
        "sla-slow",
        [
            {
                "name": "wait",
                "handler": "test.slow",
                "mode": "per_item",
                "chunk_size": 2,
                "options": {"seconds": 0.3},
            },
            {"name": "count", "handler": "test.count", "mode": "per_batch", "after": ["wait"]},
        ],
    )
    publish_test_pipeline(
        "sla-fast",
        [
            {"name": "first", "handler": "test.echo", "mode": "per_item", "chunk_size": 5},
            {"name": "count", "handler": "test.count", "mode": "per_batch", "after": ["first"]},
        ],
    )
    publish_test_pipeline(
        "sla-target",
        [{"name": "count", "handler": "test.count", "mode": "per_batch"}],
        sla={"target_seconds": 60},
    )


@pytest.mark.usefixtures("celery_worker", "sla_pipelines")
def test_batch_that_will_miss_its_deadline_is_at_risk_before_it_and_breached_after() -> None:
    # 120 items at 0.3 s on 4 worker processes: about 9 s of work, due in 5 s.
    deadline = timezone.now() + timedelta(seconds=5)
    batch = batch_create(
        request=batch_request(pipeline="sla-slow", items=items(120), deadline=deadline), actor="test"
    ).batch
    try:

        def flagged() -> bool:
            sla_sweep()
            return bool(sla_events(batch))

        wait_for(flagged, timeout=5, interval=0.2, what="batch.sla_at_risk before the deadline")
        [at_risk] = sla_events(batch)
        assert at_risk.event_type == AT_RISK
        data = at_risk.envelope["data"]
        assert at_risk.envelope["occurred_at"] < deadline.isoformat().replace("+00:00", "Z")
        assert data["projected_finish_at"] > data["deadline"] == deadline.isoformat().replace("+00:00", "Z")
        assert data["slowest_phase"] == "wait"
        assert data["external_id"] == batch.external_id and data["pipeline"] == "sla-slow"
        assert detail(batch.id)["sla"]["state"] == "at_risk"

        # Once: later sweeps before the deadline raise nothing more.
        sla_sweep()
        assert len(sla_events(batch)) == 1

        # The deadline passes while the batch still runs.
        assert not Batch.objects.get(id=batch.id).is_terminal
        report = sla_sweep(now=deadline + timedelta(seconds=1))
        assert report.breached == (str(batch.id),)
        sla_sweep(now=deadline + timedelta(seconds=20))
        events = sla_events(batch)
        assert [e.event_type for e in events] == [AT_RISK, BREACHED]
        assert events[1].envelope["sequence"] > events[0].envelope["sequence"]
        sla = detail(batch.id)["sla"]
        assert sla["state"] == "breached" and sla["at_risk_at"] and sla["breached_at"]

        alerts = list(Alert.objects.filter(details__batch_id=str(batch.id)).order_by("id"))
        assert [a.kind for a in alerts] == [AT_RISK, BREACHED]
        assert all(a.tenant_id == batch.tenant_id for a in alerts)
        assert alerts[0].details["slowest_phase"] == "wait"
        assert set(alerts[0].details) >= {
            "batch_id",
            "external_id",
            "pipeline",
            "deadline",
            "projected_finish_at",
        }
    finally:
        batch_cancel(batch_id=batch.id, actor="test", reason="test over")
    # Every event of the batch has its own sequence, in order.
    sequences = [e.envelope["sequence"] for e in OutboxEvent.objects.filter(batch=batch).order_by("id")]
    assert sequences == list(range(1, len(sequences) + 1))
    assert detail(batch.id)["sla"]["state"] == "missed"


@pytest.mark.usefixtures("celery_worker", "sla_pipelines")
def test_batch_that_will_make_its_deadline_gets_neither_event() -> None:
    deadline = timezone.now() + timedelta(hours=1)
    batch = batch_create(
        request=batch_request(pipeline="sla-fast", items=items(40), deadline=deadline), actor="test"
    ).batch
    end = time.monotonic() + 30
    while not Batch.objects.get(id=batch.id).is_terminal and time.monotonic() < end:
        sla_sweep()
        time.sleep(0.1)
    done = wait_for_terminal(batch.id)
    sla_sweep()
    assert done.state == "completed"
    assert sla_events(batch) == []
    assert not Alert.objects.filter(details__batch_id=str(batch.id)).exists()
    sla = detail(batch.id)["sla"]
    assert sla["state"] == "met" and sla["at_risk_at"] is None and sla["breached_at"] is None


@pytest.mark.usefixtures("sla_pipelines", "held_batches")
def test_pipeline_target_is_the_deadline_of_a_batch_without_one() -> None:
    batch = batch_create(request=batch_request(pipeline="sla-target", items=items(3)), actor="test").batch
    target = batch.created_at + timedelta(seconds=60)
    assert sla_sweep(now=batch.created_at + timedelta(seconds=30)).reviewed >= 1
    assert sla_events(batch) == []
    assert detail(batch.id)["sla"]["state"] == "ok"
    sla_sweep(now=target + timedelta(seconds=1))
    [breached] = sla_events(batch)
    assert breached.event_type == BREACHED
    assert breached.envelope["data"]["deadline"] == target.isoformat().replace("+00:00", "Z")
    assert detail(batch.id)["sla"]["deadline"] == target.isoformat().replace("+00:00", "Z")


@pytest.mark.usefixtures("sla_pipelines", "held_batches")
def test_batch_without_any_deadline_has_no_sla() -> None:
    batch = batch_create(request=batch_request(pipeline="sla-fast", items=items(2)), actor="test").batch
    assert detail(batch.id)["sla"] is None
