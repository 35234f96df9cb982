"""Errors are classified; transient ones are retried with backoff, others are not."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from orchestrator.models import Batch, BatchItem, ItemResult
from orchestrator.services.batches import batch_create
from tests.support.factories import batch_request, publish_test_pipeline
from tests.support.waiting import wait_for_terminal

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("celery_worker", "transactional_db")]


def flaky_pipeline(max_attempts: int) -> None:
    publish_test_pipeline(
        "flaky",
        [
            {
                "name": "call",
                "handler": "test.flaky",
                "mode": "per_item",
                "chunk_size": 5,
                "retry": {"max_attempts": max_attempts, "base": 0.05, "cap": 0.2, "jitter": 0.5},
            }
        ],
    )


def items(n: int, **payload: Any) -> list[dict[str, Any]]:
    return [{"key": f"i{k}", "payload": dict(payload)} for k in range(n)]


@pytest.mark.parametrize("size", [4, 20], ids=["inline", "fanned-out"])
def test_transient_failures_are_retried_until_they_succeed(size: int) -> None:
    flaky_pipeline(max_attempts=4)
    meta = {"run": uuid.uuid4().hex, "fail_times": 2}
    batch = batch_create(
        request=batch_request(pipeline="flaky", items=items(size), metadata=meta), actor="t"
    ).batch
    done = wait_for_terminal(batch.id)

    assert done.state == "completed"
    assert done.items_succeeded == size
    outputs = ItemResult.objects.filter(phase_run__batch=done).values_list("output", flat=True)
    assert {o["attempt"] for o in outputs} == {3}  # two transient failures, then success
    assert done.phases.get(name="call").retries >= 2


def test_retries_stop_at_the_limit_and_bad_input_is_never_retried() -> None:
    flaky_pipeline(max_attempts=2)
    meta = {"run": uuid.uuid4().hex}
    batch_items = [
        *items(3),
        {"key": "bad", "payload": {"bad": True}},
        {"key": "down", "payload": {"always": True}},
    ]
    batch = batch_create(
        request=batch_request(pipeline="flaky", items=batch_items, metadata=meta), actor="t"
    ).batch
    done = wait_for_terminal(batch.id)

    assert done.state == "completed_with_errors"
    assert (done.items_succeeded, done.items_failed) == (3, 2)
    failed = {i.key: i for i in BatchItem.objects.filter(batch=done, state="failed")}
    assert failed["bad"].error_class == "bad_input"
    assert failed["down"].error_class == "transient"
    assert "try 2 failed" in failed["down"].last_error  # tried twice, not more


@pytest.mark.parametrize("size", [3, 20], ids=["inline", "fanned-out"])
def test_a_per_batch_phase_is_retried_on_transient_failures(size: int) -> None:
    publish_test_pipeline(
        "flaky-batch",
        [
            {"name": "first", "handler": "test.echo", "mode": "per_item"},
            {
                "name": "sum",
                "handler": "test.flaky_batch",
                "mode": "per_batch",
                "after": ["first"],
                "retry": {"max_attempts": 4, "base": 0.05, "cap": 0.2},
            },
        ],
    )
    meta = {"run": uuid.uuid4().hex, "fail_times": 2}
    batch = batch_create(
        request=batch_request(pipeline="flaky-batch", items=items(size), metadata=meta), actor="t"
    ).batch
    done = wait_for_terminal(batch.id)
    assert done.state == "completed", done.error
    assert done.phases.get(name="sum").output == {"tries": 3}


def test_a_per_batch_phase_fails_with_its_class_when_retries_run_out() -> None:
    publish_test_pipeline(
        "flaky-batch",
        [
            {
                "name": "sum",
                "handler": "test.flaky_batch",
                "mode": "per_batch",
                "retry": {"max_attempts": 2, "base": 0.05},
            }
        ],
    )
    meta = {"run": uuid.uuid4().hex, "fail_times": 5}
    batch = batch_create(
        request=batch_request(pipeline="flaky-batch", items=items(20), metadata=meta), actor="t"
    ).batch
    done = wait_for_terminal(batch.id)
    assert done.state == "failed"
    phase = done.phases.get(name="sum")
    assert phase.error_class == "transient" and "batch try 2 failed" in phase.error


def test_a_retry_longer_than_a_countdown_may_wait_is_stored_and_sent_when_due() -> None:
    from orchestrator.models import DeferredTask
    from orchestrator.services.deferred import dispatch_due
    from tests.support.waiting import wait_for

    publish_test_pipeline(
        "patient",
        [
            {
                "name": "call",
                "handler": "test.flaky",
                "mode": "per_item",
                "chunk_size": 10,
                "retry": {"max_attempts": 3, "base": 6, "jitter": 0},
            }
        ],
    )
    meta = {"run": uuid.uuid4().hex, "fail_times": 1}
    batch = batch_create(
        request=batch_request(pipeline="patient", items=items(20), metadata=meta), actor="t"
    ).batch
    deferred = wait_for(
        lambda: DeferredTask.objects.filter(phase_run__batch=batch).count() == 2, what="2 deferred chunks"
    )
    assert deferred
    phase = batch.phases.get(name="call")
    assert phase.state == "running" and phase.next_retry_at is not None  # waiting, visibly
    assert dispatch_due() == 0  # not due yet

    def sent() -> bool:
        dispatch_due()
        return Batch.objects.get(id=batch.id).is_terminal

    wait_for(sent, timeout=60, interval=0.5, what="the deferred chunks to be sent and run")
    done = Batch.objects.get(id=batch.id)
    assert done.state == "completed" and done.items_succeeded == 20
    assert not DeferredTask.objects.filter(phase_run__batch=batch).exists()
