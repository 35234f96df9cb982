"""Snapshots of batches that have not ended, and the stalled batches recovery reads from them."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orchestrator.models import Batch, BatchSnapshot, PhaseRun
from orchestrator.services.batches import batch_cancel, batch_create, batch_start
from orchestrator.services.phases import phase_chunk_run
from orchestrator.services.snapshots import (
    latest_snapshot,
    progress_since_snapshot,
    snapshot_running_batches,
    stalled_batches,
)
from tasks.snapshots import snapshot_task
from tests.support.factories import batch_request, essay_items

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline", "held_batches")]


def new_batch(n: int = 30, **kwargs: Any) -> Batch:
    return batch_create(request=batch_request(items=essay_items(n), **kwargs), actor="test").batch


def running_batch(n: int = 30) -> Batch:
    """A running batch whose validate phase is running, its chunks held back."""
    batch = new_batch(n)
    batch_start(batch_id=batch.id)
    return Batch.objects.get(id=batch.id)


def take(times: int, *, start: Any = None, every: float = 60.0) -> Any:
    """Take `times` snapshots, `every` seconds apart (by their `now`); the last `now`."""
    start = start or timezone.now() - timedelta(seconds=every * times)
    for i in range(times):
        snapshot_running_batches(now=start + timedelta(seconds=every * i))
    return start + timedelta(seconds=every * (times - 1))


def test_snapshots_are_taken_for_batches_that_have_not_ended_only() -> None:
    accepted = new_batch()
    running = running_batch()
    received, rolling_back, completed, failed = new_batch(), new_batch(), new_batch(), new_batch()
    Batch.objects.filter(id=received.id).update(state="received")
    Batch.objects.filter(id=rolling_back.id).update(state="rolling_back")
    Batch.objects.filter(id=completed.id).update(state="completed")
    Batch.objects.filter(id=failed.id).update(state="failed")
    cancelled = batch_cancel(batch_id=new_batch().id, actor="test")

    assert snapshot_running_batches() == 4

    snapped = dict(BatchSnapshot.objects.values_list("batch_id", "state"))
    assert snapped == {
        accepted.id: "accepted",
        running.id: "running",
        received.id: "received",
        rolling_back.id: "rolling_back",
    }
    assert cancelled.id not in snapped
    snapshot = latest_snapshot(running.id)
    assert snapshot is not None
    assert snapshot.transitions_count == running.transitions_count == 3
    assert snapshot.tenant_id == running.tenant_id
    phases = {p["name"]: p for p in snapshot.phases}
    assert [p["name"] for p in snapshot.phases] == [
        "validate",
        "spellcheck",
        "text_stats",
        "score",
        "grading",
        "aggregate",
    ]
    validate = PhaseRun.objects.get(batch=running, name="validate")
    assert phases["validate"] == {
        "name": "validate",
        "state": "running",
        "items_done": 0,
        "items_failed": 0,
        "chunks_done": 0,
        "attempts": 1,
        "started_at": validate.started_at.isoformat() if validate.started_at else None,
        "finished_at": None,
    }
    assert phases["aggregate"]["state"] == "pending" and phases["aggregate"]["started_at"] is None


def test_a_snapshot_run_costs_the_same_queries_for_3_or_30_batches() -> None:
    for _ in range(3):
        running_batch(5)
    snapshot_running_batches()  # every batch has snapshots to prune from now on
    with CaptureQueriesContext(connection) as few:
        assert snapshot_running_batches() == 3
    for _ in range(27):
        new_batch(5)
    with CaptureQueriesContext(connection) as many:
        assert snapshot_running_batches() == 30
    assert len(few) == len(many)
    # Read batches, read their phases, insert the snapshots, prune (+ BEGIN, COMMIT).
    statements = [q["sql"].split()[0] for q in many.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
    assert statements == ["SELECT", "SELECT", "INSERT", "DELETE"]
    assert sum(q["sql"].startswith("INSERT") for q in many.captured_queries) == 1
    assert sum(q["sql"].startswith("DELETE") for q in many.captured_queries) == 1


def test_only_the_newest_snapshots_of_each_batch_are_kept() -> None:
    a, b = running_batch(5), new_batch(5)
    last = take(6)
    for _ in range(2):
        snapshot_running_batches(now=last - timedelta(days=1), keep=4)  # older than any kept
    snapshot_running_batches(now=last + timedelta(seconds=60), keep=4)

    for batch in (a, b):
        kept = list(
            BatchSnapshot.objects.filter(batch=batch).order_by("taken_at").values_list("taken_at", flat=True)
        )
        assert len(kept) == 4
        assert kept == [
            last - timedelta(seconds=120),
            last - timedelta(seconds=60),
            last,
            last + timedelta(seconds=60),
        ]
    with pytest.raises(ValueError, match="keep"):
        snapshot_running_batches(keep=0)


def test_a_running_batch_without_change_is_stalled_one_that_moved_is_not() -> None:
    stuck, moving = running_batch(), running_batch()
    accepted = new_batch()  # not running: the reconciler's business, never "stalled"
    validate = PhaseRun.objects.get(batch=moving, name="validate")
    start = timezone.now() - timedelta(minutes=5)
    snapshot_running_batches(now=start)
    snapshot_running_batches(now=start + timedelta(seconds=60))
    phase_chunk_run(phase_run_id=validate.id, start=0, end=10)  # 10 items done between snapshots
    snapshot_running_batches(now=start + timedelta(seconds=120))

    assert stalled_batches(snapshots=3) == [stuck.id]
    assert accepted.id not in stalled_batches(snapshots=2)
    assert stalled_batches(snapshots=2) == [stuck.id]  # it moved between the last two
    # Not enough snapshots yet, or too close together: not stalled.
    assert stalled_batches(snapshots=4) == []
    assert stalled_batches(snapshots=3, min_span=600) == []

    snapshot_running_batches(now=start + timedelta(seconds=180))
    assert set(stalled_batches(snapshots=2)) == {stuck.id, moving.id}  # not since
    # It moved after its last snapshot: the live batch no longer matches, so not stalled.
    phase_chunk_run(phase_run_id=validate.id, start=10, end=20)
    assert stalled_batches(snapshots=2) == [stuck.id]


def test_a_batch_stuck_between_phases_is_stalled() -> None:
    """No phase is running, so the reconciler (which looks at running phases) sees nothing."""
    batch = running_batch()
    PhaseRun.objects.filter(batch=batch, name="validate").update(
        state="succeeded", finished_at=timezone.now()
    )
    take(3)
    assert stalled_batches() == [batch.id]


def test_progress_since_the_last_snapshot() -> None:
    batch = running_batch()
    assert progress_since_snapshot(batch)["taken_at"] is None
    snapshot_running_batches()
    assert progress_since_snapshot(batch)["changed"] is False

    validate = PhaseRun.objects.get(batch=batch, name="validate")
    phase_chunk_run(phase_run_id=validate.id, start=0, end=10)
    progress = progress_since_snapshot(Batch.objects.get(id=batch.id))
    assert progress["changed"] is True
    assert progress["phases"] == [
        {"name": "validate", "state": ["running", "running"], "items_done": [0, 10]}
    ]
    assert progress["state"] is None and progress["transitions"] == 0


def test_the_task_snapshots_and_reports_stalled_batches() -> None:
    batch = running_batch()
    take(2)
    result = snapshot_task.apply().get()
    assert result == {"snapshots": 1, "stalled": [str(batch.id)]}


def test_the_command_snapshots_and_lists_batches(capsys: pytest.CaptureFixture[str]) -> None:
    stuck, fresh = running_batch(), new_batch()
    take(3)

    out = StringIO()
    call_command("bos_snapshot", "--min-span", "0", stdout=out)
    text = out.getvalue()
    assert "2 snapshot(s) taken" in text
    assert str(stuck.id) in text and str(fresh.id) in text
    assert "STALLED" in text
    assert BatchSnapshot.objects.filter(batch=stuck).count() == 4

    out = StringIO()
    call_command("bos_snapshot", "--stalled", "--no-take", stdout=out)
    text = out.getvalue()
    assert str(stuck.id) in text and str(fresh.id) not in text
    assert BatchSnapshot.objects.filter(batch=stuck).count() == 4

    out = StringIO()
    call_command("bos_snapshot", "--batch", str(stuck.id), "--no-take", stdout=out)
    text = out.getvalue()
    assert f"batch {stuck.id}" in text and "4 snapshot(s)" in text
    assert "validate running" in text and "no change" in text

    with pytest.raises(CommandError, match="does not exist"):
        call_command("bos_snapshot", "--batch", "not-a-batch", "--no-take")
