"""The audit log over the API (CONTRACT §5 `GET /api/v1/audit/`): tenant admins read their
tenants' records, superusers every record (those of no tenant too). Newest first,
paginated; filters `actor`, `action`, `outcome`, `since`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator import access
from orchestrator.access import Do
from orchestrator.api.filters import parse_instant
from orchestrator.errors import InvalidRequest, PermissionDenied
from orchestrator.models import AuditRecord


class AuditRecordOutSerializer(serializers.ModelSerializer[AuditRecord]):
    tenant: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )

    class Meta:
        model = AuditRecord
        fields = [
            "id",
            "at",
            "actor",
            "ip",
            "action",
            "object_type",
            "object_id",
            "tenant",
            "outcome",
            "detail",
            "correlation_id",
        ]


FILTERS = [
    OpenApiParameter(
        "actor", str, description="exactly, e.g. `user:ann`, `kafka:<event_id>`, `system:retention`"
    ),
    OpenApiParameter(
        "action", str, description="exactly (`batch.cancel`), or a prefix ending in `.` (`batch.`)"
    ),
    OpenApiParameter("outcome", str, enum=["ok", "denied", "error"]),
    OpenApiParameter("since", OpenApiTypes.DATETIME, description="records at or after this instant"),
]


@extend_schema(
    tags=["audit"],
    summary="The audit log",
    description="Every operation: API writes, admin actions and edits, Kafka commands, management commands, "
    "logins and failed logins, permission denials, configuration changes, key rotations and every read of "
    "payloads or results (`payload_read`), with actor, source address, tenant, object, outcome and "
    "correlation id. Tenant admins see their tenants' records; superusers all. Newest first.",
    parameters=FILTERS,
    responses={
        200: AuditRecordOutSerializer(many=True),
        403: OpenApiResponse(description="`forbidden`: not an admin of any tenant"),
    },
)
class AuditListView(ListAPIView[AuditRecord]):
    serializer_class = AuditRecordOutSerializer
    filter_backends: list[type] = []

    def get_queryset(self) -> QuerySet[AuditRecord]:
        user = self.request.user
        if not access.may_somewhere(user, Do.ADMINISTER):
            raise PermissionDenied("forbidden", "the audit log needs the admin role in a tenant")
        qs = access.scope(AuditRecord.objects.select_related("tenant"), user, "tenant_id", Do.ADMINISTER)
        params = self.request.query_params
        if actor := params.get("actor"):
            qs = qs.filter(actor=actor)
        if action := params.get("action"):
            qs = qs.filter(action__startswith=action) if action.endswith(".") else qs.filter(action=action)
        if outcome := params.get("outcome"):
            if outcome not in ("ok", "denied", "error"):
                raise InvalidRequest("invalid_outcome", "outcome must be ok, denied or error")
            qs = qs.filter(outcome=outcome)
        if since := params.get("since"):
            try:
                qs = qs.filter(at__gte=parse_instant(since))
            except forms.ValidationError as exc:
                raise InvalidRequest("invalid_since", "since must be an ISO 8601 date-time") from exc
        return qs.order_by("-at", "-id")

    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return self.list(request, *args, **kwargs)
