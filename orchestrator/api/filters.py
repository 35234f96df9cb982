"""Filters of the batch list (CONTRACT §5), and the API's one reading of a date-time parameter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField

from orchestrator.models import Batch
from orchestrator.states import BatchState


class InstantField(IsoDateTimeField):  # type: ignore[misc]
    """An ISO 8601 date-time as an instant in UTC (naive: UTC).

    In UTC because PostgreSQL refuses offsets that Python accepts (`+17:00`: "time zone
    displacement out of range"); one whose UTC is outside the years 1-9999 is refused here.
    """

    default_error_messages = {
        "invalid": "Enter an ISO 8601 date-time, such as 2026-11-29T10:00:00Z.",
        "out_of_range": "The date-time is out of range once in UTC.",
    }

    def to_python(self, value: Any) -> datetime | None:
        result: datetime | None = super().to_python(value)
        if result is None:
            return None
        try:
            return result.astimezone(UTC)
        except OverflowError as exc:
            raise forms.ValidationError(self.error_messages["out_of_range"], code="out_of_range") from exc


class InstantFilter(django_filters.IsoDateTimeFilter):  # type: ignore[misc]
    field_class = InstantField


def parse_instant(raw: str) -> datetime:
    """`raw` as an instant in UTC; `forms.ValidationError` if it is not one."""
    instant: datetime | None = InstantField().clean(raw)
    if instant is None:
        raise forms.ValidationError(InstantField.default_error_messages["invalid"], code="invalid")
    return instant


class BatchFilter(django_filters.FilterSet):  # type: ignore[misc]
    state = django_filters.ChoiceFilter(choices=[(s.value, s.value) for s in BatchState])
    pipeline = django_filters.CharFilter(field_name="pipeline_version__pipeline__name")
    external_id = django_filters.CharFilter()
    created_after = InstantFilter(field_name="created_at", lookup_expr="gte")
    created_before = InstantFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Batch
        fields = ["state", "pipeline", "external_id", "created_after", "created_before"]
