"""Retention: what finished batches keep, and for how long (docs/retention.md).

A batch that ended (a terminal state) more than its tenant's `retention_days` ago
(`BOS_RETENTION_DAYS`, a per-tenant runtime setting; 0: forever) loses what was derived
from its items: item payloads become NULL, item results are deleted, phase outputs and
the report become NULL, and `Batch.purged_at` says when. The batch row, its state
history, its counters (items and phases), its items' states and masked errors, and the
audit trail stay. A child batch waits for its parent to end.

The purge works in transactions of at most `chunk` items each, walking a batch's items
by id (keyset), so locks and transactions stay short while the service runs; a purge cut
short is taken up again by the next run (the batch has no `purged_at` yet).

Audit records have a policy of their own (`audit_retention_days`): older records are
deleted in SQL, `chunk` a transaction, in transactions that declare the purge to the
table's append-only trigger (migration 0011).

`plan()` counts what a purge would remove; `purge()` removes exactly that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from orchestrator.config import runtime
from orchestrator.errors import Conflict
from orchestrator.models import AuditRecord, Batch, BatchItem, ItemResult, PhaseRun, Tenant
from orchestrator.states import BATCH_TERMINAL

CHUNK = 1000
TERMINAL = [s.value for s in BATCH_TERMINAL]
SYSTEM_ACTOR = "system:retention"


@dataclass
class TenantPlan:
    """What is due in one tenant: by its retention, before `cutoff` (None: kept forever)."""

    tenant_id: int
    tenant: str
    retention_days: int
    cutoff: datetime | None
    batches: int = 0
    items: int = 0
    results: int = 0
    audit_records: int = 0  # by the audit log's own policy

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "audit_records": self.audit_records,
            "retention_days": self.retention_days,
            "cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "batches": self.batches,
            "items": self.items,
            "results": self.results,
        }


@dataclass
class Plan:
    """What a purge at `now` removes: per tenant, and audit records before `audit_cutoff`."""

    now: datetime
    tenants: list[TenantPlan] = field(default_factory=list)
    audit_retention_days: int = 0
    audit_cutoff: datetime | None = None
    audit_records: int = 0
    audit_records_of_no_tenant: int = 0

    @property
    def batches(self) -> int:
        return sum(t.batches for t in self.tenants)

    @property
    def items(self) -> int:
        return sum(t.items for t in self.tenants)

    @property
    def results(self) -> int:
        return sum(t.results for t in self.tenants)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "items": self.items,
            "results": self.results,
            "audit_records": self.audit_records,
            "audit_retention_days": self.audit_retention_days,
            "tenants": [t.as_dict() for t in self.tenants if t.batches or t.audit_records],
        }


def retention_days(tenant: Tenant) -> int:
    """The tenant's retention in days (its own value, else the global one); 0: forever."""
    return int(runtime("retention_days", tenant=tenant.slug))


def past_retention(batch: Batch, *, now: datetime | None = None) -> bool:
    """Whether a batch is purged, or due: it ended before its tenant's cut-off."""
    if batch.purged_at is not None:
        return True
    if batch.finished_at is None or batch.state not in TERMINAL:
        return False
    days = int(runtime("retention_days", tenant=batch.tenant_id))
    return days > 0 and batch.finished_at < (now or timezone.now()) - timedelta(days=days)


def refuse_past_retention(batch: Batch) -> None:
    """Operations that run a batch's handlers again (retry, retry items, rewind, roll back)
    need its payloads and results: refused (409 `purged`) once retention took them or
    is about to — the purge and such an operation both hold the batch's lock."""
    if past_retention(batch):
        raise Conflict(
            "purged",
            "this batch is past its tenant's retention: its payloads and results are purged "
            "(docs/retention.md), so it cannot run again",
        )


def due_batches(tenant_id: int, cutoff: datetime) -> QuerySet[Batch]:
    """The tenant's batches that ended before `cutoff`, not purged, whose parent (if any) ended."""
    return Batch.objects.filter(
        Q(parent__isnull=True) | Q(parent__state__in=TERMINAL),
        tenant_id=tenant_id,
        state__in=TERMINAL,
        finished_at__lt=cutoff,
        purged_at__isnull=True,
    )


def _audit_cutoff(now: datetime) -> tuple[int, datetime]:
    days = int(runtime("audit_retention_days"))
    return days, now - timedelta(days=days)


def plan(*, now: datetime | None = None, tenants: Iterable[Tenant] | None = None) -> Plan:
    """Count what `purge(now=now)` would remove (a dry run: reads only)."""
    now = now or timezone.now()
    result = Plan(now=now)
    result.audit_retention_days, result.audit_cutoff = _audit_cutoff(now)
    audit_due: dict[int | None, int] = dict(
        AuditRecord.objects.filter(at__lt=result.audit_cutoff)
        .values("tenant_id")
        .annotate(n=Count("id"))
        .values_list("tenant_id", "n")
        .order_by()
    )
    result.audit_records = sum(audit_due.values())
    result.audit_records_of_no_tenant = audit_due.get(None, 0)
    for tenant in tenants if tenants is not None else Tenant.objects.order_by("slug"):
        days = retention_days(tenant)
        cutoff = now - timedelta(days=days) if days > 0 else None
        entry = TenantPlan(
            tenant_id=tenant.id,
            tenant=tenant.slug,
            retention_days=days,
            cutoff=cutoff,
            audit_records=audit_due.get(tenant.id, 0),
        )
        if cutoff is not None:
            batch_ids = due_batches(tenant.id, cutoff).values("id")
            entry.batches = due_batches(tenant.id, cutoff).count()
            if entry.batches:
                items = BatchItem.objects.filter(batch_id__in=batch_ids)
                entry.items = items.filter(payload__isnull=False).count()
                entry.results = ItemResult.objects.filter(item__batch_id__in=batch_ids).count()
        result.tenants.append(entry)
    return result


@dataclass
class Purged:
    """What a purge removed."""

    batches: int = 0
    items: int = 0
    results: int = 0
    audit_records: int = 0
    by_tenant: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "items": self.items,
            "results": self.results,
            "audit_records": self.audit_records,
            "tenants": self.by_tenant,
        }


Progress = Callable[[str, int], None]  # (what: "items" | "audit_records", how many more)


def purge_batch(
    batch_id: Any, *, now: datetime, chunk: int = CHUNK, progress: Progress | None = None
) -> tuple[int, int]:
    """Purge one due batch: (items whose payload was removed, results deleted).

    Items go `chunk` a transaction, by id; the last transaction clears the phase outputs
    and the report and sets `purged_at`, only if the batch is still due (a batch retried
    meanwhile is left alone: it is no longer terminal).
    """
    items = results = 0
    last_id = 0
    while True:
        with transaction.atomic():
            # Held against a retry (which locks the batch too, and refuses a batch past its
            # retention): while this runs, the batch stays as it was checked.
            batch = Batch.objects.select_for_update(of=("self",)).filter(id=batch_id).first()
            if batch is None or batch.state not in TERMINAL or batch.purged_at is not None:
                return items, results
            ids = list(
                BatchItem.objects.filter(batch_id=batch_id, id__gt=last_id)
                .order_by("id")
                .values_list("id", flat=True)[:chunk]
            )
            if not ids:
                break
            last_id = ids[-1]
            results += ItemResult.objects.filter(item_id__in=ids).delete()[0]
            cleared = BatchItem.objects.filter(id__in=ids, payload__isnull=False).update(payload=None)
            items += cleared
        if progress is not None:
            progress("items", cleared)
    with transaction.atomic():
        batch = Batch.objects.select_for_update().filter(id=batch_id).first()
        if batch is None or batch.state not in TERMINAL or batch.purged_at is not None:
            return items, results
        PhaseRun.objects.filter(batch_id=batch_id).update(output=None)
        Batch.objects.filter(id=batch_id).update(report=None, purged_at=now)
    return items, results


def purge_audit(*, cutoff: datetime, chunk: int = CHUNK, progress: Progress | None = None) -> int:
    """Delete audit records older than `cutoff`, `chunk` a transaction; how many."""
    table = AuditRecord._meta.db_table
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            # The table's trigger refuses DELETE unless the transaction says it is the purge.
            cursor.execute("SET LOCAL bos.audit_purge = 'on'")
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN "  # noqa: S608 - the table name is ours
                f"(SELECT id FROM {table} WHERE at < %s ORDER BY id LIMIT %s)",
                [cutoff, chunk],
            )
            count = int(cursor.rowcount)
        deleted += count
        if progress is not None and count:
            progress("audit_records", count)
        if count < chunk:
            return deleted


def purge(
    *,
    now: datetime | None = None,
    chunk: int = CHUNK,
    progress: Progress | None = None,
    tenants: Iterable[Tenant] | None = None,
    audit_log: bool = True,
) -> Purged:
    """Purge what is due at `now` (see the module's docstring); what was removed.
    `audit_log` False leaves the audit records (a purge of chosen tenants only)."""
    now = now or timezone.now()
    done = Purged()
    for tenant in tenants if tenants is not None else Tenant.objects.order_by("slug"):
        days = retention_days(tenant)
        if days <= 0:
            continue
        cutoff = now - timedelta(days=days)
        counts = {"batches": 0, "items": 0, "results": 0}
        for batch_id in (
            due_batches(tenant.id, cutoff).order_by("finished_at", "id").values_list("id", flat=True)
        ):
            items, results = purge_batch(batch_id, now=now, chunk=chunk, progress=progress)
            counts["batches"] += 1
            counts["items"] += items
            counts["results"] += results
        if counts["batches"]:
            done.by_tenant[tenant.slug] = counts
            done.batches += counts["batches"]
            done.items += counts["items"]
            done.results += counts["results"]
    if audit_log:
        _, audit_cutoff = _audit_cutoff(now)
        done.audit_records = purge_audit(cutoff=audit_cutoff, chunk=chunk, progress=progress)
    return done


def record_purge(done: Purged, *, trigger: str) -> None:
    """The audit record of a purge (`retention.purge`), with its counts."""
    from orchestrator import audit

    audit.record(
        "retention.purge",
        object_type="retention",
        detail={**done.as_dict(), "trigger": trigger},
    )
