"""The pipeline engine on a real worker: branches, versions and A/B splits, rollback,
sub-pipelines with cancellation."""

from __future__ import annotations

import collections
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import InvalidRequest
from orchestrator.models import Batch, Pipeline
from orchestrator.pipelines import choose_version
from orchestrator.services.batches import batch_cancel, batch_create
from orchestrator.services.pipelines import pipeline_publish, pipeline_set_split
from orchestrator.services.rollback import batch_rollback
from tests.support.factories import batch_request, essay_items
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = [pytest.mark.integration]
ESSAYS = Path(__file__).resolve().parents[2] / "pipelines" / "essay-analysis.json"


def items(n: int) -> list[dict[str, Any]]:
    return [{"key": f"i{i}", "payload": {}} for i in range(n)]


@pytest.mark.usefixtures("celery_worker", "essay_pipeline")
@pytest.mark.parametrize("size", [4, 40], ids=["inline", "fanned-out"])
def test_a_false_branch_is_skipped_and_the_batch_still_completes(size: int) -> None:
    plain = batch_create(request=batch_request(items=essay_items(size)), actor="test").batch
    graded = batch_create(
        request=batch_request(items=essay_items(size), metadata={"grading": True}), actor="test"
    ).batch
    plain, graded = wait_for_terminal(plain.id), wait_for_terminal(graded.id)

    assert plain.state == graded.state == "completed"
    skipped = plain.phases.get(name="grading")
    assert skipped.state == "skipped"
    assert skipped.skip_reason == "when: metadata.get('grading') == True is false"
    assert plain.phases.get(name="aggregate").state == "succeeded"  # trigger none_failed
    assert plain.report["aggregate"]["grades"] == {}
    assert graded.phases.get(name="grading").state == "succeeded"
    assert sum(graded.report["aggregate"]["grades"].values()) == size


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_a_version_published_mid_run_does_not_change_running_batches() -> None:
    running = batch_create(request=batch_request(pipeline="slow", items=items(16)), actor="test").batch
    wait_for(lambda: Batch.objects.get(id=running.id).state == "running", what="the batch to run")
    published = pipeline_publish(
        name="slow", definition={"phases": [{"name": "quick", "handler": "test.echo", "mode": "per_item"}]}
    )
    assert published.version.version == 2
    later = batch_create(request=batch_request(pipeline="slow", items=items(3)), actor="test").batch

    running, later = wait_for_terminal(running.id), wait_for_terminal(later.id)
    assert running.state == later.state == "completed"
    assert (running.pipeline_version.version, later.pipeline_version.version) == (1, 2)
    assert [p.name for p in running.phases.all()] == ["wait"]
    assert [p.name for p in later.phases.all()] == ["quick"]


@pytest.mark.usefixtures("held_batches", "essay_pipeline")
def test_an_ab_split_of_70_30_holds_over_1000_batches_and_is_sticky() -> None:
    definition = {"phases": [{"name": "validate", "handler": "essays.validate", "mode": "per_item"}]}
    pipeline_publish(name="essay-analysis", definition=definition)
    pipeline_set_split(
        name="essay-analysis", split=[{"version": 1, "weight": 70}, {"version": 2, "weight": 30}]
    )
    counts: collections.Counter[int] = collections.Counter()
    for n in range(1000):
        batch = batch_create(
            request=batch_request(external_id=f"ab-{n}", items=[{"key": "a", "payload": {"text": "x"}}]),
            actor="t",
        ).batch
        counts[batch.pipeline_version.version] += 1
    assert 640 <= counts[1] <= 760, counts  # 70 % ± 6 points
    assert counts[1] + counts[2] == 1000
    # Sticky: the same external id always lands on the same version.
    again = [
        choose_version(Pipeline.objects.get(name="essay-analysis").split, f"essay-analysis:ab-{n}")
        for n in range(50)
    ]
    assert again == [Batch.objects.get(external_id=f"ab-{n}").pipeline_version.version for n in range(50)]


@pytest.mark.usefixtures("essay_pipeline")
def test_a_split_naming_a_missing_version_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="version 9"):
        pipeline_set_split(name="essay-analysis", split=[{"version": 9, "weight": 1}])


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_a_rollback_runs_compensations_in_reverse_order(tmp_path: Path) -> None:
    batch = batch_create(
        request=batch_request(
            pipeline="compensated", items=items(20), metadata={"undo_gate": str(tmp_path / "no")}
        ),
        actor="test",
    ).batch
    assert wait_for_terminal(batch.id).state == "completed"

    batch_rollback(batch_id=batch.id, actor="user:op", reason="wrong input")
    done = wait_for_terminal(batch.id)

    assert done.state == "rolled_back"
    phases = sorted(done.phases.all(), key=lambda p: p.compensated_at)
    assert [p.name for p in phases] == ["third", "second", "first"]
    assert all(p.compensation_state == "succeeded" for p in phases)
    history = list(done.transitions.order_by("seq").values_list("to_state", flat=True))
    assert history[-3:] == ["completed", "rolling_back", "rolled_back"]
    events = list(done.outbox.order_by("id").values_list("event_type", "envelope__data__phase"))
    assert [e for e in events if e[0] == "batch.phase_compensated"] == [
        ("batch.phase_compensated", "third"), ("batch.phase_compensated", "second"),
        ("batch.phase_compensated", "first"),
    ]  # fmt: skip


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_a_compensation_that_keeps_failing_leaves_rollback_failed_until_rolled_back_again(
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    batch = batch_create(
        request=batch_request(pipeline="compensated", items=items(3), metadata={"undo_gate": str(gate)}),
        actor="test",
    ).batch
    wait_for_terminal(batch.id)
    batch_rollback(batch_id=batch.id, actor="user:op")

    stuck = wait_for_terminal(batch.id)
    assert stuck.state == "rollback_failed"
    third = stuck.phases.get(name="third")
    assert third.compensation_state == "failed" and third.compensation_attempts == 3
    assert "cannot undo yet" in third.compensation_error
    assert stuck.phases.get(name="second").compensation_state == "pending"  # never ran

    gate.unlink()
    batch_rollback(batch_id=batch.id, actor="user:op", reason="fixed")
    wait_for(lambda: Batch.objects.get(id=batch.id).state == "rolled_back", what="the second rollback")


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_a_pipeline_may_roll_back_by_itself_when_a_batch_fails() -> None:
    batch = batch_create(request=batch_request(pipeline="self-healing", items=items(15)), actor="test").batch
    wait_for(lambda: Batch.objects.get(id=batch.id).state == "rolled_back", what="the automatic rollback")
    history = list(
        Batch.objects.get(id=batch.id).transitions.order_by("seq").values_list("to_state", flat=True)
    )
    assert history[-3:] == ["failed", "rolling_back", "rolled_back"]


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_a_parent_waits_for_its_sub_pipeline() -> None:
    parent = batch_create(request=batch_request(pipeline="parent", items=items(12)), actor="test").batch
    done = wait_for_terminal(parent.id, timeout=90)

    assert done.state == "completed"
    child = Batch.objects.get(parent=done)
    assert child.state == "completed" and child.external_id == f"{done.external_id}.child"
    assert child.parent_phase.name == "child"
    phases = {p.name: p for p in done.phases.all()}
    assert phases["child"].output["child_batch"] == str(child.id)
    assert phases["child"].finished_at <= phases["after"].started_at
    assert child.finished_at <= phases["after"].started_at


@pytest.mark.usefixtures("celery_worker", "test_pipelines")
def test_cancelling_a_parent_cancels_its_running_child() -> None:
    parent = batch_create(request=batch_request(pipeline="parent", items=items(12)), actor="test").batch
    child = wait_for(
        lambda: Batch.objects.filter(parent_id=parent.id, state="running").first(), what="the child"
    )
    batch_cancel(batch_id=parent.id, actor="user:op", reason="stop it")

    assert Batch.objects.get(id=parent.id).state == "cancelled"
    child = Batch.objects.get(id=child.id)
    assert child.state == "cancelled"
    last = child.transitions.order_by("-seq").first()
    assert last is not None and last.reason == f"parent batch {parent.id} cancelled"
    wait_for_terminal(child.id)


@pytest.mark.parametrize(
    ("phase", "code"),
    [
        (
            {"name": "x", "handler": "test.echo", "mode": "per_item", "when": "metadata.grading and"},
            "invalid_condition",
        ),
        (
            {"name": "x", "handler": "test.echo", "mode": "per_item", "when": "os.system('id')"},
            "invalid_condition",
        ),
        ({"name": "x", "handler": "test.echo", "mode": "per_item", "compensate": "nope"}, "unknown_handler"),
        ({"name": "x", "mode": "sub_pipeline"}, "missing_pipeline"),
        ({"name": "x", "mode": "sub_pipeline", "pipeline": "ghost"}, "unknown_pipeline"),
    ],
)
@pytest.mark.usefixtures("transactional_db")
def test_bad_definitions_are_refused_at_publish_naming_the_phase(phase: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        pipeline_publish(name=f"bad-{uuid.uuid4().hex[:6]}", definition={"phases": [phase]})
    assert err.value.code == code
    assert err.value.details.get("phase") == "x"
