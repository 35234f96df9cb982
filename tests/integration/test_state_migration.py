"""`bos_migrate_states`: moving stored batches and phases from states that changed.

The state machine of this code is fixed, so the tests store batches as an older release
would have: in states it no longer knows ("queued", since renamed "accepted"; "halted",
since retired).
"""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from orchestrator.models import Batch, PhaseRun, StateTransition
from orchestrator.services.batches import batch_create, batch_start
from orchestrator.services.state_migration import (
    MIGRATION,
    StateMigrationError,
    check_mapping,
    effective_path,
    execute_migration,
    parse_mapping,
    plan_migration,
    validate_histories,
)
from tests.support.factories import batch_request, essay_items

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline", "held_batches")]


def new_batch() -> Batch:
    return batch_create(request=batch_request(items=essay_items(3)), actor="test").batch


def queued_batch() -> Batch:
    """An accepted batch as stored when `accepted` was called `queued`."""
    batch = new_batch()
    StateTransition.objects.filter(batch=batch, seq=2).update(to_state="queued")
    Batch.objects.filter(id=batch.id).update(state="queued")
    return Batch.objects.get(id=batch.id)


def halted_batch() -> Batch:
    """A running batch that an older release had moved to `halted`, a state since retired."""
    batch = new_batch()
    batch_start(batch_id=batch.id)
    batch = Batch.objects.get(id=batch.id)
    StateTransition.objects.create(
        batch=batch,
        tenant=batch.tenant,
        seq=4,
        from_state="running",
        to_state="halted",
        actor="user:ops",
        at=timezone.now(),
    )
    Batch.objects.filter(id=batch.id).update(state="halted", transitions_count=4)
    return Batch.objects.get(id=batch.id)


def run(*args: str) -> str:
    out = StringIO()
    call_command("bos_migrate_states", *args, stdout=out)
    return out.getvalue()


def snapshot_of_db() -> Any:
    return (
        sorted(Batch.objects.values_list("id", "state", "transitions_count", "updated_at")),
        StateTransition.objects.count(),
        sorted(PhaseRun.objects.values_list("id", "state")),
    )


def test_a_dry_run_changes_nothing_and_reports_counts() -> None:
    queued = [queued_batch() for _ in range(3)]
    halted = halted_batch()
    new_batch()  # accepted: not concerned
    before = snapshot_of_db()

    out = run("--map", "queued=accepted", "--map", "halted=failed", "--sample", "2")

    assert snapshot_of_db() == before
    assert "4 batch(es) would move (dry run)" in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    assert "accepted" in lines["queued"] and "│ 3 " in lines["queued"]
    assert "failed" in lines["halted"] and "│ 1 " in lines["halted"]
    assert str(queued[0].id) in out and str(queued[1].id) in out and str(queued[2].id) not in out  # sample 2
    assert str(halted.id) in out
    assert "add --execute" in out

    plan = plan_migration({"queued": "accepted", "paused": "running"})
    assert plan.counts == {"queued": 3, "paused": 0} and plan.total == 3


def test_execute_moves_batches_with_one_migration_transition_each() -> None:
    queued = [queued_batch() for _ in range(3)]
    halted = halted_batch()
    other = new_batch()

    out = run(
        "--map",
        "queued=accepted",
        "--map",
        "halted=failed",
        "--execute",
        "--reason",
        "rename (ADR-12)",
        "--page",
        "2",
    )

    assert "moved 4 batch(es)" in out and "appended 4 transition(s)" in out
    for before in [*queued, halted]:
        batch = Batch.objects.get(id=before.id)
        assert batch.transitions_count == before.transitions_count + 1
        last = StateTransition.objects.filter(batch=batch).order_by("-seq").first()
        assert last is not None
        assert (last.seq, last.from_state, last.actor, last.reason) == (
            batch.transitions_count,
            before.state,
            MIGRATION,
            "rename (ADR-12)",
        )
        assert last.to_state == batch.state
        assert StateTransition.objects.filter(batch=batch, actor=MIGRATION).count() == 1
    assert {Batch.objects.get(id=b.id).state for b in queued} == {"accepted"}
    failed = Batch.objects.get(id=halted.id)
    assert failed.state == "failed" and failed.finished_at is not None  # failed is terminal
    assert Batch.objects.get(id=other.id).transitions_count == other.transitions_count
    assert StateTransition.objects.filter(actor=MIGRATION).count() == 4


def test_running_it_again_changes_nothing() -> None:
    queued_batch()
    run("--map", "queued=accepted", "--execute")
    before = snapshot_of_db()

    out = run("--map", "queued=accepted", "--execute")

    assert "nothing to change" in out
    assert snapshot_of_db() == before
    assert execute_migration({"queued": "accepted"}).total == 0


def test_an_unknown_target_state_is_refused_naming_it() -> None:
    queued_batch()
    before = snapshot_of_db()
    with pytest.raises(CommandError, match="unknown batch state 'acepted'"):
        run("--map", "queued=acepted", "--execute")
    with pytest.raises(CommandError, match="unknown phase state 'accepted'"):
        run("--state-field", "phase", "--map", "waiting=accepted")
    assert snapshot_of_db() == before

    with pytest.raises(StateMigrationError, match="expected OLD=NEW"):
        parse_mapping(["queued"])
    with pytest.raises(StateMigrationError, match="mapped twice"):
        parse_mapping(["queued=accepted", "queued=running"])
    with pytest.raises(StateMigrationError, match="both a source and a target"):
        check_mapping({"queued": "accepted", "accepted": "running"})
    with pytest.raises(StateMigrationError, match="to itself"):
        check_mapping({"running": "running"})
    with pytest.raises(CommandError, match="--map"):
        run()


def test_validate_flags_histories_that_are_not_allowed_paths() -> None:
    queued = queued_batch()
    halted = halted_batch()
    good = new_batch()

    # Before the migration: old names are not states of the current machine.
    report = validate_histories()
    flagged = {p.batch_id: p.detail for p in report.problems}
    assert set(flagged) == {queued.id, halted.id}
    assert "queued" in flagged[queued.id] and "halted" in flagged[halted.id]
    # A dry run with --validate reads the histories as they would be after the migration.
    out = run("--map", "queued=accepted", "--map", "halted=rolled_back", "--validate")
    assert "1 of 3 batch histories are not allowed paths (as after" in out

    run("--map", "queued=accepted", "--map", "halted=rolled_back", "--execute")
    out = run("--validate")

    # queued → accepted is a rename: received → accepted again, an allowed path.
    # halted → rolled_back leaves running → rolled_back, which the table does not allow.
    assert str(halted.id) in out and str(queued.id) not in out and str(good.id) not in out
    assert "running → rolled_back is not an allowed transition" in out
    report = validate_histories()
    assert [p.batch_id for p in report.problems] == [halted.id]
    assert report.migrated == 2 and report.batches == 3
    assert report.problems[0].path == ("received", "accepted", "running", "rolled_back")

    # A history that ends elsewhere than its batch is flagged too.
    Batch.objects.filter(id=good.id).update(state="running")
    assert {p.batch_id for p in validate_histories().problems} == {halted.id, good.id}


def test_the_effective_path_reads_migrations_as_renames() -> None:
    history = [
        ("", "received", "t"),
        ("received", "queued", "t"),
        ("queued", "accepted", MIGRATION),
        ("accepted", "running", "t"),
    ]
    assert effective_path(history) == (["received", "accepted", "running"], 1)
    assert effective_path(history[:2], {"queued": "accepted"}) == (["received", "accepted"], 0)


def test_phase_migration_updates_phase_states_without_history() -> None:
    a, b = new_batch(), new_batch()
    PhaseRun.objects.filter(batch=a, name__in=["validate", "spellcheck"]).update(state="waiting")
    PhaseRun.objects.filter(batch=b, name="validate").update(state="waiting")
    transitions = StateTransition.objects.count()

    out = run("--state-field", "phase", "--map", "waiting=pending")
    assert "3 phase(s) would move (dry run)" in out and f"{a.id}/validate" in out
    assert PhaseRun.objects.filter(state="waiting").count() == 3

    out = run("--state-field", "phase", "--map", "waiting=pending", "--execute", "--page", "2")
    assert "moved 3 phase(s)" in out
    assert PhaseRun.objects.filter(state="waiting").count() == 0
    assert set(PhaseRun.objects.filter(batch__in=[a, b]).values_list("state", flat=True)) == {"pending"}
    assert StateTransition.objects.count() == transitions
    assert "nothing to change" in run("--state-field", "phase", "--map", "waiting=pending", "--execute")


def test_a_migration_can_be_limited_to_one_pipeline() -> None:
    queued = queued_batch()
    assert plan_migration({"queued": "accepted"}, pipeline="other").total == 0
    assert execute_migration({"queued": "accepted"}, pipeline="other").total == 0
    assert execute_migration({"queued": "accepted"}, pipeline="essay-analysis").total == 1
    assert Batch.objects.get(id=queued.id).state == "accepted"
