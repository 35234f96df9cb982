"""Sub-pipelines on a real worker: a retried parent runs its child again, a child that
ends by rollback tells its parent, and a tenant's batch named like a child stays its own."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator.kafka.consumer import COMMANDS
from orchestrator.kafka.messages import Envelope
from orchestrator.models import Batch, PhaseRun
from orchestrator.services.batches import batch_cancel, batch_create, batch_retry
from tests.support.factories import batch_request, publish_test_pipeline
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = [pytest.mark.integration]


def items(n: int) -> list[dict[str, Any]]:
    return [{"key": f"i{i}", "payload": {}} for i in range(n)]


def parent_of(child_pipeline: str, name: str, **top: Any) -> None:
    publish_test_pipeline(
        name,
        [
            {"name": "prepare", "handler": "test.echo", "mode": "per_item"},
            {"name": "child", "mode": "sub_pipeline", "pipeline": child_pipeline, "after": ["prepare"]},
            {"name": "after", "handler": "test.count", "mode": "per_batch", "after": ["child"]},
        ],
        **top,
    )


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_retrying_a_parent_whose_child_failed_runs_a_new_child_and_both_complete(tmp_path: Path) -> None:
    parent_of("gated", "gated-parent")
    gate = tmp_path / "gate"
    gate.touch()
    parent = batch_create(
        request=batch_request(pipeline="gated-parent", items=items(6), metadata={"gate": str(gate)}),
        actor="test",
    ).batch
    failed = wait_for_terminal(parent.id, timeout=90)
    assert failed.state == "failed"
    first = Batch.objects.get(parent=parent)
    assert first.state == "failed" and first.parent_attempt == 1
    assert f"child batch {first.id} ended failed" in failed.phases.get(name="child").error

    gate.unlink()
    batch_retry(batch_id=parent.id, actor="user:op", reason="gate fixed")
    done = wait_for_terminal(parent.id, timeout=90)

    assert done.state == "completed"
    children = list(Batch.objects.filter(parent=parent).order_by("parent_attempt"))
    assert [(c.parent_attempt, c.state) for c in children] == [(1, "failed"), (2, "completed")]
    second = children[1]
    assert second.external_id == f"{parent.external_id}.child#2"
    assert second.phases.get(name="gate").state == "succeeded"
    phase = done.phases.get(name="child")
    assert phase.attempts == 2 and phase.output["child_batch"] == str(second.id)
    assert done.phases.get(name="after").state == "succeeded"


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
@pytest.mark.parametrize(
    ("on_failure", "parent_end"),
    [("stop", "failed"), ("rollback", "rolled_back")],
    ids=["stops", "rolls-back"],
)
def test_a_child_that_rolls_back_fails_its_parent_phase(on_failure: str, parent_end: str) -> None:
    parent_of("self-healing", f"healing-parent-{on_failure}", on_failure=on_failure)
    parent = batch_create(
        request=batch_request(pipeline=f"healing-parent-{on_failure}", items=items(5)), actor="test"
    ).batch

    ended = wait_for(
        lambda: (b := Batch.objects.get(id=parent.id)).state == parent_end and b, timeout=90, what=parent_end
    )

    child = Batch.objects.get(parent=parent)
    assert child.state == "rolled_back"
    phase = ended.phases.get(name="child")
    assert phase.state == "failed"
    assert phase.error.startswith(
        f"child batch {child.id} ended rolled_back: RuntimeError: the per-batch handler blew up"
    )
    assert ended.phases.get(name="after").state == "pending"
    told = ended.transitions.get(to_state="failed")
    assert told.phase == "child" and told.actor == "orchestrator"
    events = list(ended.outbox.values_list("event_type", "envelope__data__phase"))
    assert ("batch.phase_failed", "child") in events


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_a_child_whose_rollback_fails_for_good_fails_its_parent_phase(tmp_path: Path) -> None:
    publish_test_pipeline(
        "stuck-healing",
        [
            {"name": "first", "handler": "test.echo", "mode": "per_item", "compensate": "test.undo_gated"},
            {"name": "boom", "handler": "test.explode", "mode": "per_batch", "after": ["first"]},
        ],
        on_failure="rollback",
    )
    parent_of("stuck-healing", "stuck-parent")
    gate = tmp_path / "undo-gate"
    gate.touch()
    parent = batch_create(
        request=batch_request(pipeline="stuck-parent", items=items(3), metadata={"undo_gate": str(gate)}),
        actor="test",
    ).batch

    ended = wait_for_terminal(parent.id, timeout=90)

    child = Batch.objects.get(parent=parent)
    assert (child.state, ended.state) == ("rollback_failed", "failed")
    assert ended.phases.get(name="child").error.startswith(
        f"child batch {child.id} ended rollback_failed: compensation of first failed after 3 attempts"
    )


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_cancelling_a_parent_whose_child_is_rolling_back_lets_the_rollback_finish(tmp_path: Path) -> None:
    publish_test_pipeline(
        "slow-healing",
        [
            {"name": "first", "handler": "test.echo", "mode": "per_item", "compensate": "test.hold"},
            {"name": "boom", "handler": "test.explode", "mode": "per_batch", "after": ["first"]},
        ],
        on_failure="rollback",
    )
    parent_of("slow-healing", "slow-healing-parent")
    hold = tmp_path / "hold"
    hold.touch()
    parent = batch_create(
        request=batch_request(pipeline="slow-healing-parent", items=items(3), metadata={"hold": str(hold)}),
        actor="test",
    ).batch
    child = wait_for(
        lambda: Batch.objects.filter(parent_id=parent.id, state="rolling_back").first(),
        timeout=60,
        what="the child to roll back",
    )

    batch_cancel(batch_id=parent.id, actor="user:op", reason="stop it")
    hold.unlink()

    assert Batch.objects.get(id=parent.id).state == "cancelled"
    assert wait_for_terminal(child.id).state == "rolled_back"
    phase = PhaseRun.objects.get(batch_id=parent.id, name="child")
    assert (phase.state, phase.error) == ("cancelled", "")


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_a_tenant_batch_named_like_a_child_is_not_adopted() -> None:
    external_id = "report-7"
    own = batch_create(
        request=batch_request(pipeline="echo", external_id=f"{external_id}.child", items=items(3)),
        actor="test",
    ).batch
    assert wait_for_terminal(own.id).state == "completed"

    parent = batch_create(
        request=batch_request(pipeline="parent", external_id=external_id, items=items(4)), actor="test"
    ).batch
    done = wait_for_terminal(parent.id, timeout=90)

    assert done.state == "completed"
    child = Batch.objects.get(parent=parent)
    assert child.id != own.id and child.external_id == own.external_id
    assert child.pipeline_version.pipeline.name == "slow" and child.items_total == 4
    assert done.phases.get(name="child").output["child_batch"] == str(child.id)
    own.refresh_from_db()
    assert own.parent_id is None and own.parent_phase_id is None
    # The tenant's id stays the tenant's: asking again gives their batch back, not the child.
    again = batch_create(
        request=batch_request(pipeline="echo", external_id=f"{external_id}.child", items=items(3)),
        actor="test",
    )
    assert not again.created and again.batch.id == own.id


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_a_tenant_batch_created_after_the_child_with_its_name_is_a_new_batch() -> None:
    parent = batch_create(request=batch_request(pipeline="parent", items=items(4)), actor="test").batch
    done = wait_for_terminal(parent.id, timeout=90)
    child = Batch.objects.get(parent=parent)

    created = batch_create(
        request=batch_request(pipeline="echo", external_id=child.external_id, items=items(2)), actor="test"
    )

    assert done.state == "completed"
    assert created.created and created.batch.id != child.id and created.batch.parent_id is None
    assert wait_for_terminal(created.batch.id).state == "completed"


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_a_kafka_cancel_naming_a_child_like_id_cancels_the_tenant_batch_not_the_child(tmp_path: Path) -> None:
    publish_test_pipeline("held-only", [{"name": "hold", "handler": "test.hold", "mode": "per_batch"}])
    parent_of("held-only", "held-parent")
    hold = tmp_path / "hold"
    hold.touch()
    # More items than run inline, so the held phase runs in its own task, not under the batch lock.
    metadata = {"hold": str(hold)}
    parent = batch_create(
        request=batch_request(
            pipeline="held-parent", external_id="job-9", items=items(12), metadata=metadata
        ),
        actor="test",
    ).batch
    child = wait_for(
        lambda: Batch.objects.filter(parent_id=parent.id, state="running").first(),
        timeout=60,
        what="the child",
    )
    own = batch_create(
        request=batch_request(
            pipeline="held-only", external_id="job-9.child", items=items(12), metadata=metadata
        ),
        actor="test",
    ).batch
    envelope = Envelope(
        event_id=str(uuid.uuid4()),
        event_type="batch.cancel_requested",
        schema_version=1,
        tenant="acme",
        data={"external_id": "job-9.child"},
    )

    outcome = COMMANDS["batch.cancel_requested"](envelope)
    hold.unlink()

    assert outcome == f"batch.cancel_requested applied to batch {own.id}"
    assert Batch.objects.get(id=own.id).state == "cancelled"
    assert wait_for_terminal(child.id).state == "completed"
    assert wait_for_terminal(parent.id, timeout=90).state == "completed"
