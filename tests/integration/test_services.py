"""Service-level guarantees: idempotent effects and constant round trips per chunk and phase."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orchestrator.models import Batch, ChunkRun, ItemResult, PhaseRun
from orchestrator.pipelines import chunk_bounds
from orchestrator.services.batches import batch_cancel, batch_create
from orchestrator.services.phases import phase_chunk_run, phase_complete
from orchestrator.states import PhaseState
from tests.support.factories import batch_request, essay_items

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline", "held_batches")]


def running_phase(batch: Batch, name: str) -> PhaseRun:
    """Mark a phase running by hand, as the dispatcher would (no worker here)."""
    phase = PhaseRun.objects.get(batch=batch, name=name)
    PhaseRun.objects.filter(id=phase.id).update(state=PhaseState.RUNNING, started_at=timezone.now())
    Batch.objects.filter(id=batch.id).update(state="running")
    return phase


def new_batch(n: int, **kwargs: Any) -> Batch:
    return batch_create(request=batch_request(items=essay_items(n, **kwargs)), actor="test").batch


def test_a_chunk_delivered_twice_records_its_results_once() -> None:
    phase = running_phase(new_batch(10, bad={2}), "validate")
    first = phase_chunk_run(phase_run_id=phase.id, start=0, end=10)
    second = phase_chunk_run(phase_run_id=phase.id, start=0, end=10)

    assert first == {"succeeded": 9, "failed": 1, "skipped": 0}
    assert second.get("recorded") == 1  # found before its handler ran
    assert ItemResult.objects.filter(phase_run=phase).count() == 10
    phase.refresh_from_db()
    assert (phase.chunks_done, phase.items_done, phase.items_failed) == (1, 10, 1)
    assert ChunkRun.objects.filter(phase_run=phase).count() == 1


def test_chunk_round_trips_do_not_grow_with_items() -> None:
    counts = []
    for n in (5, 200):
        phase = running_phase(new_batch(n, bad={1}), "validate")
        with CaptureQueriesContext(connection) as ctx:
            phase_chunk_run(phase_run_id=phase.id, start=0, end=n)
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]
    assert counts[1] <= 8


def run_all_chunks(phase: PhaseRun) -> None:
    phase.refresh_from_db()
    for start, end in chunk_bounds(phase.items_total, phase.chunk_size):
        phase_chunk_run(phase_run_id=phase.id, start=start, end=end)


def test_phase_completion_round_trips_do_not_grow_with_items(django_assert_max_num_queries: Any) -> None:
    for n in (5, 500):
        batch = new_batch(n)
        phase = running_phase(batch, "validate")
        run_all_chunks(phase)
        with django_assert_max_num_queries(14):
            phase_complete(phase_run_id=phase.id)
        phase.refresh_from_db()
        assert phase.state == "succeeded"


def test_completion_delivered_twice_does_nothing_the_second_time() -> None:
    batch = new_batch(3)
    phase = running_phase(batch, "validate")
    run_all_chunks(phase)
    phase_complete(phase_run_id=phase.id)
    events = batch.outbox.count()
    phase_complete(phase_run_id=phase.id)
    assert batch.outbox.count() == events
    started = PhaseRun.objects.filter(batch=batch, state="running").values_list("name", flat=True)
    assert sorted(started) == ["spellcheck", "text_stats"]


def test_an_early_callback_does_not_complete_a_phase_with_chunks_missing() -> None:
    batch = new_batch(250)
    phase = running_phase(batch, "validate")
    phase_chunk_run(phase_run_id=phase.id, start=0, end=100)
    phase_complete(phase_run_id=phase.id)
    assert PhaseRun.objects.get(id=phase.id).state == "running"


def test_chunks_of_a_cancelled_batch_record_nothing() -> None:
    batch = new_batch(4)
    phase = running_phase(batch, "validate")
    batch_cancel(batch_id=batch.id, actor="test")
    assert phase_chunk_run(phase_run_id=phase.id, start=0, end=4)["stale"] == 1
    assert not ItemResult.objects.filter(phase_run=phase).exists()


def test_progress_counts_a_skipped_phase_as_done() -> None:
    from orchestrator.selectors import batch_progress

    batch = new_batch(4)
    PhaseRun.objects.filter(batch=batch).update(state="succeeded", items_done=F("items_total"))
    PhaseRun.objects.filter(batch=batch, name="grading").update(state="skipped", items_done=0)
    assert batch_progress(batch)["fraction"] == 1.0
