"""Retention purges exactly what is due and nothing else: payloads, results, phase outputs
and reports of batches past their tenant's retention (a tenant's own value, or the
default), never a running batch or one inside its retention; the batch, its history, its
counters and the audit trail stay; the dry run counts what the purge then removes; the
audit log is purged by its own policy and its trigger still refuses everything else."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from orchestrator.config import reload, store
from orchestrator.errors import Conflict
from orchestrator.models import AuditRecord, Batch, BatchItem, ItemResult, PhaseRun, StateTransition, Tenant
from orchestrator.services.batches import batch_retry
from orchestrator.services.retention import plan, purge
from tasks.retention import retention_purge_task
from tests.support.clock import days_later
from tests.support.factories import BatchFactory, MembershipFactory, TenantFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db")]

DEFAULT_DAYS = 30  # BOS_RETENTION_DAYS's default
GLOBEX_DAYS = 7
ITEMS = 3


@pytest.fixture(autouse=True)
def fresh_config() -> Iterator[None]:
    store.client().delete(store.REDIS_KEY)
    reload.reset()
    yield
    store.client().delete(store.REDIS_KEY)
    reload.reset()


@dataclass
class Made:
    batch: Batch
    transitions: int


def make_batch(tenant: Tenant, *, state: str, finished_at: datetime | None) -> Made:
    """A batch with items (payloads), a per-item phase with results, a per-batch phase with
    an output, a report and a history, as a finished run leaves them."""
    batch = BatchFactory(
        tenant=tenant,
        state=state,
        finished_at=finished_at,
        items_total=ITEMS,
        items_succeeded=ITEMS - 1,
        items_failed=1,
        report={"summary": {"misspellings": ["recieved"]}},
        metadata={"source": "retention-test"},
    )
    work = PhaseRun.objects.create(
        batch=batch,
        tenant=tenant,
        name="work",
        handler="test.echo",
        mode="per_item",
        position=0,
        state="succeeded",
        items_total=ITEMS,
        items_done=ITEMS,
        items_failed=1,
    )
    PhaseRun.objects.create(
        batch=batch,
        tenant=tenant,
        name="report",
        handler="test.count",
        mode="per_batch",
        position=1,
        state="succeeded",
        output={"count": ITEMS},
    )
    for seq in range(ITEMS):
        failed = seq == ITEMS - 1
        item = BatchItem.objects.create(
            batch=batch,
            tenant=tenant,
            seq=seq,
            key=f"k{seq}",
            payload={"text": f"essay {seq}"},
            state="failed" if failed else "succeeded",
            last_error="ValueError: bad" if failed else "",
        )
        ItemResult.objects.create(
            item=item,
            phase_run=work,
            ok=not failed,
            output=None if failed else {"words": seq},
            error="ValueError: bad" if failed else "",
        )
    history = [("", "received"), ("received", "accepted"), ("accepted", "running")]
    if finished_at is not None:
        history.append(("running", state))
    StateTransition.objects.bulk_create(
        StateTransition(
            batch=batch,
            tenant=tenant,
            seq=i + 1,
            from_state=a,
            to_state=b,
            actor="test",
            at=finished_at or batch.created_at,
        )
        for i, (a, b) in enumerate(history)
    )
    return Made(batch, len(history))


def assert_purged(made: Made, now: datetime) -> None:
    batch = Batch.objects.get(id=made.batch.id)
    assert batch.purged_at == now
    assert batch.report is None
    assert not BatchItem.objects.filter(batch=batch, payload__isnull=False).exists()
    assert not ItemResult.objects.filter(item__batch=batch).exists()
    assert not PhaseRun.objects.filter(batch=batch, output__isnull=False).exists()
    assert_kept_facts(made)


def assert_intact(made: Made) -> None:
    batch = Batch.objects.get(id=made.batch.id)
    assert batch.purged_at is None
    assert batch.report == {"summary": {"misspellings": ["recieved"]}}
    assert sorted(BatchItem.objects.filter(batch=batch).values_list("payload", flat=True), key=str) == [
        {"text": f"essay {i}"} for i in range(ITEMS)
    ]
    assert ItemResult.objects.filter(item__batch=batch).count() == ITEMS
    assert PhaseRun.objects.get(batch=batch, name="report").output == {"count": ITEMS}
    assert_kept_facts(made)


def assert_kept_facts(made: Made) -> None:
    """What a purge never touches: the batch, its counters, its items' outcomes, its history."""
    batch = Batch.objects.get(id=made.batch.id)
    assert (batch.state, batch.finished_at) == (made.batch.state, made.batch.finished_at)
    assert (batch.items_total, batch.items_succeeded, batch.items_failed) == (ITEMS, ITEMS - 1, 1)
    assert batch.metadata == {"source": "retention-test"}
    work = PhaseRun.objects.get(batch=batch, name="work")
    assert (work.items_total, work.items_done, work.items_failed) == (ITEMS, ITEMS, 1)
    assert sorted(BatchItem.objects.filter(batch=batch).values_list("state", "last_error")) == [
        ("failed", "ValueError: bad"),
        ("succeeded", ""),
        ("succeeded", ""),
    ]
    assert StateTransition.objects.filter(batch=batch).count() == made.transitions


@pytest.fixture
def tenants() -> dict[str, Tenant]:
    made = {slug: TenantFactory(slug=slug) for slug in ("acme", "globex", "initech")}
    store.config_set(changes={"retention_days": GLOBEX_DAYS}, actor="test", reason="short", tenant="globex")
    store.config_set(changes={"retention_days": 0}, actor="test", reason="kept forever", tenant="initech")
    return made


def test_the_purge_removes_exactly_what_is_due_and_nothing_else(tenants: dict[str, Tenant]) -> None:
    now = days_later(DEFAULT_DAYS)
    acme_cutoff, globex_cutoff = now - timedelta(days=DEFAULT_DAYS), now - timedelta(days=GLOBEX_DAYS)
    second = timedelta(seconds=1)
    acme_due = make_batch(tenants["acme"], state="completed", finished_at=acme_cutoff - second)
    acme_failed_due = make_batch(tenants["acme"], state="failed", finished_at=acme_cutoff - second)
    acme_kept = make_batch(tenants["acme"], state="completed_with_errors", finished_at=acme_cutoff + second)
    acme_running = make_batch(tenants["acme"], state="running", finished_at=None)
    # globex keeps 7 days: a batch acme would keep is due there.
    globex_due = make_batch(tenants["globex"], state="completed", finished_at=globex_cutoff - second)
    globex_kept = make_batch(tenants["globex"], state="completed", finished_at=globex_cutoff + second)
    # initech keeps everything (0), however old.
    initech_old = make_batch(tenants["initech"], state="completed", finished_at=now - timedelta(days=3650))

    due = plan(now=now)
    by_tenant = {t.tenant: (t.batches, t.items, t.results) for t in due.tenants}
    assert by_tenant == {"acme": (2, 2 * ITEMS, 2 * ITEMS), "globex": (1, ITEMS, ITEMS), "initech": (0, 0, 0)}

    done = purge(now=now, chunk=2)  # two items a transaction: several per batch

    assert (done.batches, done.items, done.results) == (due.batches, due.items, due.results) == (3, 9, 9)
    for made in (acme_due, acme_failed_due, globex_due):
        assert_purged(made, now)
    for made in (acme_kept, acme_running, globex_kept, initech_old):
        assert_intact(made)
    # Nothing is due twice; and a purged batch cannot run again.
    assert plan(now=now).batches == 0
    assert purge(now=now).batches == 0
    with pytest.raises(Conflict) as refused:
        batch_retry(batch_id=acme_failed_due.batch.id, actor="user:ann")
    assert refused.value.code == "purged"


def test_a_child_batch_waits_for_its_parent(tenants: dict[str, Tenant]) -> None:
    now = days_later(DEFAULT_DAYS + 1)
    parent = make_batch(tenants["acme"], state="running", finished_at=None)
    child = make_batch(tenants["acme"], state="completed", finished_at=days_later(-1))
    Batch.objects.filter(id=child.batch.id).update(parent=parent.batch)
    assert purge(now=now).batches == 0
    assert_intact(child)


def test_the_audit_purge_keeps_to_its_own_policy_and_the_trigger_holds(tenants: dict[str, Tenant]) -> None:
    now = days_later(DEFAULT_DAYS)
    cutoff = now - timedelta(days=365)  # BOS_AUDIT_RETENTION_DAYS's default
    old = AuditRecord.objects.create(
        at=cutoff - timedelta(seconds=1), actor="user:ann", action="login", outcome="ok"
    )
    kept = AuditRecord.objects.create(
        at=cutoff + timedelta(seconds=1), actor="user:ann", action="login", outcome="ok"
    )
    assert plan(now=now).audit_records == 1

    assert purge(now=now, chunk=1).audit_records == 1

    assert not AuditRecord.objects.filter(id=old.id).exists()
    assert AuditRecord.objects.filter(id=kept.id).exists()
    # The purge's permission ended with its transactions: a DELETE is refused again.
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM orchestrator_auditrecord WHERE id = %s", [kept.id])


def test_the_command_shows_what_is_due_then_purges_it_and_audits(tenants: dict[str, Tenant]) -> None:
    due = make_batch(
        tenants["acme"], state="completed", finished_at=days_later(-DEFAULT_DAYS, extra_seconds=-60)
    )
    kept = make_batch(tenants["acme"], state="completed", finished_at=days_later(-DEFAULT_DAYS + 1))

    out, err = io.StringIO(), io.StringIO()
    call_command("bos_retention", stdout=out, stderr=err)
    text = out.getvalue()
    assert "acting as system:bos_retention" in err.getvalue()
    assert "dry run: nothing purged" in text
    acme_row = next(line for line in text.splitlines() if "acme" in line)
    cells = [cell.strip() for cell in acme_row.split("│")]
    assert cells[1:8] == ["acme", f"{DEFAULT_DAYS} d", cells[3], "1", str(ITEMS), str(ITEMS), "0"]
    assert_intact(due)

    out = io.StringIO()
    UserFactory(username="ann", is_superuser=True, is_staff=True)
    call_command("bos_retention", "--execute", "--as-user", "ann", stdout=out)
    assert f"purged 1 batch(es): {ITEMS} item payload(s), {ITEMS} item result(s)" in out.getvalue()
    assert Batch.objects.get(id=due.batch.id).purged_at is not None
    assert_intact(kept)
    record = AuditRecord.objects.get(action="retention.purge")
    assert record.actor == "user:ann"
    assert (record.detail["batches"], record.detail["items"], record.detail["trigger"]) == (
        1,
        ITEMS,
        "command",
    )


def test_the_beat_task_purges_as_the_retention_actor(tenants: dict[str, Tenant]) -> None:
    due = make_batch(
        tenants["globex"], state="failed", finished_at=days_later(-GLOBEX_DAYS, extra_seconds=-60)
    )

    counts = retention_purge_task()

    assert counts["batches"] == 1
    assert Batch.objects.get(id=due.batch.id).purged_at is not None
    record = AuditRecord.objects.get(action="retention.purge")
    assert record.actor == "system:retention"
    assert record.detail["tenants"] == {"globex": {"batches": 1, "items": ITEMS, "results": ITEMS}}


def test_a_named_user_purges_only_the_tenants_they_administer(tenants: dict[str, Tenant]) -> None:
    due = make_batch(
        tenants["acme"], state="completed", finished_at=days_later(-DEFAULT_DAYS, extra_seconds=-60)
    )
    MembershipFactory(user=UserFactory(username="ops"), tenant=tenants["acme"], role="operator")
    with pytest.raises(CommandError, match="needs a superuser"):
        call_command("bos_retention", "--execute", "--as-user", "ops", stdout=io.StringIO())
    with pytest.raises(CommandError, match="needs administer"):
        call_command(
            "bos_retention", "--tenant", "acme", "--execute", "--as-user", "ops", stdout=io.StringIO()
        )
    assert Batch.objects.get(id=due.batch.id).purged_at is None
    assert AuditRecord.objects.filter(action="command.bos_retention", outcome="denied").count() == 2

    MembershipFactory(user=UserFactory(username="boss"), tenant=tenants["acme"], role="admin")
    call_command("bos_retention", "--tenant", "acme", "--execute", "--as-user", "boss", stdout=io.StringIO())
    assert Batch.objects.get(id=due.batch.id).purged_at is not None
