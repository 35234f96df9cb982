"""Beat's housekeeping: deferred work is sent by the reconciler's pass, not a task of its own."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from orchestrator.models import Batch, DeferredTask
from orchestrator.services.batches import batch_create
from tasks.maintenance import reconcile_task
from tests.support.factories import batch_request, essay_items, publish_test_pipeline
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("celery_worker", "transactional_db")]


def test_beat_schedules_no_task_of_its_own_for_deferred_work() -> None:
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "tasks.maintenance.dispatch_deferred_task" not in scheduled
    assert "tasks.maintenance.reconcile_task" in scheduled


def test_the_reconcilers_pass_sends_deferred_work_when_it_is_due() -> None:
    publish_test_pipeline(
        "patient-housekeeping",
        [
            {
                "name": "call",
                "handler": "test.flaky",
                "mode": "per_item",
                "chunk_size": 10,
                # A wait over BOS_MAX_COUNTDOWN_SECONDS (5 s in tests): stored, not counted down.
                "retry": {"max_attempts": 3, "base": 6, "jitter": 0},
            }
        ],
    )
    meta = {"run": uuid.uuid4().hex, "fail_times": 1}
    batch = batch_create(
        request=batch_request(pipeline="patient-housekeeping", items=essay_items(20), metadata=meta),
        actor="t",
    ).batch
    wait_for(
        lambda: DeferredTask.objects.filter(phase_run__batch=batch).count() == 2, what="2 deferred chunks"
    )
    assert reconcile_task()["deferred_sent"] == 0  # not due yet
    sent: list[int] = []

    def finished() -> bool:
        sent.append(int(str(reconcile_task()["deferred_sent"])))
        return Batch.objects.get(id=batch.id).is_terminal

    wait_for(finished, timeout=60, interval=0.5, what="the reconciler to send the deferred chunks")
    assert sum(sent) == 2
    done = Batch.objects.get(id=batch.id)
    assert done.state == "completed" and done.items_succeeded == 20
    assert not DeferredTask.objects.filter(phase_run__batch=batch).exists()
