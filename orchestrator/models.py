"""Database models of the orchestrator.

Fields, constraints, indexes and small properties only: every state change goes
through a service in `orchestrator.services`. Every row that belongs to someone carries
its tenant, so access control, retention and encryption can be added by tenant.
Payloads, results, metadata, reports and phase outputs are `EncryptedJSONField`s:
stored encrypted, read in clear (docs/encryption.md).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from orchestrator.encrypted_fields import EncryptedJSONField
from orchestrator.states import BatchState, ItemState, PhaseState


def _choices(enum: type[BatchState] | type[PhaseState] | type[ItemState]) -> list[tuple[str, str]]:
    return [(m.value, m.value.replace("_", " ")) for m in enum]


class Tenant(models.Model):
    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer"
        OPERATOR = "operator"
        ADMIN = "admin"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"


class Pipeline(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    active_version = models.ForeignKey(
        "PipelineVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # A/B split of new batches between versions: [{"version": 3, "weight": 70}, ...],
    # sticky by external id. Empty: every new batch gets the active version.
    split = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class PipelineVersion(models.Model):
    """An immutable, validated definition; a batch keeps its version to its end."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    definition = models.JSONField()
    checksum = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "version"], name="pipelineversion_unique"),
        ]
        ordering = ["pipeline_id", "-version"]

    def __str__(self) -> str:
        return f"{self.pipeline.name} v{self.version}"


class Batch(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="batches")
    external_id = models.CharField(max_length=200)
    pipeline_version = models.ForeignKey(PipelineVersion, on_delete=models.PROTECT, related_name="batches")
    state = models.CharField(max_length=32, choices=_choices(BatchState), default=BatchState.RECEIVED)
    priority = models.PositiveSmallIntegerField(default=5)
    deadline = models.DateTimeField(null=True, blank=True)
    metadata = EncryptedJSONField(default=dict, blank=True, null=True)
    correlation_id = models.CharField(max_length=200, blank=True)
    # The W3C traceparent of the span that took the request in (Kafka record, REST request):
    # the batch's work and phases are traced under it (orchestrator/observability/tracing.py).
    traceparent = models.CharField(max_length=55, blank=True, default="")
    items_total = models.PositiveIntegerField(default=0)
    items_succeeded = models.PositiveIntegerField(default=0)
    items_failed = models.PositiveIntegerField(default=0)
    report = EncryptedJSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    # The seq of the last StateTransition; the next one gets this + 1.
    transitions_count = models.PositiveIntegerField(default=0)
    # The `sequence` of the last event of this batch (CONTRACT §3); the next one gets + 1.
    events_count = models.PositiveBigIntegerField(default=0)
    # A child batch runs a sub-pipeline for a phase of its parent, which waits for it.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    parent_phase = models.ForeignKey(
        "PhaseRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="child_batches"
    )
    # The attempt of `parent_phase` this child runs for: each attempt gets its own child.
    parent_attempt = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # SLA (orchestrator/insights/sla.py): when `batch.sla_at_risk` and `batch.sla_breached`
    # were raised (each once), and the latest projected finish.
    sla_at_risk_at = models.DateTimeField(null=True, blank=True)
    sla_breached_at = models.DateTimeField(null=True, blank=True)
    sla_projected_finish_at = models.DateTimeField(null=True, blank=True)
    # When retention purged its payloads, results, phase outputs and report (services/retention.py).
    purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # External ids are the tenants' own: unique among their batches. A child is
            # known by its parent phase and attempt, so no user batch can be taken for one.
            models.UniqueConstraint(
                fields=["tenant", "external_id"],
                condition=Q(parent__isnull=True),
                name="batch_unique_external_id",
            ),
            models.UniqueConstraint(
                fields=["parent_phase", "parent_attempt"],
                condition=Q(parent_phase__isnull=False),
                name="batch_unique_child",
            ),
            models.CheckConstraint(condition=Q(priority__lte=9), name="batch_priority_0_9"),
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="batch_tenant_created"),
            models.Index(fields=["tenant", "state", "-created_at"], name="batch_tenant_state"),
            # The reconciler's scan: non-terminal batches by age.
            models.Index(
                fields=["state", "updated_at"],
                name="batch_active_by_age",
                condition=Q(state__in=["received", "accepted", "running"]),
            ),
        ]
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return f"{self.tenant.slug}:{self.external_id}"

    @property
    def is_terminal(self) -> bool:
        from orchestrator.states import BATCH_TERMINAL

        return BatchState(self.state) in BATCH_TERMINAL


class BatchItem(models.Model):
    """One unit of work. Its payload is stored encrypted, through `orchestrator.payloads`."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="items")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    seq = models.PositiveIntegerField()
    key = models.CharField(max_length=200)
    payload = EncryptedJSONField(null=True)  # None: purged by retention (Batch.purged_at)
    state = models.CharField(max_length=16, choices=_choices(ItemState), default=ItemState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    failed_phase = models.CharField(max_length=64, blank=True)
    last_error = models.TextField(blank=True)
    error_class = models.CharField(max_length=32, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["batch", "seq"], name="item_unique_seq"),
            models.UniqueConstraint(fields=["batch", "key"], name="item_unique_key"),
        ]
        indexes = [models.Index(fields=["batch", "state"], name="item_batch_state")]

    def __str__(self) -> str:
        return self.key


class PhaseRun(models.Model):
    """One phase of one batch: its state, timing and progress."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="phases")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=64)
    handler = models.CharField(max_length=200)
    mode = models.CharField(max_length=16)
    position = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=16, choices=_choices(PhaseState), default=PhaseState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    chunk_size = models.PositiveIntegerField(default=100)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    items_total = models.PositiveIntegerField(default=0)
    items_done = models.PositiveIntegerField(default=0)
    items_failed = models.PositiveIntegerField(default=0)
    output = EncryptedJSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Why a phase was skipped (its condition, or a skipped dependency).
    skip_reason = models.CharField(max_length=500, blank=True)
    # started_at: when the phase was dispatched; work_started_at: when a worker first
    # took it up. The difference is the queue wait.
    started_at = models.DateTimeField(null=True, blank=True)
    work_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Rollback: the compensation of a finished phase ("", running, succeeded, failed).
    compensation_state = models.CharField(max_length=16, blank=True)
    compensation_attempts = models.PositiveIntegerField(default=0)
    compensation_error = models.TextField(blank=True)
    compensated_at = models.DateTimeField(null=True, blank=True)
    # When the reconciler last re-sent this phase's missing work.
    reconciled_at = models.DateTimeField(null=True, blank=True)
    # Retries of its chunks (transient item failures, or waiting on an open breaker).
    retries = models.PositiveIntegerField(default=0)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    waiting_on = models.CharField(max_length=100, blank=True)
    error_class = models.CharField(max_length=32, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["batch", "name"], name="phaserun_unique_name"),
        ]
        indexes = [
            models.Index(
                fields=["state", "started_at"],
                name="phaserun_running",
                condition=Q(state="running"),
            ),
            models.Index(fields=["finished_at"], name="phaserun_finished"),
        ]
        ordering = ["batch_id", "position"]

    def __str__(self) -> str:
        return f"{self.batch_id}/{self.name}"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def queue_wait_seconds(self) -> float | None:
        """From dispatch until a worker took the phase up."""
        if self.started_at and self.work_started_at:
            return max(0.0, (self.work_started_at - self.started_at).total_seconds())
        return None

    @property
    def items_per_second(self) -> float | None:
        if self.mode != "per_item" or not (self.work_started_at and self.finished_at):
            return None
        seconds = (self.finished_at - self.work_started_at).total_seconds()
        return round(self.items_done / seconds, 1) if seconds > 0 else None


class ItemResult(models.Model):
    """What one per-item phase produced for one item (or the error it raised)."""

    item = models.ForeignKey(BatchItem, on_delete=models.CASCADE, related_name="results")
    # The unique (phase_run, item) index serves lookups by phase run: no second index
    # to maintain on this, the busiest insert path.
    phase_run = models.ForeignKey(
        PhaseRun, on_delete=models.CASCADE, related_name="item_results", db_index=False
    )
    ok = models.BooleanField()
    output = EncryptedJSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_class = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["phase_run", "item"], name="itemresult_unique"),
        ]


class ChunkRun(models.Model):
    """A chunk of a per-item phase whose results are recorded: its idempotency key.

    A chunk task delivered twice finds its row and records nothing the second time.
    """

    phase_run = models.ForeignKey(PhaseRun, on_delete=models.CASCADE, related_name="chunks")
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    # The phase attempt (PhaseRun.attempts) that recorded it.
    attempt = models.PositiveIntegerField(default=1)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["phase_run", "start"], name="chunkrun_unique"),
        ]


class WorkLease(models.Model):
    """Who runs a chunk (or a per-batch phase, `start` 0) now, and until when.

    Taken by the task when it starts, renewed by its heartbeat while its handler runs.
    The reconciler re-sends only work whose lease expired without a result: never work
    that is queued or alive. `attempt` is the phase attempt the holder works for.
    """

    phase_run = models.ForeignKey(PhaseRun, on_delete=models.CASCADE, related_name="leases")
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    attempt = models.PositiveIntegerField()
    owner = models.CharField(max_length=200)
    taken_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    leased_until = models.DateTimeField()
    # How often the work was taken over after its holder's lease expired.
    takeovers = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["phase_run", "start"], name="worklease_unique"),
        ]
        indexes = [models.Index(fields=["leased_until"], name="worklease_until")]

    def __str__(self) -> str:
        return f"{self.phase_run_id}[{self.start}:{self.end}] {self.owner}"


class StateTransition(models.Model):
    """Append-only history of a batch's state changes, ordered by `seq` within the batch."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="transitions")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    seq = models.PositiveIntegerField()
    from_state = models.CharField(max_length=32, blank=True)
    to_state = models.CharField(max_length=32)
    phase = models.CharField(max_length=64, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    actor = models.CharField(max_length=200)
    at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["batch", "seq"], name="transition_unique_seq"),
        ]
        ordering = ["batch_id", "seq"]

    def __str__(self) -> str:
        return f"{self.from_state or '∅'} → {self.to_state}"


class ProcessedEvent(models.Model):
    """An inbound Kafka event already handled: the same event_id again does nothing."""

    event_id = models.CharField(max_length=100, primary_key=True)
    event_type = models.CharField(max_length=64)
    tenant = models.ForeignKey(Tenant, null=True, on_delete=models.PROTECT, related_name="+")
    batch = models.ForeignKey(Batch, null=True, on_delete=models.SET_NULL, related_name="+")
    processed_at = models.DateTimeField(auto_now_add=True)


class OutboxEvent(models.Model):
    """A CONTRACT §3 event, written in the transaction of the change it reports.

    The publisher sends unpublished rows in id order and marks them published once the
    broker acknowledged them: an event exists if and only if its change was committed.
    """

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(default=uuid.uuid4, unique=True)
    # Null for events of no tenant (a consumer lag alert concerns the whole service).
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    batch = models.ForeignKey(Batch, null=True, on_delete=models.CASCADE, related_name="outbox")
    event_type = models.CharField(max_length=64)
    key = models.CharField(max_length=200)
    envelope = models.JSONField()
    # The W3C traceparent of the span that stored it; the publish span is its child.
    traceparent = models.CharField(max_length=55, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["id"], name="outbox_unpublished", condition=Q(published_at__isnull=True)),
            # events_replay --since/--until selects on the time an event was stored.
            models.Index(fields=["created_at"], name="outbox_created_at"),
            # /metrics counts the SLA events at every scrape (orchestrator/api/metrics.py).
            models.Index(
                fields=["event_type"],
                name="outbox_sla_events",
                condition=Q(event_type__in=["batch.sla_at_risk", "batch.sla_breached"]),
            ),
        ]


class ErrorFingerprint(models.Model):
    """A kind of failure: error type + normalized message + pipeline + phase, per tenant."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    fingerprint = models.CharField(max_length=64)
    error_type = models.CharField(max_length=200)
    error_class = models.CharField(max_length=32, blank=True)
    message = models.TextField()  # normalized: numbers, ids, quoted values replaced
    pipeline = models.CharField(max_length=100)
    phase = models.CharField(max_length=64)
    sample = models.TextField(blank=True)  # one real error text
    sample_batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    count = models.PositiveBigIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "fingerprint"], name="errorfingerprint_unique"),
        ]
        indexes = [models.Index(fields=["-last_seen"], name="errorfingerprint_recent")]


class ErrorCount(models.Model):
    """Occurrences of a fingerprint per hour: its trend."""

    fingerprint = models.ForeignKey(ErrorFingerprint, on_delete=models.CASCADE, related_name="counts")
    hour = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["fingerprint", "hour"], name="errorcount_unique")]


class Alert(models.Model):
    """Something an operator should look at (a new error pattern, a rising error rate, ...)."""

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=64)
    fingerprint = models.ForeignKey(
        ErrorFingerprint, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    message = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["-created_at"], name="alert_recent")]


class AnalysisWatermark(models.Model):
    """How far a background analysis has read (e.g. the last ItemResult id seen)."""

    name = models.CharField(max_length=64, primary_key=True)
    position = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)


class BatchSnapshot(models.Model):
    """A periodic picture of a running batch: its state, phases and counts at a moment."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="snapshots")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    taken_at = models.DateTimeField()
    state = models.CharField(max_length=32)
    transitions_count = models.PositiveIntegerField()
    phases = models.JSONField()  # [{name, state, items_done, items_failed, chunks_done, attempts}]
    items_failed = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["batch", "-taken_at"], name="snapshot_latest")]


class DeferredTask(models.Model):
    """Work whose next try is further away than a broker countdown may safely wait (the
    broker redelivers unacknowledged tasks after its visibility timeout): beat sends it
    when it is due."""

    class Kind(models.TextChoices):
        CHUNK = "chunk"
        BATCH_PHASE = "batch_phase"

    phase_run = models.ForeignKey(PhaseRun, on_delete=models.CASCADE, related_name="deferred")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    start = models.PositiveIntegerField(default=0)
    end = models.PositiveIntegerField(default=0)
    attempt = models.PositiveIntegerField(default=1)
    due_at = models.DateTimeField()
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["due_at"], name="deferredtask_due")]


class ConfigVersion(models.Model):
    """One change of the runtime configuration (orchestrator/config/): who, when, why,
    what changed, and every overridden value after it. The latest row is the current
    configuration; a rollback is a new row."""

    version = models.PositiveIntegerField(unique=True)
    at = models.DateTimeField(auto_now_add=True)
    actor = models.CharField(max_length=200)
    reason = models.TextField(blank=True)
    changes = models.JSONField()  # {key: {"old": value, "new": value}}
    values = models.JSONField()  # {key: value}: every key set at runtime (others: their default)
    rollback_of = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"config v{self.version}"


class BatchTask(models.Model):
    """The batch a stored Celery task result is about (orchestrator/task_results.py).

    Written beside django-celery-results' `TaskResult` by the result backend, from the
    task's batch context; it is how the admin scopes task results to tenants. A task of
    no batch (maintenance, analytics) has none. Deleted with its result or its batch."""

    task = models.OneToOneField(
        "django_celery_results.TaskResult",
        to_field="task_id",
        db_column="task_id",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="batch_link",
    )
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="task_links")


class AppendOnly(Exception):
    """An audit record was to be changed or deleted through the ORM: it never is."""


class AuditQuerySet(models.QuerySet["AuditRecord"]):
    def update(self, **kwargs: object) -> int:
        raise AppendOnly("the audit log is append-only: no update")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnly("the audit log is append-only: no delete (retention purges it in SQL)")


class AuditRecord(models.Model):
    """One operation (orchestrator/audit/): who, from where, what, on which object of which
    tenant, and how it ended. Append-only: the ORM refuses to change or delete a record and
    a trigger refuses UPDATE and DELETE in the database (migration 0011), except the
    retention purge, which says so in its transaction."""

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField()
    actor = models.CharField(max_length=200)
    ip = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=200, blank=True)
    # No constraint: the trail outlives what it is about, a tenant included.
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    outcome = models.CharField(max_length=16)
    detail = models.JSONField(default=dict, blank=True)
    correlation_id = models.CharField(max_length=200, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["-at"], name="audit_recent"),
            models.Index(fields=["tenant", "-at"], name="audit_tenant_recent"),
            models.Index(fields=["actor", "-at"], name="audit_actor_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.outcome}"

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            raise AppendOnly("the audit log is append-only: a record is never changed")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise AppendOnly("the audit log is append-only: a record is never deleted")
