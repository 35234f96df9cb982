"""A broker that refuses the start of a stored batch fails nobody: the reconciler starts it."""

from __future__ import annotations

import pytest
from kombu.exceptions import OperationalError
from rest_framework.test import APIClient

from orchestrator.models import Batch
from orchestrator.services.reconcile import reconcile
from orchestrator.services.users import api_user_grant
from tests.support.clock import after_lease
from tests.support.factories import essay_items
from tests.support.sending import BrokenSender

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline")]


@pytest.mark.django_db(transaction=True)
def test_a_rest_batch_whose_start_the_broker_refused_is_stored_and_started_by_the_reconciler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = BrokenSender(OperationalError("[Errno 111] Connection refused"))
    monkeypatch.setattr("orchestrator.workflows.SENDER", broker)
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {api_user_grant(username='op', tenant='acme', role='operator').key}"
    )
    body = {
        "tenant": "acme",
        "external_id": "start-lost",
        "pipeline": "essay-analysis",
        "items": essay_items(3),
    }

    response = client.post("/api/v1/batches/", body, format="json")

    assert response.status_code == 201, response.content
    batch = Batch.objects.get(external_id="start-lost")
    assert batch.state == "accepted"
    sent: list[str] = []
    monkeypatch.setattr(
        "orchestrator.services.reconcile.enqueue_orchestration",
        lambda task, args, batch, **kw: sent.append(args[0]),
    )
    assert reconcile(now=after_lease(), queue_depth=lambda queue: 0).started == [str(batch.id)]
    assert sent == [str(batch.id)]
