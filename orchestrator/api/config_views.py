"""Runtime configuration API (CONTRACT §5): list, set one key, history, rollback.

Runtime settings are the platform's, not a tenant's: superusers only (others: 403
`forbidden`). Every write goes through `orchestrator.config.store`, which validates it.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator import access
from orchestrator.api.pagination import BatchPagination
from orchestrator.config import store
from orchestrator.errors import PermissionDenied
from orchestrator.models import ConfigVersion


class ConfigItemOutSerializer(serializers.Serializer):
    key = serializers.CharField()
    value = serializers.JSONField()
    default = serializers.JSONField()
    type = serializers.CharField()
    description = serializers.CharField()
    scope = serializers.CharField()
    bounds = serializers.CharField()
    env = serializers.CharField()
    version = serializers.IntegerField()
    changed_by = serializers.CharField(allow_null=True)
    changed_at = serializers.DateTimeField(allow_null=True)
    tenant_values = serializers.DictField(
        child=serializers.JSONField(),
        help_text="per-tenant values (settings of scope `tenant`), by tenant slug",
    )


class ConfigListOutSerializer(serializers.Serializer):
    results = ConfigItemOutSerializer(many=True)


class ConfigSetInSerializer(serializers.Serializer):
    value = serializers.JSONField()
    reason = serializers.CharField(max_length=2000)
    tenant = serializers.SlugField(
        required=False, help_text="set the value for this tenant only (settings of scope `tenant`)"
    )


class ConfigRollbackInSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=0)
    reason = serializers.CharField(max_length=2000)


class ConfigVersionOutSerializer(serializers.ModelSerializer):
    changed_by = serializers.CharField(source="actor")
    changed_at = serializers.DateTimeField(source="at")

    class Meta:
        model = ConfigVersion
        fields = ["version", "changed_by", "changed_at", "reason", "changes", "values", "rollback_of"]


def _superuser(request: Request) -> str:
    """The actor of a superuser's request; anyone else is refused."""
    if not access.is_superuser(request.user):
        raise PermissionDenied("forbidden", "runtime configuration is for superusers")
    return f"user:{request.user.get_username()}"


def _item(key: str) -> dict[str, Any]:
    return next(item for item in store.config_items() if item["key"] == key)


@extend_schema(tags=["config"], summary="List runtime settings", responses=ConfigListOutSerializer)
@api_view(["GET"])
def config_list_view(request: Request) -> Response:
    """Every runtime setting: its value, default, type, bounds and last change."""
    _superuser(request)
    return Response({"results": ConfigItemOutSerializer(store.config_items(), many=True).data})


@extend_schema(
    tags=["config"],
    summary="Set a runtime setting",
    request=ConfigSetInSerializer,
    responses=ConfigItemOutSerializer,
)
@api_view(["PUT"])
def config_set_view(request: Request, key: str) -> Response:
    """Set one runtime setting (a new version); 400 `invalid_config` names the key and rule."""
    actor = _superuser(request)
    body = ConfigSetInSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    store.config_set(
        changes={key: body.validated_data["value"]},
        actor=actor,
        reason=body.validated_data["reason"],
        tenant=body.validated_data.get("tenant"),
    )
    return Response(ConfigItemOutSerializer(_item(key)).data)


@extend_schema(
    tags=["config"], summary="Runtime configuration history", responses=ConfigVersionOutSerializer(many=True)
)
@api_view(["GET"])
def config_history_view(request: Request) -> Response:
    """Every version, newest first: who, when, why and what changed."""
    _superuser(request)
    paginator = BatchPagination()
    page = paginator.paginate_queryset(ConfigVersion.objects.order_by("-version"), request)
    return paginator.get_paginated_response(ConfigVersionOutSerializer(page, many=True).data)


@extend_schema(
    tags=["config"],
    summary="Roll the runtime configuration back",
    request=ConfigRollbackInSerializer,
    responses={201: ConfigVersionOutSerializer},
)
@api_view(["POST"])
def config_rollback_view(request: Request) -> Response:
    """Every key back to its value at `version` (0: every default), as a new version."""
    actor = _superuser(request)
    body = ConfigRollbackInSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    row = store.config_rollback(
        version=body.validated_data["version"], actor=actor, reason=body.validated_data["reason"]
    )
    return Response(ConfigVersionOutSerializer(row).data, status=201)
