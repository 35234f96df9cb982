"""Writing audit records: to the table and, the same fields, to the JSON log stream."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from django.utils import timezone

from orchestrator.audit.who import Who, current_who
from orchestrator.models import AuditRecord, Tenant

log = structlog.get_logger("bos.audit")


class Outcome(enum.StrEnum):
    OK = "ok"
    DENIED = "denied"
    ERROR = "error"


@dataclass(frozen=True)
class Entry:
    """One operation to record; `who` None takes the acting context."""

    action: str
    outcome: Outcome = Outcome.OK
    object_type: str = ""
    object_id: str = ""
    tenant: int | Tenant | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    who: Who | None = None


def _tenant_id(tenant: int | Tenant | None) -> int | None:
    return tenant.pk if isinstance(tenant, Tenant) else tenant


def _row(entry: Entry, who: Who) -> AuditRecord:
    return AuditRecord(
        at=timezone.now(),
        actor=who.actor[:200],
        ip=who.ip,
        action=entry.action,
        object_type=entry.object_type,
        object_id=str(entry.object_id)[:200],
        tenant_id=_tenant_id(entry.tenant),
        outcome=str(entry.outcome),
        detail=entry.detail,
        correlation_id=who.correlation_id[:200],
    )


def _log(row: AuditRecord) -> None:
    log.info(
        "audit",
        audit_id=row.pk,
        actor=row.actor,
        ip=row.ip,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        tenant_id=row.tenant_id,
        outcome=row.outcome,
        detail=row.detail,
        audit_correlation_id=row.correlation_id,
    )


def record(
    action: str,
    *,
    outcome: Outcome | str = Outcome.OK,
    object_type: str = "",
    object_id: Any = "",
    tenant: int | Tenant | None = None,
    detail: dict[str, Any] | None = None,
    who: Who | None = None,
) -> AuditRecord:
    """Record one operation (`action` is `<object>.<verb>`, or `payload_read`, `login`, …)."""
    entry = Entry(
        action=action,
        outcome=Outcome(outcome),
        object_type=object_type,
        object_id=str(object_id),
        tenant=tenant,
        detail=detail or {},
        who=who,
    )
    return record_many([entry])[0]


def record_many(entries: Iterable[Entry]) -> list[AuditRecord]:
    """Record several operations with one INSERT (Kafka commands taken in one poll)."""
    fallback: Who | None = None
    rows = []
    for entry in entries:
        if entry.who is None and fallback is None:
            fallback = current_who()
        rows.append(_row(entry, entry.who or fallback))  # type: ignore[arg-type]
    if not rows:
        return []
    AuditRecord.objects.bulk_create(rows)
    for row in rows:
        _log(row)
    return rows
