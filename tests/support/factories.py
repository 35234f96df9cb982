"""factory_boy factories and small builders of test data."""

from __future__ import annotations

import uuid
from typing import Any

import factory
from django.contrib.auth import get_user_model

from bos_project.settings.environment import BASE_DIR
from orchestrator.models import Membership, Tenant
from orchestrator.services.batches import BatchRequest
from orchestrator.services.pipelines import pipeline_publish, pipeline_publish_file


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
