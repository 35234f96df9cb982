"""Filters of the batch list (CONTRACT §5)."""

from __future__ import annotations

import django_filters

from orchestrator.models import Batch
from orchestrator.states import BatchState


class BatchFilter(django_filters.FilterSet):  # type: ignore[misc]
    state = django_filters.ChoiceFilter(choices=[(s.value, s.value) for s in BatchState])
    pipeline = django_filters.CharFilter(field_name="pipeline_version__pipeline__name")
    external_id = django_filters.CharFilter()
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Batch
        fields = ["state", "pipeline", "external_id", "created_after", "created_before"]
