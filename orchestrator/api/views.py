"""REST views: batches (create, list, detail, history, items, operator actions) and pipelines.

Every query is scoped to the caller's tenants: another tenant's batch answers 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.db.models import Prefetch, QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action, api_view
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator import access
from orchestrator.access import Do
from orchestrator.analytics import recent_alerts, top_errors
from orchestrator.api.filters import BatchFilter, parse_instant
from orchestrator.api.serializers import (
    ActionInSerializer,
    BatchCreateInSerializer,
    BatchDetailOutSerializer,
    BatchOutSerializer,
    ItemOutSerializer,
    PipelineOutSerializer,
    PipelineVersionOutSerializer,
    TransitionOutSerializer,
)
from orchestrator.breakers import breaker_states
from orchestrator.errors import InvalidRequest, NotFound, PermissionDenied
from orchestrator.models import Batch, PhaseRun, Pipeline, PipelineVersion
from orchestrator.observability import context as log_context
from orchestrator.observability import tracing
from orchestrator.profiling import version_stats
from orchestrator.selectors import batch_graph, batches_for, tenant_ids_for, version_graph
from orchestrator.services.batches import (
    BatchRequest,
    batch_cancel,
    batch_create,
    batch_retry,
    batch_retry_items,
)
from orchestrator.services.rollback import batch_rollback

GRAPH_AS = OpenApiParameter("as", str, enum=["svg", "mermaid"], description="svg (default) or mermaid text")
SINCE = OpenApiParameter("since", OpenApiTypes.DATETIME, description="only fingerprints seen since then")


CREATE_EXAMPLE = OpenApiExample(
    "Two essays",
    request_only=True,
    value={
        "tenant": "acme",
        "external_id": "acme-2026-11-29-001",
        "pipeline": "essay-analysis",
        "priority": 5,
        "deadline": "2026-11-29T11:00:00Z",
        "metadata": {"course": "EN101"},
        "items": [
            {"key": "essay-1", "payload": {"text": "Writing essays helps students think clearly."}},
            {"key": "essay-2", "payload": {"text": "Reading every day improves vocabulary."}},
        ],
    },
)


def _limit_parameter(default: int, most: int) -> OpenApiParameter:
    return OpenApiParameter("limit", int, description=f"how many, {default} by default, at most {most}")


def _graph_response(request: Request, render: Callable[[bool], str]) -> HttpResponse:
    as_mermaid = request.query_params.get("as", "svg") == "mermaid"
    content_type = "text/plain; charset=utf-8" if as_mermaid else "image/svg+xml"
    return HttpResponse(render(as_mermaid), content_type=content_type)


def _actor(request: Request) -> str:
    return f"user:{request.user.get_username()}"


class BatchViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    filterset_class = BatchFilter
    lookup_value_regex = "[0-9a-fA-F-]{36}"

    def get_queryset(self) -> QuerySet[Batch]:
        qs = batches_for(self.request.user).order_by("-created_at")
        if self.action == "retrieve":
            qs = qs.prefetch_related(Prefetch("phases", PhaseRun.objects.order_by("position")))
        return qs

    def get_serializer_class(self) -> Any:
        return BatchDetailOutSerializer if self.action == "retrieve" else BatchOutSerializer

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        # The filters choose batches for the list; a detail action names its batch by id.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    def _require_operator(self, tenant_id: int) -> None:
        if not access.may(self.request.user, Do.OPERATE, tenant_id):
            raise PermissionDenied("forbidden", "this needs the operator or admin role in the tenant")

    @extend_schema(
        request=BatchCreateInSerializer,
        responses={201: BatchDetailOutSerializer, 200: BatchDetailOutSerializer},
        examples=[CREATE_EXAMPLE],
    )
    def create(self, request: Request) -> Response:
        data_in = BatchCreateInSerializer(data=request.data)
        data_in.is_valid(raise_exception=True)
        data = data_in.validated_data
        if data["tenant"] not in set(
            request.user.memberships.filter(  # type: ignore[union-attr]
                role__in=["operator", "admin"]
            ).values_list("tenant__slug", flat=True)
        ):
            raise PermissionDenied("forbidden", "this needs the operator or admin role in the tenant")
        result = batch_create(
            request=BatchRequest(
                tenant=data["tenant"],
                external_id=data["external_id"],
                pipeline=data["pipeline"],
                pipeline_version=data.get("pipeline_version"),
                priority=data["priority"],
                deadline=data.get("deadline"),
                metadata=data["metadata"],
                items=data["items"],
                # Else the request's X-Correlation-ID (orchestrator/observability/middleware.py).
                correlation_id=data.get("correlation_id") or log_context.correlation_id() or "",
                # The request's span; with tracing off, the caller's traceparent passed through.
                traceparent=tracing.current_traceparent()
                or tracing.accepted_traceparent(request.headers.get(tracing.HEADER)),
            ),
            actor=_actor(request),
        )
        batch = self.get_queryset().prefetch_related("phases").get(id=result.batch.id)
        return Response(
            BatchDetailOutSerializer(batch).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )

    @extend_schema(responses=TransitionOutSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"], pagination_class=None)
    def history(self, request: Request, pk: str | None = None) -> Response:
        batch = self.get_object()
        return Response(TransitionOutSerializer(batch.transitions.order_by("seq"), many=True).data)

    @extend_schema(responses=ItemOutSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"])
    def items(self, request: Request, pk: str | None = None) -> Response:
        batch = self.get_object()
        page = self.paginate_queryset(batch.items.order_by("seq"))
        items = ItemOutSerializer(page, many=True, context={"batch_state": batch.state})
        return self.get_paginated_response(items.data)

    def _operator_action(self, request: Request, service: Any) -> Response:
        batch = self.get_object()
        self._require_operator(batch.tenant_id)
        data_in = ActionInSerializer(data=request.data)
        data_in.is_valid(raise_exception=True)
        service(batch_id=batch.id, actor=_actor(request), reason=data_in.validated_data["reason"])
        batch = self.get_queryset().prefetch_related("phases").get(id=batch.id)
        return Response(BatchDetailOutSerializer(batch).data)

    @extend_schema(request=ActionInSerializer, responses=BatchDetailOutSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        return self._operator_action(request, batch_cancel)

    @extend_schema(request=ActionInSerializer, responses=BatchDetailOutSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        return self._operator_action(request, batch_retry)

    @extend_schema(request=ActionInSerializer, responses=BatchDetailOutSerializer)
    @action(detail=True, methods=["post"], url_path="retry-items")
    def retry_items(self, request: Request, pk: str | None = None) -> Response:
        """Run the failed items of a batch that completed with errors again."""
        return self._operator_action(request, batch_retry_items)

    @extend_schema(request=ActionInSerializer, responses=BatchDetailOutSerializer)
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str | None = None) -> Response:
        return self._operator_action(request, batch_rollback)

    @extend_schema(parameters=[GRAPH_AS], responses={(200, "image/svg+xml"): str, (200, "text/plain"): str})
    @action(detail=True, methods=["get"])
    def graph(self, request: Request, pk: str | None = None) -> HttpResponse:
        """The batch's pipeline as a graph, coloured by each phase's state (SVG, or `?as=mermaid`)."""
        return _graph_response(
            request, lambda as_mermaid: batch_graph(self.get_object(), as_mermaid=as_mermaid)
        )


def _limit(request: Request, default: int, most: int) -> int:
    try:
        return max(1, min(int(request.query_params.get("limit", default)), most))
    except ValueError as exc:
        raise InvalidRequest("invalid_limit", "limit must be a number") from exc


@extend_schema(parameters=[SINCE, _limit_parameter(20, 200)], responses={200: dict})
@api_view(["GET"])
def errors_view(request: Request) -> Response:
    """Top error fingerprints of the caller's tenants, with their 24-hour trend."""
    raw_since = request.query_params.get("since")
    try:
        since = parse_instant(raw_since) if raw_since else None
    except forms.ValidationError as exc:
        raise InvalidRequest("invalid_since", "since must be an ISO 8601 date-time") from exc
    return Response(
        {"results": top_errors(tenant_ids_for(request.user), since=since, limit=_limit(request, 20, 200))}
    )


@extend_schema(parameters=[_limit_parameter(50, 500)], responses={200: dict})
@api_view(["GET"])
def alerts_view(request: Request) -> Response:
    """Recent alerts (new error patterns, rising error rates) of the caller's tenants."""
    return Response({"results": recent_alerts(tenant_ids_for(request.user), limit=_limit(request, 50, 500))})


@extend_schema(responses={200: dict})
@api_view(["GET"])
def breakers_view(request: Request) -> Response:
    """The circuit breaker of every downstream dependency: state, failures, time to probe."""
    return Response({"results": breaker_states()})


class PipelineViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = PipelineOutSerializer
    lookup_field = "name"
    queryset = Pipeline.objects.select_related("active_version").order_by("name")

    @extend_schema(parameters=[GRAPH_AS], responses={(200, "image/svg+xml"): str, (200, "text/plain"): str})
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<version>[0-9]+)/graph")
    def version_graph(
        self, request: Request, name: str | None = None, version: str | None = None
    ) -> HttpResponse:
        """A version's phase graph (SVG, or `?as=mermaid`)."""
        found = (
            PipelineVersion.objects.select_related("pipeline")
            .filter(pipeline=self.get_object(), version=int(version or 0))
            .first()
        )
        if found is None:
            raise NotFound("version_not_found", f"pipeline {name} has no version {version}")
        return _graph_response(request, lambda as_mermaid: version_graph(found, as_mermaid=as_mermaid))

    @extend_schema(responses=PipelineVersionOutSerializer(many=True))
    @action(detail=True, methods=["get"])
    def versions(self, request: Request, name: str | None = None) -> Response:
        """Versions side by side, newest first: definition, batches by state, p50/p95 durations."""
        pipeline = self.get_object()
        versions = PipelineVersion.objects.filter(pipeline=pipeline).select_related("pipeline")
        page = self.paginate_queryset(versions.order_by("-version"))
        # Over the caller's tenants' batches only: another tenant's work is not theirs to count.
        readable = access.tenant_ids(request.user)
        stats = {s.version: s.to_dict() for s in version_stats(pipeline.name, tenant_ids=readable)}
        data = PipelineVersionOutSerializer(page, many=True, context={"stats": stats}).data
        return self.get_paginated_response(data)
