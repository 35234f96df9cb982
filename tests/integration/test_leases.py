"""Leases, claim before effect and fencing: work runs once, stale writes change nothing.

These call the services a chunk task calls (the same code path), with the clock driven
where time matters, at the default settings.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from orchestrator.breakers import breaker
from orchestrator.models import Batch, ChunkRun, ItemResult, PhaseRun, WorkLease
from orchestrator.services.batches import batch_cancel, batch_create, batch_start
from orchestrator.services.leases import HEARTBEAT, Claim, LeaseHandle, lease_take, owner_name
from orchestrator.services.phases import (
    RetryChunk,
    phase_batch_run,
    phase_chunk_run,
    phase_complete,
    phase_fail,
)
from orchestrator.services.reconcile import reconcile
from tasks.phases import retry_options
from tests.support.clock import after_lease
from tests.support.factories import batch_request, publish_test_pipeline
from tests.support.handlers import handler_calls
from tests.support.sending import HeldSender

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("held_batches")]


def counted_batch(items: int, *, chunk_size: int = 10, **metadata: Any) -> tuple[Batch, PhaseRun, str]:
    """A started batch of `items` in one per-item phase of `test.counted` (nothing sent)."""
    publish_test_pipeline(
        "counted",
        [
            {"name": "work", "handler": "test.counted", "mode": "per_item", "chunk_size": chunk_size},
            {"name": "count", "handler": "test.count", "mode": "per_batch", "after": ["work"]},
        ],
    )
    run = uuid.uuid4().hex
    request = batch_request(
        pipeline="counted",
        items=[{"key": f"i{n}", "payload": {}} for n in range(items)],
        metadata={"run": run, **metadata},
    )
    batch = batch_create(request=request, actor="test").batch
    batch_start(batch_id=batch.id)
    return batch, PhaseRun.objects.get(batch=batch, name="work"), run


@pytest.mark.django_db
def test_a_recorded_chunk_delivered_again_runs_no_handler() -> None:
    _, work, run = counted_batch(20)
    phase_chunk_run(phase_run_id=work.id, start=0, end=10, task_id="t1")
    assert phase_chunk_run(phase_run_id=work.id, start=0, end=10, task_id="t2") == {
        "succeeded": 0,
        "failed": 0,
        "skipped": 0,
        "recorded": 1,
    }
    assert sum(handler_calls(run).values()) == 10  # claim before effect: not 20


@pytest.mark.django_db
def test_a_chunk_held_by_a_live_worker_is_not_run_again_until_its_lease_expires() -> None:
    _, work, run = counted_batch(10)
    owner = owner_name("the-first-task")
    assert lease_take(phase_run_id=work.id, start=0, end=10, attempt=1, owner=owner) == Claim.TAKEN

    assert phase_chunk_run(phase_run_id=work.id, start=0, end=10, task_id="another")["held"] == 1
    assert handler_calls(run) == {}
    # The same task delivered again (its pool process died) takes its lease back at once.
    assert (
        lease_take(phase_run_id=work.id, start=0, end=10, attempt=1, owner="x:1:the-first-task")
        == Claim.TAKEN
    )
    # Anyone else, once the lease expired without a heartbeat.
    later = after_lease()
    assert (
        lease_take(phase_run_id=work.id, start=0, end=10, attempt=1, owner="y:2:t3", now=later) == Claim.TAKEN
    )
    assert WorkLease.objects.get(phase_run=work, start=0).takeovers == 2


@pytest.mark.django_db
def test_the_heartbeat_keeps_a_lease_alive_and_reports_it_lost_when_the_batch_is_cancelled() -> None:
    batch, work, _ = counted_batch(10)
    owner = owner_name("t-heartbeat")
    lease_take(phase_run_id=work.id, start=0, end=10, attempt=1, owner=owner)
    handle = HEARTBEAT.hold(LeaseHandle(work.id, 0, owner))
    try:
        before = WorkLease.objects.get(phase_run=work, start=0).leased_until
        HEARTBEAT.renew(now=timezone.now() + timedelta(seconds=5))
        assert WorkLease.objects.get(phase_run=work, start=0).leased_until > before
        assert handle.should_stop() is False

        batch_cancel(batch_id=batch.id, actor="user:op")
        HEARTBEAT.renew()
        assert handle.should_stop() is True  # the item loop stops at the next item
    finally:
        HEARTBEAT.drop(handle)


@pytest.mark.django_db
def test_chunks_of_a_cancelled_batch_record_nothing() -> None:
    batch, work, run = counted_batch(30)
    phase_chunk_run(phase_run_id=work.id, start=0, end=10, phase_attempt=1)
    batch_cancel(batch_id=batch.id, actor="user:op")
    results_at_cancel = ItemResult.objects.filter(phase_run=work).count()

    assert phase_chunk_run(phase_run_id=work.id, start=10, end=20, phase_attempt=1)["stale"] == 1
    assert ItemResult.objects.filter(phase_run=work).count() == results_at_cancel == 10
    assert PhaseRun.objects.get(id=work.id).items_done == 10
    assert sum(handler_calls(run).values()) == 10


@pytest.mark.django_db
def test_a_stale_callback_of_attempt_1_changes_nothing_during_attempt_2() -> None:
    batch, work, _ = counted_batch(10)
    phase_fail(phase_run_id=work.id, error="a chunk failed for good", phase_attempt=1)
    assert Batch.objects.get(id=batch.id).state == "failed"
    from orchestrator.services.batches import batch_retry

    batch_retry(batch_id=batch.id, actor="user:op")
    work.refresh_from_db()
    assert (work.state, work.attempts) == ("running", 2)

    # Attempt 1's leftover chord: its failure callback, and a chunk of it.
    phase_fail(phase_run_id=work.id, error="late failure of attempt 1", phase_attempt=1)
    phase_complete(phase_run_id=work.id, phase_attempt=1)
    assert phase_chunk_run(phase_run_id=work.id, start=0, end=10, phase_attempt=1)["stale"] == 1
    work.refresh_from_db()
    assert (work.state, work.error, work.items_done) == ("running", "", 0)
    assert Batch.objects.get(id=batch.id).state == "running"

    # Attempt 2 itself records and completes.
    phase_chunk_run(phase_run_id=work.id, start=0, end=10, phase_attempt=2)
    phase_complete(phase_run_id=work.id, phase_attempt=2)
    assert PhaseRun.objects.get(id=work.id).state == "succeeded"


@pytest.mark.django_db
def test_a_soft_time_limit_records_what_the_chunk_finished_and_sends_the_rest(
    held_batches: HeldSender,
) -> None:
    _, work, run = counted_batch(10, soft_limit_at="i6")

    phase_chunk_run(phase_run_id=work.id, start=0, end=10)

    assert list(ChunkRun.objects.filter(phase_run=work).values_list("start", "end")) == [(0, 6)]
    assert ItemResult.objects.filter(phase_run=work).count() == 6
    rest = [w for w in held_batches.held if w.task == "tasks.phases.run_item_chunk_task"]
    assert [tuple(w.args[1:3]) for w in rest] == [(6, 10)]
    assert PhaseRun.objects.get(id=work.id).state == "running"


@pytest.mark.django_db
def test_work_queued_behind_a_backlog_is_never_sent_again() -> None:
    _, work, _ = counted_batch(100)
    later = after_lease(3)

    # Nothing leased, nothing recorded, but its queue holds work: it is queued, not lost.
    assert reconcile(now=later, queue_depth=lambda queue: 2000).chunks_resent == 0
    # One chunk alive, one whose holder died.
    lease_take(phase_run_id=work.id, start=0, end=10, attempt=1, owner="alive:1:a", now=later)
    lease_take(phase_run_id=work.id, start=10, end=20, attempt=1, owner="dead:1:d")
    report = reconcile(now=later, queue_depth=lambda queue: 2000)
    assert (report.chunks_resent, report.expired_leases) == (1, 1)  # only the dead one's
    # What was sent again counts as queued from now on: not sent again and again.
    assert reconcile(now=later + timedelta(seconds=1), queue_depth=lambda queue: 2000).chunks_resent == 0


@pytest.mark.django_db
def test_a_dependency_down_for_longer_than_60_waits_makes_work_wait_and_then_complete() -> None:
    publish_test_pipeline(
        "waits",
        [{"name": "score", "handler": "test.scoring", "mode": "per_item", "chunk_size": 10}],
    )
    run = uuid.uuid4().hex
    gate = settings.BOS_HOME / f"gate-{run}"
    gate.write_text("closed")
    request = batch_request(
        pipeline="waits",
        items=[{"key": f"k{n}", "payload": {}} for n in range(10)],
        metadata={"gate": str(gate)},
    )
    batch = batch_create(request=request, actor="test").batch
    batch_start(batch_id=batch.id)
    score = PhaseRun.objects.get(batch=batch, name="score")
    dependency = breaker("test-scoring")
    dependency.close()
    try:
        now = timezone.now()
        waits = 0
        # The dependency fails until its breaker opens, then every try waits: 100 of
        # them over 23 hours, none of them an attempt.
        for _ in range(100 + settings.BOS_BREAKER_FAIL_MAX):
            try:
                phase_chunk_run(phase_run_id=score.id, start=0, end=10, task_id="t-wait", now=now)
            except RetryChunk as retry:
                waits += not retry.attempt_used
            dependency._state_storage.opened_at = timezone.now()  # noqa: SLF001 - hold it open
            now += timedelta(minutes=14)
        assert waits >= 100
        assert ItemResult.objects.filter(phase_run=score).count() == 0

        gate.unlink()
        dependency.close()
        phase_chunk_run(phase_run_id=score.id, start=0, end=10, task_id="t-wait", now=now)
        assert ItemResult.objects.filter(phase_run=score, ok=True).count() == 10
    finally:
        gate.unlink(missing_ok=True)
        dependency.close()


@pytest.mark.django_db
def test_work_waiting_past_its_limit_fails_its_items_as_dependency_failures() -> None:
    publish_test_pipeline(
        "waits",
        [{"name": "score", "handler": "test.scoring", "mode": "per_item", "chunk_size": 10}],
    )
    request = batch_request(
        pipeline="waits",
        items=[{"key": f"k{n}", "payload": {}} for n in range(10)],
        metadata={"gate": "/nonexistent"},
    )
    batch = batch_create(request=request, actor="test").batch
    batch_start(batch_id=batch.id)
    score = PhaseRun.objects.get(batch=batch, name="score")
    dependency = breaker("test-scoring")
    dependency.open()
    try:
        with pytest.raises(RetryChunk):
            phase_chunk_run(phase_run_id=score.id, start=0, end=10)
        past = timezone.now() + timedelta(seconds=settings.BOS_MAX_WAIT_SECONDS + 60)
        phase_chunk_run(phase_run_id=score.id, start=0, end=10, now=past)
    finally:
        dependency.close()
    failed = ItemResult.objects.filter(phase_run=score, ok=False)
    assert failed.count() == 10
    assert set(failed.values_list("error_class", flat=True)) == {"dependency_unavailable"}
    assert "waited for test-scoring" in failed.first().error  # type: ignore[union-attr]


def test_a_celery_retry_while_waiting_never_runs_out_of_retries() -> None:
    task = SimpleNamespace(request=SimpleNamespace(retries=500))
    assert retry_options(task)["max_retries"] > 500


@pytest.mark.django_db
def test_a_per_batch_handler_waits_for_an_open_breaker_without_using_attempts() -> None:
    publish_test_pipeline(
        "waits-batch", [{"name": "score", "handler": "test.scoring_batch", "mode": "per_batch"}]
    )
    gate = settings.BOS_HOME / f"gate-{uuid.uuid4().hex}"
    gate.write_text("closed")
    request = batch_request(
        pipeline="waits-batch", items=[{"key": "k", "payload": {}}], metadata={"gate": str(gate)}
    )
    batch = batch_create(request=request, actor="test").batch
    batch_start(batch_id=batch.id)
    score = PhaseRun.objects.get(batch=batch, name="score")
    dependency = breaker("test-scoring")
    dependency.close()
    try:
        now, waits = timezone.now(), 0
        for _ in range(100 + settings.BOS_BREAKER_FAIL_MAX):
            try:
                phase_batch_run(phase_run_id=score.id, task_id="t-batch-wait", now=now)
            except RetryChunk as retry:
                waits += not retry.attempt_used
            dependency._state_storage.opened_at = timezone.now()  # noqa: SLF001 - hold it open
            now += timedelta(minutes=14)
        assert waits >= 100
        assert PhaseRun.objects.get(id=score.id).state == "running"

        gate.unlink()
        dependency.close()
        phase_batch_run(phase_run_id=score.id, task_id="t-batch-wait", now=now)
    finally:
        gate.unlink(missing_ok=True)
        dependency.close()
    assert PhaseRun.objects.get(id=score.id).output == {"scored": 1}
    assert Batch.objects.get(id=batch.id).state == "completed"
