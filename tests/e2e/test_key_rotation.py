"""Key rotation while the service runs (docs/encryption.md, "Rotating a key"): a 10,000-item
batch taken in under the old key runs on a worker that has the new key first; rotating
during the run loses nothing, and afterwards the newest key alone opens everything."""

from __future__ import annotations

import signal
import socket
import uuid

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from orchestrator import payloads
from orchestrator.kafka.clients import ensure_topics
from orchestrator.key_rotation import COLUMNS
from orchestrator.models import AuditRecord, Batch, ItemResult
from tests.conftest import LOG_DIR
from tests.e2e.test_structured_logs import start
from tests.support.factories import request_message
from tests.support.kafka import send_requests
from tests.support.processes import stop
from tests.support.waiting import wait_for, wait_for_terminal, worker_answers

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline", "kafka_topics")]

ITEMS = 10_000


def text_of(i: int) -> str:
    return f"Students write clearly every day {i}"


def stored_values() -> dict[str, list[str]]:
    """Every non-null stored value of every encrypted column, raw."""
    found: dict[str, list[str]] = {}
    with connection.cursor() as cursor:
        for column in COLUMNS:
            cursor.execute(f"SELECT {column.column} FROM {column.table} WHERE {column.column} IS NOT NULL")  # noqa: S608
            found[column.label] = [value for (value,) in cursor.fetchall()]
    return found


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_rotating_while_a_10000_item_batch_runs_loses_nothing_and_leaves_no_old_key() -> None:
    old = list(settings.BOS_ENCRYPTION_KEYS)
    new = Fernet.generate_key().decode()
    run = uuid.uuid4().hex[:6]
    group = f"rotate-{run}"
    topic = f"{settings.BOS_TOPIC_REQUESTS}.{group}"
    ensure_topics([topic])
    logs = LOG_DIR / group
    logs.mkdir(parents=True, exist_ok=True)
    node = f"{group}@{socket.gethostname()}"
    # Queues of their own: only this worker runs this batch. The consumer still has the old
    # key alone (it took the batch in before the deploy); the worker has the new key first.
    prefix = {"BOS_QUEUE_PREFIX": f"{group}."}
    consumer = start(
        ["manage.py", "consume_batches", "--topic", topic, "--group", group, "--session-timeout-ms", "6000"],
        logs,
        "consumer",
        BOS_ENCRYPTION_KEYS=",".join(old),
        **prefix,
    )
    celery = ["-m", "celery", "-A", "bos_project", "--quiet", "worker", "-c", "2", "-n", node]
    worker = start(
        [*celery, "--without-gossip", "--without-mingle"],
        logs,
        "worker",
        BOS_ENCRYPTION_KEYS=",".join([new, *old]),
        **prefix,
    )
    message = request_message(
        external_id=f"rotate-{run}",
        items=[{"key": f"e{i}", "payload": {"text": text_of(i)}} for i in range(ITEMS)],
        metadata={"course": "EN101"},
    )
    # This process is deployed with the new list too (docs/encryption.md, step 2).
    deployed = override_settings(BOS_ENCRYPTION_KEYS=[new, *old])
    deployed.enable()
    try:
        wait_for(lambda: worker_answers(node), timeout=60, what="the worker")
        send_requests([message], topic=topic)
        batch = wait_for(
            lambda: Batch.objects.filter(external_id=f"rotate-{run}").first(), timeout=120, what="the batch"
        )
        wait_for(
            lambda: ItemResult.objects.filter(item__batch=batch).exists(),
            timeout=180,
            interval=0.2,
            what="the batch's first results",
        )
        assert not Batch.objects.get(id=batch.id).is_terminal  # rotating while it runs
        call_command("bos_rotate_keys", "--execute", "--batch-size", "1000")
        finished = wait_for_terminal(batch.id, timeout=600)
    finally:
        deployed.disable()
        for proc in (consumer, worker):
            proc.send_signal(signal.SIGTERM)
        for proc in (consumer, worker):
            stop(proc)  # type: ignore[arg-type]

    assert finished.state == "completed"
    assert (finished.items_succeeded, finished.items_failed) == (ITEMS, 0)
    record = AuditRecord.objects.filter(action="keys.rotate").latest("id")
    assert record.outcome == "ok" and record.detail["BatchItem.payload"]["rewritten"] > 0
    with override_settings(BOS_ENCRYPTION_KEYS=[new]):
        # Nothing is left under the old key: the newest key alone opens every value.
        for label, values in stored_values().items():
            assert all(payloads.under_newest_key(v) for v in values), label
        with connection.cursor() as cursor:
            cursor.execute("SELECT key, payload FROM orchestrator_batchitem WHERE batch_id = %s", [batch.id])
            stored = {key: payloads.decrypt(value) for key, value in cursor.fetchall()}
        assert stored == {f"e{i}": {"text": text_of(i)} for i in range(ITEMS)}
        assert Batch.objects.get(id=batch.id).report["aggregate"]["essays_analysed"] == ITEMS
