"""State-based routing on a real worker: a priority batch has a queue of its own and
overtakes a backlog of ordinary ones."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.signals import before_task_publish
from django.conf import settings

from orchestrator.models import Batch
from orchestrator.services.batches import batch_create
from tests.support.factories import batch_request, essay_items, publish_test_pipeline
from tests.support.waiting import wait_for_terminal

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("celery_worker", "essay_pipeline")]


@pytest.fixture
def published() -> Iterator[list[tuple[str, str]]]:
    """(task name, queue) of every task this process sends."""
    sent: list[tuple[str, str]] = []

    def record(
        sender: str | None = None, headers: dict[str, Any] | None = None, routing_key: str = "", **kw: Any
    ) -> None:
        sent.append((str(sender), routing_key))

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


def test_tasks_of_a_priority_batch_go_to_the_priority_queue(published: list[tuple[str, str]]) -> None:
    priority_queue = next(q for q in settings.BOS_QUEUES if q.endswith("bos.priority"))
    batch = batch_create(request=batch_request(items=essay_items(30), priority=9), actor="test").batch
    assert wait_for_terminal(batch.id).state == "completed"
    start = [queue for name, queue in published if name.endswith("batch_start_task")]
    assert start == [priority_queue]

    published.clear()
    ordinary = batch_create(request=batch_request(items=essay_items(30), priority=5), actor="test").batch
    wait_for_terminal(ordinary.id)
    assert published and all(queue != priority_queue for _, queue in published)
    assert {queue for _, queue in published} <= set(settings.BOS_QUEUES)


def test_a_priority_batch_overtakes_a_backlog_of_ordinary_ones() -> None:
    publish_test_pipeline(
        "crawl",
        [
            {
                "name": "wait",
                "handler": "test.slow",
                "mode": "per_item",
                "chunk_size": 1,
                "options": {"seconds": 0.2},
            }
        ],
    )
    items = [{"key": f"i{n}", "payload": {}} for n in range(16)]
    backlog = [
        batch_create(request=batch_request(pipeline="crawl", items=items, priority=3), actor="test").batch
        for _ in range(6)
    ]
    urgent = batch_create(
        request=batch_request(pipeline="crawl", items=items, priority=9), actor="test"
    ).batch

    urgent = wait_for_terminal(urgent.id, timeout=120)
    finished = [wait_for_terminal(b.id, timeout=120) for b in backlog]
    assert urgent.state == "completed"
    later = [b for b in finished if b.finished_at > urgent.finished_at]
    # Submitted last, behind 96 queued tasks, it ends before most of the batches ahead of it.
    assert len(later) >= 4, [(b.created_at, b.finished_at) for b in finished]
    assert Batch.objects.filter(id__in=[b.id for b in backlog], state="completed").count() == 6
