"""A secret in a handler's error never reaches the database, an event or a log line, and
viewers get payloads masked (docs/masking.md): the e-mail and card number an item's
handler puts in its exception are stored masked on the item, its result and the error's
fingerprint; a per-batch phase's credential is masked on the phase, the batch and the
`batch.phase_failed` event; the API shows a viewer masked payloads and everybody masked
errors; the JSON log line of the failure is masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from orchestrator.analytics import analyze_errors
from orchestrator.models import (
    Batch,
    BatchItem,
    ErrorFingerprint,
    ItemResult,
    Membership,
    OutboxEvent,
    PhaseRun,
)
from orchestrator.observability.logging import renderer_processors, shared_processors
from orchestrator.services.batches import batch_create
from orchestrator.services.phases import phase_batch_run, phase_chunk_run
from orchestrator.states import PhaseState
from tests.support.factories import TenantFactory, batch_request, publish_test_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db", "held_batches")]

EMAIL, CARD, TOKEN = "ann.lee@example.com", "4111 1111 1111 1111", "c2VjcmV0LXRva2VuLXZhbHVl"
SECRETS = (EMAIL, CARD, "4111111111111111", TOKEN)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What BOS's JSON log stream would print (the project's formatter), for the execution logger."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=renderer_processors("json"), foreign_pre_chain=shared_processors()
        )
    )
    logger = logging.getLogger("orchestrator.services.execution")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def run_phase(batch: Batch, name: str) -> PhaseRun:
    """Run a phase in this process, as a worker would (no worker here)."""
    phase = PhaseRun.objects.get(batch=batch, name=name)
    PhaseRun.objects.filter(id=phase.id).update(state=PhaseState.RUNNING, started_at=timezone.now())
    Batch.objects.filter(id=batch.id).update(state="running")
    if phase.mode == "per_item":
        phase_chunk_run(phase_run_id=phase.id, start=0, end=phase.items_total)
    else:
        phase_batch_run(phase_run_id=phase.id)
    return PhaseRun.objects.get(id=phase.id)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def member(role: str) -> APIClient:
    """An API client, and an admin login, of a member of acme with `role`."""
    user, _ = get_user_model().objects.get_or_create(username=f"{role}-user", defaults={"is_staff": True})
    Membership.objects.get_or_create(user=user, tenant=TenantFactory(slug="acme"), defaults={"role": role})
    client = APIClient()
    client.force_authenticate(user)
    client.force_login(user)
    return client


def test_an_item_error_is_stored_masked_and_viewers_see_masked_payloads(json_log: io.StringIO) -> None:
    publish_test_pipeline("leaky", [{"name": "work", "handler": "test.leak", "mode": "per_item"}])
    payload = {"email": EMAIL, "card": CARD, "text": f"write to {EMAIL}"}
    batch = batch_create(
        request=batch_request(pipeline="leaky", items=[{"key": "k1", "payload": payload}]), actor="test"
    ).batch

    run_phase(batch, "work")

    item = BatchItem.objects.get(batch=batch)
    result = ItemResult.objects.get(item=item)
    masked = "ValueError: customer a***@example.com paid with ****1111: refused"
    assert (item.state, item.last_error, result.error) == ("failed", masked, masked)
    analyze_errors()
    fingerprint = ErrorFingerprint.objects.get(tenant__slug="acme", phase="work")
    assert fingerprint.sample == masked
    assert_no_secret(fingerprint.message)
    # The handler's own log line, as the JSON stream writes it.
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    failure = next(line for line in lines if "failed in work" in line["message"])
    assert "a***@example.com" in failure["message"] and "****1111" in failure["message"]
    assert_no_secret(json_log.getvalue())

    viewer = member("viewer").get(f"/api/v1/batches/{batch.id}/items/").json()["results"][0]
    assert viewer["last_error"] == masked
    assert viewer["payload"] == {"email": "[masked]", "card": "****1111", "text": "write to a***@example.com"}
    operator = member("operator").get(f"/api/v1/batches/{batch.id}/items/").json()["results"][0]
    assert (operator["payload"], operator["last_error"]) == (payload, masked)


def test_a_phase_error_is_masked_on_the_phase_the_batch_and_the_event() -> None:
    publish_test_pipeline(
        "leaky-batch", [{"name": "call", "handler": "test.leak_batch", "mode": "per_batch"}]
    )
    metadata = {"token": TOKEN, "email": EMAIL}
    batch = batch_create(request=batch_request(pipeline="leaky-batch", metadata=metadata), actor="test").batch

    phase = run_phase(batch, "call")

    assert phase.state == "failed"
    assert "Authorization: Bearer [masked] for a***@example.com" in phase.error
    assert_no_secret(phase.error)
    assert_no_secret(Batch.objects.get(id=batch.id).error)
    event = OutboxEvent.objects.get(batch=batch, event_type="batch.phase_failed")
    assert "Bearer [masked]" in event.envelope["data"]["error"]
    assert_no_secret(json.dumps(event.envelope))
    shown = member("viewer").get(f"/api/v1/batches/{batch.id}/").json()
    assert shown["metadata"] == {"token": "[masked]", "email": "[masked]"}
    assert_no_secret(json.dumps(shown))

    # The admin: the batch's and the phase's pages mask metadata for a viewer, errors for all.
    pages = (
        f"/admin/orchestrator/batch/{batch.id}/change/",
        f"/admin/orchestrator/phaserun/{phase.id}/change/",
    )
    for page in pages:
        response = member("viewer").get(page)
        assert response.status_code == 200
        assert_no_secret(response.content.decode())
    operator_page = member("operator").get(pages[0]).content.decode()
    assert TOKEN in operator_page  # the metadata, in clear for an operator
    assert "Bearer [masked]" in member("operator").get(pages[1]).content.decode()
