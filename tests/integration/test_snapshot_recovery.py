"""Snapshots serve recovery, on a real worker: an operator rewinds an ended batch to a
snapshot and it runs again from that phase boundary; `bos_check --repair` rebuilds
counters from items, chunk records and, where that is what is left, the last snapshot."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from orchestrator.models import Batch, BatchSnapshot, ChunkRun, ItemResult, PhaseRun
from orchestrator.services.batches import batch_create
from orchestrator.services.consistency import check_batches
from orchestrator.services.snapshots import latest_snapshot, snapshot_running_batches
from tests.support.factories import MembershipFactory, UserFactory, batch_request, publish_test_pipeline
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("celery_worker", "test_pipelines")]


@pytest.fixture
def held_pipeline(transactional_db: None) -> None:
    """first → hold (waits while the `hold` file exists) → grade (fails `gated` items while
    the `gate` file exists) → report."""
    publish_test_pipeline(
        "held",
        [
            {"name": "first", "handler": "test.echo", "mode": "per_item", "chunk_size": 4},
            {"name": "hold", "handler": "test.hold", "mode": "per_batch", "after": ["first"]},
            {
                "name": "grade",
                "handler": "test.gated_item",
                "mode": "per_item",
                "chunk_size": 4,
                "after": ["hold"],
            },
            {"name": "report", "handler": "test.count", "mode": "per_batch", "after": ["grade"]},
        ],
    )


def held_batch(tmp_path: Path, *, gated: frozenset[int] = frozenset()) -> tuple[Batch, Path, Path]:
    hold, gate = tmp_path / "hold", tmp_path / "gate"
    hold.touch()
    gate.touch()
    items = [{"key": f"i{i}", "payload": {"gated": i in gated}} for i in range(12)]
    batch = batch_create(
        request=batch_request(pipeline="held", items=items, metadata={"hold": str(hold), "gate": str(gate)}),
        actor="test",
    ).batch
    wait_for(
        lambda: PhaseRun.objects.filter(batch_id=batch.id, name="hold", state="running").exists(),
        timeout=60,
        what="the batch to rest at its hold phase",
    )
    return batch, hold, gate


def snapshot_now(batch: Batch) -> BatchSnapshot:
    assert snapshot_running_batches() >= 1
    snapshot = latest_snapshot(batch.id)
    assert snapshot is not None
    return snapshot


def run(*args: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.usefixtures("held_pipeline")
def test_an_operator_rewinds_a_batch_to_a_snapshot_and_it_runs_again_from_there(tmp_path: Path) -> None:
    batch, hold, gate = held_batch(tmp_path, gated=frozenset({2, 5, 9}))
    snapshot = snapshot_now(batch)
    assert {p["name"]: p["state"] for p in snapshot.phases} == {
        "first": "succeeded", "hold": "running", "grade": "pending", "report": "pending",
    }  # fmt: skip
    hold.unlink()
    ended = wait_for_terminal(batch.id)
    assert (ended.state, ended.items_failed) == ("completed_with_errors", 3)
    first_results = set(
        ItemResult.objects.filter(phase_run__batch=batch, phase_run__name="first").values_list("id")
    )
    gate.unlink()

    dry = run("bos_snapshot", "rewind", str(batch.id), "--snapshot", str(snapshot.id))
    assert "would rewind" in dry and "run again: hold, grade, report" in dry and "kept:      first" in dry
    assert "items pending again: 12; item results cleared: 12" in dry
    assert Batch.objects.get(id=batch.id).state == "completed_with_errors"

    MembershipFactory(user=UserFactory(username="op"), tenant=batch.tenant, role="operator")
    run(
        "bos_snapshot", "rewind", str(batch.id), "--snapshot", str(snapshot.id),
        "--execute", "--reason", "gate fixed", "--as-user", "op",
    )  # fmt: skip
    done = wait_for_terminal(batch.id)

    assert (done.state, done.items_succeeded, done.items_failed) == ("completed", 12, 0)
    phases = {p.name: p for p in done.phases.all()}
    assert {name: p.attempts for name, p in phases.items()} == {
        "first": 1,
        "hold": 2,
        "grade": 2,
        "report": 2,
    }
    assert phases["grade"].items_failed == 0 and phases["grade"].chunks_done == 3
    kept = set(ItemResult.objects.filter(phase_run__batch=batch, phase_run__name="first").values_list("id"))
    assert kept == first_results  # the kept phase's results were not touched
    assert ItemResult.objects.filter(phase_run=phases["grade"], ok=True).count() == 12
    rewound = done.transitions.get(from_state="completed_with_errors", to_state="running")
    assert rewound.actor == "user:op"
    assert rewound.reason.startswith(f"rewound to snapshot {snapshot.id} of ")
    assert rewound.reason.endswith(": hold, grade, report run again; gate fixed")
    event = done.outbox.get(event_type="batch.rewound").envelope["data"]
    assert (event["snapshot"], event["phases"], event["kept"], event["reason"]) == (
        snapshot.id, ["hold", "grade", "report"], ["first"], "gate fixed",
    )  # fmt: skip
    assert "consistent" in run("bos_check")

    with pytest.raises(CommandError, match="invalid_state: a completed batch cannot be rewound"):
        run("bos_snapshot", "rewind", str(batch.id), "--snapshot", str(snapshot.id), "--execute")
    with pytest.raises(CommandError, match="snapshot_not_found"):
        run("bos_snapshot", "rewind", str(batch.id), "--snapshot", str(snapshot.id + 1000))


def _items(n: int) -> list[dict[str, Any]]:
    return [{"key": f"i{i}", "payload": {}} for i in range(n)]


def test_bos_check_repair_rebuilds_counters_from_items_and_chunk_records() -> None:
    items = [{"key": f"i{i}", "payload": {"fail": "no"} if i in (3, 11) else {}} for i in range(20)]
    batch = batch_create(request=batch_request(pipeline="echo", items=items), actor="test").batch
    assert wait_for_terminal(batch.id).state == "completed_with_errors"
    Batch.objects.filter(id=batch.id).update(items_succeeded=0, items_failed=7)
    PhaseRun.objects.filter(batch=batch, name="first").update(items_done=3, items_failed=0, chunks_done=1)

    with pytest.raises(CommandError, match="inconsistencies remain"):
        run("bos_check")
    repaired = check_batches(repair=True).repaired

    assert sorted((p.check, p.detail) for p in repaired) == [
        ("counts", "counts 0 ok + 7 failed of 20; items say 18 ok + 2 failed"),
        ("phase_counts", "phase first: done/failed/chunks 3/0/1; chunk records say 20/2/5"),
    ]
    batch.refresh_from_db()
    assert (batch.items_succeeded, batch.items_failed) == (18, 2)
    first = PhaseRun.objects.get(batch=batch, name="first")
    assert (first.items_done, first.items_failed, first.chunks_done) == (20, 2, 5)
    assert "consistent" in run("bos_check")


def test_bos_check_leaves_a_just_finished_batch_to_its_settling_and_repairs_a_lost_settle() -> None:
    from datetime import timedelta

    from django.utils import timezone

    from orchestrator.models import BatchItem
    from orchestrator.services.consistency import SETTLE_GRACE

    batch = batch_create(request=batch_request(pipeline="echo", items=_items(6)), actor="test").batch
    assert wait_for_terminal(batch.id).state == "completed"
    wait_for(lambda: not BatchItem.objects.filter(batch=batch, state="pending").exists(), what="settled")
    # As if the process that completed it had died before settling its items:
    BatchItem.objects.filter(batch=batch).update(state="pending")
    assert "consistent" in run("bos_check")  # just finished: it may still be settling

    Batch.objects.filter(id=batch.id).update(finished_at=timezone.now() - SETTLE_GRACE - timedelta(seconds=1))
    with pytest.raises(CommandError, match="inconsistencies remain"):
        run("bos_check")
    repaired = check_batches(repair=True).repaired
    assert [(p.check, p.detail) for p in repaired] == [
        ("settled", "6 item(s) of a completed batch still pending")
    ]
    assert BatchItem.objects.filter(batch=batch, state="succeeded").count() == 6


@pytest.mark.usefixtures("held_pipeline")
def test_bos_check_repair_takes_a_finished_phase_counters_from_its_last_snapshot_when_its_records_are_gone(
    tmp_path: Path,
) -> None:
    batch, hold, _ = held_batch(tmp_path)
    snapshot = snapshot_now(batch)
    ChunkRun.objects.filter(phase_run__batch=batch, phase_run__name="first").delete()
    PhaseRun.objects.filter(batch=batch, name="first").update(items_done=0, items_failed=0, chunks_done=0)

    repaired = check_batches(repair=True).repaired

    assert [(p.check, p.detail) for p in repaired] == [
        ("phase_counts", f"phase first: done/failed/chunks 0/0/0; snapshot {snapshot.id} say 12/0/3")
    ]
    first = PhaseRun.objects.get(batch=batch, name="first")
    assert (first.items_done, first.items_failed, first.chunks_done) == (12, 0, 3)
    hold.unlink()
    done = wait_for_terminal(batch.id)
    assert (done.state, done.items_succeeded) == ("completed", 12)
    assert "consistent" in run("bos_check")
