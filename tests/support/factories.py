"""factory_boy factories and small builders of test data."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from bos_project.settings.environment import BASE_DIR
from orchestrator.models import (
    Alert,
    Batch,
    ChunkRun,
    ErrorCount,
    ErrorFingerprint,
    Membership,
    OutboxEvent,
    PhaseRun,
    Pipeline,
    PipelineVersion,
    Tenant,
)
from orchestrator.services.batches import BatchRequest
from orchestrator.services.events import claim_sequences, event_envelope
from orchestrator.services.pipelines import pipeline_publish, pipeline_publish_file
from tests.support.contracts import example_event_data


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"tenant-{n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    tenant = factory.SubFactory(TenantFactory)
    role = Membership.Role.OPERATOR


class PipelineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Pipeline
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"pipeline-{n}")


class PipelineVersionFactory(factory.django.DjangoModelFactory):
    """A stored version of a one-phase pipeline (not published through the service)."""

    class Meta:
        model = PipelineVersion

    pipeline = factory.SubFactory(PipelineFactory)
    version = 1
    definition = factory.LazyFunction(
        lambda: {"phases": [{"name": "only", "handler": "test.count", "mode": "per_batch"}]}
    )
    checksum = factory.LazyFunction(lambda: uuid.uuid4().hex * 2)


class BatchFactory(factory.django.DjangoModelFactory):
    """A batch row alone (no items, phases or events): for tests that need a batch to point at."""

    class Meta:
        model = Batch

    tenant = factory.SubFactory(TenantFactory)
    external_id = factory.Sequence(lambda n: f"ext-{n}")
    pipeline_version = factory.SubFactory(PipelineVersionFactory)
    state = "running"


class PhaseRunFactory(factory.django.DjangoModelFactory):
    """A phase of a batch (its tenant's), finished successfully unless told otherwise.

    `started_at` and `finished_at` default to now; pass them for a real duration."""

    class Meta:
        model = PhaseRun

    batch = factory.SubFactory(BatchFactory)
    tenant = factory.SelfAttribute("batch.tenant")
    name = factory.Sequence(lambda n: f"phase-{n}")
    handler = "test.echo"
    mode = "per_item"
    position = 0
    state = "succeeded"
    attempts = 1
    started_at = factory.LazyFunction(timezone.now)
    work_started_at = factory.SelfAttribute("started_at")
    finished_at = factory.LazyFunction(timezone.now)


class ChunkRunFactory(factory.django.DjangoModelFactory):
    """A recorded chunk of a per-item phase: how many of its items succeeded or failed."""

    class Meta:
        model = ChunkRun

    phase_run = factory.SubFactory(PhaseRunFactory)
    start = 0
    end = factory.LazyAttribute(lambda o: o.start + o.succeeded + o.failed + o.skipped)
    succeeded = 10
    failed = 0
    skipped = 0
    finished_at = factory.LazyFunction(timezone.now)
    started_at = factory.SelfAttribute("finished_at")


class ErrorFingerprintFactory(factory.django.DjangoModelFactory):
    """A kind of failure of a tenant, as `analyze_errors` stores it."""

    class Meta:
        model = ErrorFingerprint

    tenant = factory.SubFactory(TenantFactory)
    fingerprint = factory.LazyFunction(lambda: uuid.uuid4().hex + uuid.uuid4().hex[:24])
    error_type = "ItemFailed"
    error_class = "bad_input"
    message = "text has <n> words; at least <n> are needed"
    pipeline = "essay-analysis"
    phase = "validate"
    sample = factory.LazyAttribute(lambda o: o.message.replace("<n>", "2"))
    count = 1
    first_seen = factory.LazyFunction(timezone.now)
    last_seen = factory.SelfAttribute("first_seen")


class ErrorCountFactory(factory.django.DjangoModelFactory):
    """Occurrences of a fingerprint in one hour (`hour` is the hour's start)."""

    class Meta:
        model = ErrorCount

    fingerprint = factory.SubFactory(ErrorFingerprintFactory)
    hour = factory.LazyFunction(lambda: timezone.now().replace(minute=0, second=0, microsecond=0))
    count = 1


class AlertFactory(factory.django.DjangoModelFactory):
    """An alert of a kind (`new_error_pattern`, `batch.sla_at_risk`, `anomaly`, …).

    `at` sets `created_at` (which `auto_now_add` would set to now)."""

    class Meta:
        model = Alert
        skip_postgeneration_save = True

    tenant = factory.SubFactory(TenantFactory)
    kind = "new_error_pattern"
    message = factory.LazyAttribute(lambda o: f"{o.kind} alert")
    details = factory.LazyFunction(dict)

    @factory.post_generation
    def at(obj: Alert, create: bool, extracted: datetime | None, **kwargs: Any) -> None:
        if extracted is not None and create:
            Alert.objects.filter(pk=obj.pk).update(created_at=extracted)
            obj.created_at = extracted


class OutboxEventFactory(factory.django.DjangoModelFactory):
    """A stored event with the envelope the services write, already published.

    `at` is when it happened: the envelope's `occurred_at` and the row's `created_at`
    (which `auto_now_add` would set to now), unless `stored_at` says otherwise. `data`
    (what the type adds to the batch fields) defaults to its schema's example.
    `published_at=None` makes an event the publisher has not sent yet.
    """

    class Meta:
        model = OutboxEvent
        skip_postgeneration_save = True

    class Params:
        at = factory.LazyFunction(timezone.now)
        data = None

    batch = factory.SubFactory(BatchFactory)
    tenant = factory.SelfAttribute("batch.tenant")
    event_type = "batch.phase_completed"
    key = factory.LazyAttribute(lambda o: str(o.batch.id))
    envelope = factory.LazyAttribute(
        lambda o: event_envelope(
            batch=o.batch,
            event_type=o.event_type,
            at=o.at,
            # By default, what its type's checked-in example adds (e.g. `phase`): the schema's shape.
            data=o.data if o.data is not None else example_event_data(o.event_type),
            # The batch's next number, as emit() gives it.
            sequence=claim_sequences({o.batch.id: 1})[o.batch.id],
        )
    )
    event_id = factory.LazyAttribute(lambda o: o.envelope["event_id"])
    published_at = factory.LazyFunction(timezone.now)

    @factory.post_generation
    def stored_at(obj: OutboxEvent, create: bool, extracted: datetime | None, **kwargs: Any) -> None:
        when = extracted or datetime.fromisoformat(obj.envelope["occurred_at"])
        obj.created_at = when
        if create:
            OutboxEvent.objects.filter(pk=obj.pk).update(created_at=when)


SAMPLE_TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was a sunny day in the park.",
    "Writing essays helps students think clearly. Good arguments need evidence and care.",
    "Teh weather was wierd today, and we recieved too much rain for the garden.",
    "Reading every day improves vocabulary. Libraries offer many books for free.",
]


def essay_items(n: int, *, bad: set[int] | None = None) -> list[dict[str, Any]]:
    """`n` essays; those at positions in `bad` fail validation (too short)."""
    bad = bad or set()
    return [
        {"key": f"essay-{i}", "payload": {"text": "Too short" if i in bad else SAMPLE_TEXTS[i % 4]}}
        for i in range(n)
    ]


def batch_request(**overrides: Any) -> BatchRequest:
    values: dict[str, Any] = {
        "tenant": "acme",
        "external_id": f"ext-{uuid.uuid4().hex[:12]}",
        "pipeline": "essay-analysis",
        "items": essay_items(10),
    }
    values.update(overrides)
    return BatchRequest(**values)


def publish_essay_pipeline() -> None:
    pipeline_publish_file(BASE_DIR / "pipelines" / "essay-analysis.json")


def publish_test_pipeline(name: str, phases: list[dict[str, Any]], **top: Any) -> None:
    pipeline_publish(name=name, definition={"phases": phases, **top})


def request_message(
    *,
    tenant: str = "acme",
    external_id: str | None = None,
    items: list[dict[str, Any]] | None = None,
    event_id: str | None = None,
    pipeline: str = "essay-analysis",
    **data: Any,
) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": "batch.requested",
        "schema_version": 1,
        "occurred_at": "2026-11-29T10:00:00Z",
        "correlation_id": f"corr-{uuid.uuid4().hex[:8]}",
        "tenant": tenant,
        "data": {
            "external_id": external_id or f"ext-{uuid.uuid4().hex[:12]}",
            "pipeline": pipeline,
            "items": items if items is not None else essay_items(5),
            **data,
        },
    }
