"""Cancelling a batch with chunks in flight on a real worker: nothing is recorded after."""

from __future__ import annotations

import time
import uuid

import pytest

from orchestrator.models import Batch, ChunkRun, ItemResult, PhaseRun
from orchestrator.services.batches import batch_cancel, batch_create
from tests.support.factories import batch_request, publish_test_pipeline
from tests.support.handlers import handler_calls
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("celery_worker", "transactional_db")]


def test_a_cancel_with_50_chunks_in_flight_records_no_item_result_after_it() -> None:
    publish_test_pipeline(
        "cancelled-in-flight",
        [
            {
                "name": "work",
                "handler": "test.counted",
                "mode": "per_item",
                "chunk_size": 10,
                "options": {"seconds": 0.05},
            }
        ],
    )
    run = uuid.uuid4().hex
    items = [{"key": f"i{n}", "payload": {}} for n in range(500)]
    batch = batch_create(
        request=batch_request(pipeline="cancelled-in-flight", items=items, metadata={"run": run}),
        actor="test",
    ).batch
    wait_for(lambda: ChunkRun.objects.filter(phase_run__batch=batch).count() >= 2, timeout=60, what="work")

    batch_cancel(batch_id=batch.id, actor="user:op", reason="test")
    at_cancel = ItemResult.objects.filter(phase_run__batch=batch).count()
    calls_at_cancel = sum(handler_calls(run).values())
    assert at_cancel < 500

    # Every chunk task drains: those running stop at their next item, the rest do nothing.
    def drained() -> bool:
        before = sum(handler_calls(run).values())
        time.sleep(2)
        return sum(handler_calls(run).values()) == before

    wait_for(drained, timeout=120, what="the chunk tasks to drain")
    assert ItemResult.objects.filter(phase_run__batch=batch).count() == at_cancel
    assert Batch.objects.get(id=batch.id).state == "cancelled"
    assert PhaseRun.objects.get(batch=batch, name="work").state == "cancelled"
    # Only the chunks running at the cancel went on (the test worker's 4 processes, 10 items
    # each at most); every chunk taken up after it found its phase cancelled and ran nothing.
    assert sum(handler_calls(run).values()) - calls_at_cancel <= 4 * 10
