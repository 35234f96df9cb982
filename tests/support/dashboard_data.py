"""A dashboard's worth of data for two tenants, made with the factories.

Every name a tenant's data shows on the page (tenant, pipeline, batch external ids,
error messages, alert details) starts with the tenant's slug, so a test can check that
nothing of the other tenant appears.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser

from orchestrator.analytics import hour_of
from orchestrator.models import AuditRecord, Batch, Tenant
from tests.support.factories import (
    AlertFactory,
    BatchFactory,
    ChunkRunFactory,
    ErrorCountFactory,
    ErrorFingerprintFactory,
    MembershipFactory,
    OutboxEventFactory,
    PhaseRunFactory,
    PipelineFactory,
    PipelineVersionFactory,
    TenantFactory,
)

PASSWORD = "dash-board-pass"
DEFINITION = {
    "phases": [
        {"name": "score", "handler": "test.echo", "mode": "per_item"},
        {"name": "report", "handler": "test.count", "mode": "per_batch", "after": ["score"]},
    ]
}


@dataclass
class TenantData:
    tenant: Tenant
    finished: list[Batch] = field(default_factory=list)
    running: list[Batch] = field(default_factory=list)
    items_succeeded: int = 0
    items_failed: int = 0

    @property
    def slug(self) -> str:
        return self.tenant.slug


def created(batch: Batch, at: datetime) -> None:
    """Set when the batch was created (`auto_now_add` would make it now)."""
    Batch.objects.filter(pk=batch.pk).update(created_at=at)
    batch.created_at = at


def tenant_data(slug: str, now: datetime, *, finished: int = 3, tag: str = "") -> TenantData:
    """One tenant's batches, phases, chunks, error fingerprints and alerts of every kind,
    all within the last hour. Called again for the same tenant, give a new `tag` (it
    goes into the external ids)."""
    tenant = TenantFactory(slug=slug)
    pipeline = PipelineFactory(name=f"{slug}-essays")
    version = pipeline.versions.first() or PipelineVersionFactory(pipeline=pipeline, definition=DEFINITION)
    data = TenantData(tenant=tenant)
    for i in range(finished):
        began = now - timedelta(minutes=50 - 5 * i)
        state = "failed" if i == 0 else "completed"
        batch = BatchFactory(
            tenant=tenant,
            external_id=f"{slug}-done-{tag}{i}",
            pipeline_version=version,
            state=state,
            items_total=20,
            items_succeeded=18,
            items_failed=2,
            started_at=began,
            finished_at=began + timedelta(seconds=40 + 10 * i),
        )
        score = PhaseRunFactory(
            batch=batch,
            name="score",
            position=0,
            items_total=20,
            items_done=20,
            items_failed=2,
            started_at=began,
            finished_at=began + timedelta(seconds=30 + 10 * i),
        )
        PhaseRunFactory(
            batch=batch,
            name="report",
            handler="test.count",
            mode="per_batch",
            position=1,
            state="failed" if state == "failed" else "succeeded",
            started_at=score.finished_at,
            finished_at=batch.finished_at,
        )
        for start in (0, 10):
            ChunkRunFactory(
                phase_run=score, start=start, succeeded=9, failed=1, finished_at=score.finished_at
            )
        data.items_succeeded += 18
        data.items_failed += 2
        created(batch, began - timedelta(seconds=5))
        OutboxEventFactory(batch=batch, event_type=f"batch.{state}", at=batch.finished_at)
        data.finished.append(batch)
    for i, deadline in enumerate((now - timedelta(minutes=5), now + timedelta(hours=2))):
        batch = BatchFactory(
            tenant=tenant,
            external_id=f"{slug}-running-{tag}{i}",
            pipeline_version=version,
            state="running",
            deadline=deadline,
            items_total=40,
            started_at=now - timedelta(minutes=20),
        )
        score = PhaseRunFactory(
            batch=batch,
            name="score",
            position=0,
            state="running",
            items_total=40,
            items_done=10,
            started_at=now - timedelta(minutes=20),
            finished_at=None,
        )
        PhaseRunFactory(
            batch=batch,
            name="report",
            handler="test.count",
            mode="per_batch",
            position=1,
            state="pending",
            started_at=None,
            finished_at=None,
        )
        ChunkRunFactory(phase_run=score, start=0, succeeded=10, finished_at=now - timedelta(minutes=2))
        created(batch, now - timedelta(minutes=21))
        data.items_succeeded += 10
        data.running.append(batch)
    at_risk, breached = data.running[1], data.running[0]
    fp = ErrorFingerprintFactory(
        tenant=tenant,
        message=f"{slug}-secret failure in <path>",
        pipeline=version.pipeline.name,
        phase="score",
        count=6,
        first_seen=now - timedelta(minutes=40),
        last_seen=now - timedelta(minutes=3),
    )
    ErrorCountFactory(fingerprint=fp, hour=hour_of(now), count=6)
    sla = {"pipeline": version.pipeline.name, "slowest_phase": "score"}
    AlertFactory(
        tenant=tenant,
        kind="batch.sla_at_risk",
        message=f"{slug}: batch {at_risk.external_id} may miss its deadline",
        details={
            **sla,
            "batch_id": str(at_risk.id),
            "external_id": at_risk.external_id,
            "deadline": at_risk.deadline.isoformat(),
            "projected_finish_at": (at_risk.deadline + timedelta(minutes=10)).isoformat(),
        },
        at=now - timedelta(minutes=10),
    )
    AlertFactory(
        tenant=tenant,
        kind="batch.sla_breached",
        message=f"{slug}: batch {breached.external_id} missed its deadline",
        details={
            **sla,
            "batch_id": str(breached.id),
            "external_id": breached.external_id,
            "deadline": breached.deadline.isoformat(),
            "projected_finish_at": (now + timedelta(minutes=15)).isoformat(),
        },
        at=now - timedelta(minutes=4),
    )
    AlertFactory(
        tenant=tenant,
        kind="anomaly",
        message=f"{slug}: score took unusually long",
        details={
            "pipeline": version.pipeline.name,
            "phase": "score",
            "metric": "duration_seconds",
            "value": 50.0,
            "low": 5.0,
            "high": 20.0,
            "batch_id": str(data.finished[-1].id),
        },
        at=now - timedelta(minutes=30),
    )
    AlertFactory(
        tenant=tenant,
        kind="predicted_error_surge",
        fingerprint=fp,
        message=f"{slug}: errors of {fp.message} forecast to surge",
        details={"fingerprint": fp.fingerprint, "pipeline": version.pipeline.name, "phase": "score"},
        at=now - timedelta(minutes=8),
    )
    AlertFactory(
        tenant=tenant,
        kind="new_error_pattern",
        fingerprint=fp,
        message=f"New error pattern in {slug}-essays/score",
        at=now - timedelta(minutes=40),
    )
    return data


def service_alert(now: datetime) -> None:
    """An alert of no tenant: a predicted breaker trip (superusers alone see it)."""
    AlertFactory(
        tenant=None,
        kind="predicted_breaker_trip",
        message="scoring is forecast to trip its breaker within 5 minutes",
        details={
            "service": "scoring-dashboard",
            "success_ratio": 0.62,
            "trip_ratio": 0.5,
            "seconds_to_trip": 300,
        },
        at=now - timedelta(minutes=6),
    )


def security_data(tenant: Tenant, now: datetime) -> None:
    """The audit log's security events of the last hour: refusals in `tenant`, failed
    logins and a throttled minute of no tenant, and a security alert (superusers see it)."""
    at = now - timedelta(minutes=20)
    for n in range(3):
        AuditRecord.objects.create(
            at=at, actor="user:vic", action="batch.cancel", outcome="denied", tenant=tenant, detail={"n": n}
        )
    for n in range(2):
        AuditRecord.objects.create(
            at=at, actor="anonymous", ip="203.0.113.50", action="login_failed", outcome="denied",
            detail={"username": f"guess{n}"},
        )  # fmt: skip
    AuditRecord.objects.create(at=at, actor="user:flood", action="api.throttled", outcome="denied")
    AuditRecord.objects.create(
        at=at, actor="user:ann", action="payload_read", tenant=tenant, detail={"items": 250}
    )
    AlertFactory(
        tenant=None,
        kind="security.login_failures",
        message="20 failed admin logins from 203.0.113.50 in 15 minutes",
        details={"who": "203.0.113.50", "count": 20},
        at=now - timedelta(minutes=19),
    )


def member(tenant: Tenant, username: str, role: str = "viewer") -> AbstractUser:
    """A user who may log in to the admin, with a role in one tenant."""
    user = get_user_model().objects.create_user(username, password=PASSWORD, is_staff=True)
    MembershipFactory(user=user, tenant=tenant, role=role)
    return user


def superuser(username: str = "root") -> AbstractUser:
    return get_user_model().objects.create_superuser(username, f"{username}@example.com", PASSWORD)
