"""The reconciler and `bos_check`: lost work is found and sent again, once."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command

from orchestrator.models import Batch, ItemResult, PhaseRun, StateTransition
from orchestrator.pipelines import chunk_bounds
from orchestrator.services.batches import batch_create, batch_start
from orchestrator.services.phases import phase_chunk_run
from orchestrator.services.reconcile import LOCK, reconcile
from tests.support.clock import after_lease
from tests.support.factories import batch_request, essay_items
from tests.support.sending import HeldSender
from tests.support.waiting import wait_for_terminal

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline", "held_batches")]


@pytest.mark.usefixtures("celery_worker")
def test_a_batch_whose_start_was_lost_is_started(held_batches: HeldSender) -> None:
    batch = batch_create(request=batch_request(items=essay_items(30)), actor="test").batch
    held_batches.lose()  # its start never reached a worker
    assert reconcile().started == []  # not a lease period old yet
    report = reconcile(now=after_lease())
    assert report.started == [str(batch.id)]
    assert wait_for_terminal(batch.id).state == "completed"


@pytest.mark.usefixtures("celery_worker")
def test_chunks_that_were_lost_are_sent_again_and_recorded_once(held_batches: HeldSender) -> None:
    batch = batch_create(request=batch_request(items=essay_items(250)), actor="test").batch
    batch_start(batch_id=batch.id)
    held_batches.lose()  # validate is running, but its chord never reached a worker
    validate = PhaseRun.objects.get(batch=batch, name="validate")
    phase_chunk_run(phase_run_id=validate.id, start=0, end=100)  # one chunk did get through

    report = reconcile(now=after_lease())

    assert report.chunks_resent == 2  # only the two missing ones
    done = wait_for_terminal(batch.id)
    assert done.state == "completed"
    assert ItemResult.objects.filter(phase_run=validate).count() == 250
    # Sent again while already re-sent and running: nothing is sent twice over.
    assert reconcile().changed is False


def test_a_phase_whose_callback_was_lost_is_completed() -> None:
    batch = batch_create(request=batch_request(items=essay_items(150)), actor="test").batch
    batch_start(batch_id=batch.id)
    validate = PhaseRun.objects.get(batch=batch, name="validate")
    for start, end in chunk_bounds(150, validate.chunk_size):
        phase_chunk_run(phase_run_id=validate.id, start=start, end=end)

    report = reconcile(now=after_lease())

    assert report.phases_completed == [f"{batch.id}/validate"]
    assert PhaseRun.objects.get(id=validate.id).state == "succeeded"
    assert set(PhaseRun.objects.filter(batch=batch, state="running").values_list("name", flat=True)) == {
        "spellcheck",
        "text_stats",
    }


def test_a_second_reconciler_at_the_same_moment_does_nothing() -> None:
    lock = redis.Redis.from_url(settings.REDIS_URL).lock(LOCK, timeout=30)
    assert lock.acquire(blocking=False)
    try:
        assert reconcile(now=after_lease()).locked_out is True
    finally:
        lock.release()


def test_bos_check_finds_and_repairs_inconsistencies(capsys: pytest.CaptureFixture[str]) -> None:
    good = batch_create(request=batch_request(items=essay_items(3)), actor="test").batch
    call_command("bos_check")
    assert "consistent" in capsys.readouterr().out

    # A finished batch whose counts disagree with its items: reported, and repaired.
    Batch.objects.filter(id=good.id).update(state="completed", items_succeeded=1, items_failed=0)
    StateTransition.objects.create(
        batch=good,
        tenant=good.tenant,
        seq=3,
        from_state="accepted",
        to_state="running",
        actor="t",
        at=good.created_at,
    )
    StateTransition.objects.create(
        batch=good,
        tenant=good.tenant,
        seq=4,
        from_state="running",
        to_state="completed",
        actor="t",
        at=good.created_at,
    )
    with pytest.raises(CommandError, match="inconsistencies remain"):
        call_command("bos_check")
    out = capsys.readouterr().out
    assert "counts" in out and "batch.completed" in out  # the completed transition has no event

    with pytest.raises(CommandError):
        call_command("bos_check", "--repair")  # the missing event cannot be made up
    fixed = Batch.objects.get(id=good.id)
    assert (fixed.items_succeeded, fixed.items_failed) == (3, 0)

    # A gap in the history is reported.
    StateTransition.objects.filter(batch=good, seq=2).delete()
    with pytest.raises(CommandError):
        call_command("bos_check")
    assert "gap" in capsys.readouterr().out
