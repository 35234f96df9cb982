"""Feature flags API (CONTRACT §5): `GET /api/v1/flags/`, `PUT /api/v1/flags/{name}/`.

Flags are stored with the runtime configuration (orchestrator/config/flags.py), so a
change is a new configuration version: in `GET /api/v1/config/history/`, undone by a
rollback, seen by every process within `BOS_CONFIG_RELOAD_SECONDS`. Superusers change
flags; any signed-in user reads them, a tenant's member seeing only the flags that can
apply to their tenants and no other tenant's name in a flag's targeting.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator import access
from orchestrator.config import store
from orchestrator.errors import PermissionDenied
from orchestrator.models import Tenant


class FlagOutSerializer(serializers.Serializer):
    name = serializers.CharField()
    enabled = serializers.BooleanField()
    percent = serializers.IntegerField(help_text="0–100: the share of batches that get it, sticky per batch")
    tenants = serializers.ListField(child=serializers.CharField(), help_text="empty: every tenant")
    pipelines = serializers.ListField(child=serializers.CharField(), help_text="empty: every pipeline")
    description = serializers.CharField(allow_blank=True)
    version = serializers.IntegerField(help_text="the configuration version of its last change")
    changed_by = serializers.CharField(allow_null=True)
    changed_at = serializers.DateTimeField(allow_null=True)


class FlagListOutSerializer(serializers.Serializer):
    results = FlagOutSerializer(many=True)


class FlagSetInSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    percent = serializers.IntegerField(required=False, default=100)
    tenants = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    pipelines = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    reason = serializers.CharField(max_length=2000)


def _visible(user: Any, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A member's view: flags that can apply to one of their tenants, targeting trimmed."""
    ids = access.tenant_ids(user)
    if ids is None:  # superuser
        return items
    own = set(Tenant.objects.filter(id__in=ids).values_list("slug", flat=True))
    visible = []
    for item in items:
        if item["tenants"] and not own & set(item["tenants"]):
            continue
        visible.append({**item, "tenants": sorted(own & set(item["tenants"]))})
    return visible


@extend_schema(tags=["flags"], summary="List feature flags", responses=FlagListOutSerializer)
@api_view(["GET"])
def flag_list_view(request: Request) -> Response:
    """Every feature flag with its targeting and last change."""
    return Response(
        {"results": FlagOutSerializer(_visible(request.user, store.flag_items()), many=True).data}
    )


@extend_schema(
    tags=["flags"],
    summary="Create or change a feature flag",
    request=FlagSetInSerializer,
    responses=FlagOutSerializer,
)
@api_view(["PUT"])
def flag_set_view(request: Request, name: str) -> Response:
    """Create or change a flag (superusers; a new configuration version). A bad field is a
    400 `invalid_config` naming `flag.<name>` and the rule."""
    if not access.is_superuser(request.user):
        raise PermissionDenied("forbidden", "feature flags are changed by superusers")
    body = FlagSetInSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    data = dict(body.validated_data)
    reason = data.pop("reason")
    store.flag_set(name=name, value=data, actor=f"user:{request.user.get_username()}", reason=reason)
    item = next(i for i in store.flag_items() if i["name"] == name)
    return Response(FlagOutSerializer(item).data)
