"""Storing a poll's requests together: same outcome as one by one, in a fixed number of statements."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orchestrator.errors import OrchestrationError
from orchestrator.models import Batch, BatchItem, OutboxEvent, PhaseRun, StateTransition
from orchestrator.services.batches import BatchCreateResult, batch_create
from orchestrator.services.intake import Intake, batch_create_many
from tests.support.factories import batch_request, essay_items

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline", "held_batches")]


def intake(**overrides: object) -> Intake:
    event_id = str(overrides.pop("event_id", uuid.uuid4()))
    return Intake(request=batch_request(**overrides), actor=f"kafka:{event_id}", event_id=event_id)


def created(results: list[BatchCreateResult | OrchestrationError]) -> list[bool]:
    return [r.created if isinstance(r, BatchCreateResult) else False for r in results]


def test_many_requests_are_stored_like_one_by_one() -> None:
    intakes = [intake(items=essay_items(3 + i)) for i in range(5)]
    results = batch_create_many(intakes)

    assert created(results) == [True] * 5
    reference = batch_create(request=batch_request(items=essay_items(3)), actor="test").batch
    for result, given in zip(results, intakes, strict=True):
        assert isinstance(result, BatchCreateResult)
        batch = Batch.objects.get(id=result.batch.id)
        assert (batch.state, batch.external_id, batch.items_total) == (
            "accepted",
            given.request.external_id,
            len(given.request.items),
        )
        assert list(BatchItem.objects.filter(batch=batch).order_by("seq").values_list("key", flat=True)) == [
            i["key"] for i in given.request.items
        ]
        assert list(batch.phases.order_by("position").values_list("name", flat=True)) == list(
            reference.phases.order_by("position").values_list("name", flat=True)
        )
        assert list(
            StateTransition.objects.filter(batch=batch).order_by("seq").values_list("to_state", "actor")
        ) == [
            ("received", given.actor),
            ("accepted", "orchestrator"),
        ]
        assert OutboxEvent.objects.filter(batch=batch, event_type="batch.accepted").count() == 1


def test_the_statements_do_not_grow_with_the_number_of_requests() -> None:
    def statements(n: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert created(batch_create_many([intake() for _ in range(n)])) == [True] * n
        return len(queries)

    statements(1)  # warm the caches (pipeline plan, tenant)
    assert statements(50) == statements(2)


def test_repeats_create_nothing_new_within_the_list_and_across_calls() -> None:
    first = intake(external_id="dup-1")
    same_event = Intake(request=first.request, actor=first.actor, event_id=first.event_id)
    same_external_id = intake(external_id="dup-1")
    results = batch_create_many([first, same_event, same_external_id])
    assert created(results) == [True, False, False]
    assert {r.batch.id for r in results if isinstance(r, BatchCreateResult)} == {results[0].batch.id}  # type: ignore[union-attr]

    again = batch_create_many(
        [intake(external_id="dup-1"), Intake(first.request, first.actor, first.event_id)]
    )
    assert created(again) == [False, False]
    assert Batch.objects.filter(external_id="dup-1").count() == 1
    assert OutboxEvent.objects.filter(event_type="batch.accepted").count() == 1


def test_a_request_that_can_never_succeed_fails_alone() -> None:
    results = batch_create_many(
        [intake(), intake(pipeline="no-such-pipeline"), intake(items=[]), intake(external_id="still-stored")]
    )

    assert isinstance(results[1], OrchestrationError) and results[1].code == "unknown_pipeline"
    assert isinstance(results[2], OrchestrationError) and results[2].code == "no_items"
    assert created(results) == [True, False, False, True]
    assert Batch.objects.filter(external_id="still-stored").exists()
    assert PhaseRun.objects.count() == 2 * PhaseRun.objects.filter(batch=results[0].batch).count()  # type: ignore[union-attr]
