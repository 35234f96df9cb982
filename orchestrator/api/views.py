"""REST views: batches (create, list, detail, history, items, operator actions) and pipelines.

Every query is scoped to the caller's tenants: another tenant's batch answers 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django import forms
from django.db.models import Prefetch, QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
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
    ErrorOutSerializer,
    ItemOutSerializer,
    PipelineOutSerializer,
    PipelineVersionOutSerializer,
    TransitionOutSerializer,
)
from orchestrator.audit import reads
from orchestrator.breakers import breaker_states
from orchestrator.errors import InvalidRequest, NotFound, PermissionDenied
from orchestrator.models import Batch, PhaseRun, Pipeline, PipelineVersion, Tenant
from orchestrator.observability import context as log_context
from orchestrator.observability import tracing
from orchestrator.profiling import version_stats
from orchestrator.selectors import batch_graph, batches_for, tenant_id_of, tenant_ids_for, version_graph
from orchestrator.services.batches import (
    BatchRequest,
    batch_cancel,
    batch_create,
    batch_retry,
    batch_retry_items,
)
from orchestrator.services.rollback import batch_rollback

F = TypeVar("F", bound=Callable[..., Any])

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


def sample_batch_body(tenant: str) -> dict[str, Any]:
    """A body to edit in the browsable API's POST form: the example, in the caller's tenant."""
    body = dict(CREATE_EXAMPLE.value)
    body.pop("deadline")
    return {**body, "tenant": tenant, "external_id": f"{tenant}-browsable-001", "pipeline_version": None}


REFUSED = OpenApiResponse(
    ErrorOutSerializer, description="`forbidden`: not an operator or admin of the tenant"
)
MISSING = OpenApiResponse(ErrorOutSerializer, description="`not_found`: no such batch among your tenants'")
NOT_NOW = OpenApiResponse(
    ErrorOutSerializer, description="`invalid_transition`: the batch's state does not allow this action now"
)
ACTION_BODY = (
    'Body (optional): `{"reason": "…"}`, at most 500 characters, recorded in the batch\'s history '
    "(GET …/history/) and the audit log; `{}` or no body at all is fine. Needs the operator or admin "
    "role in the batch's tenant. Answers with the batch as it is after the action."
)


def _action_schema(summary: str, what: str) -> Callable[[F], F]:
    return extend_schema(
        summary=summary,
        description=f"{what}\n\n{ACTION_BODY}",
        request=ActionInSerializer,
        responses={200: BatchDetailOutSerializer, 403: REFUSED, 404: MISSING, 409: NOT_NOW},
        examples=[OpenApiExample("With a reason", request_only=True, value={"reason": "customer asked"})],
    )


def _limit_parameter(default: int, most: int) -> OpenApiParameter:
    return OpenApiParameter("limit", int, description=f"how many, {default} by default, at most {most}")


def _graph_response(request: Request, render: Callable[[bool], str]) -> HttpResponse:
    as_mermaid = request.query_params.get("as", "svg") == "mermaid"
    content_type = "text/plain; charset=utf-8" if as_mermaid else "image/svg+xml"
    return HttpResponse(render(as_mermaid), content_type=content_type)


def _actor(request: Request) -> str:
    return f"user:{request.user.get_username()}"


@extend_schema_view(
    list=extend_schema(
        summary="List batches",
        description="Batches of your tenants, newest first, paginated (`page`, `page_size`); filter by "
        "`state`, `pipeline`, `external_id`, `created_after`, `created_before`.",
    ),
    retrieve=extend_schema(
        summary="Get a batch",
        description="One batch with its phases (state, times, attempts, counts), active phases, report "
        "and error. Another tenant's batch answers 404.",
        responses={200: BatchDetailOutSerializer, 404: MISSING},
    ),
)
class BatchViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    filterset_class = BatchFilter
    lookup_value_regex = "[0-9a-fA-F-]{36}"

    def get_queryset(self) -> QuerySet[Batch]:
        qs = batches_for(self.request.user).order_by("-created_at")
        if self.action == "retrieve":
            qs = qs.prefetch_related(Prefetch("phases", PhaseRun.objects.order_by("position")))
        return qs

    def get_serializer_class(self) -> Any:
        if self.action == "create":
            return BatchCreateInSerializer
        return BatchDetailOutSerializer if self.action == "retrieve" else BatchOutSerializer

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        if self.action == "create" and not args and "data" not in kwargs:
            # The browsable API's POST form: the input fields, items included, as a sample
            # body to edit (DRF renders the form from an unbound serializer's data).
            kwargs["instance"] = sample_batch_body(self._tenant_to_submit_in())
        return super().get_serializer(*args, **kwargs)

    def _tenant_to_submit_in(self) -> str:
        """The first tenant where the caller may submit (a placeholder when there is none)."""
        operates = access.tenant_ids(self.request.user, Do.OPERATE)
        tenants = Tenant.objects.order_by("slug")
        if operates is not None:
            tenants = tenants.filter(id__in=operates)
        return next(iter(tenants.values_list("slug", flat=True)[:1]), "your-tenant")

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        batch = self.get_object()
        # The detail carries the batch's metadata and report (derived from its payloads).
        reads.payload_read(batch, items=0, fields=["metadata", "report"])
        return Response(self.get_serializer(batch).data)

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        # The filters choose batches for the list; a detail action names its batch by id.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    def _require_operator(self, tenant_id: int) -> None:
        if not access.may(self.request.user, Do.OPERATE, tenant_id):
            raise PermissionDenied("forbidden", "this needs the operator or admin role in the tenant")

    @extend_schema(
        summary="Submit a batch",
        description="The `data` object of a `batch.requested` Kafka message plus `tenant`. 201 with the new "
        "batch; the same `(tenant, external_id)` again is not a new batch: 200 with the existing one. "
        "Needs the operator or admin role in the tenant.",
        request=BatchCreateInSerializer,
        responses={
            201: BatchDetailOutSerializer,
            200: BatchDetailOutSerializer,
            400: OpenApiResponse(ErrorOutSerializer, description="invalid body (`code` says what)"),
            403: REFUSED,
        },
        examples=[CREATE_EXAMPLE],
    )
    def create(self, request: Request) -> Response:
        data_in = BatchCreateInSerializer(data=request.data)
        data_in.is_valid(raise_exception=True)
        data = data_in.validated_data
        # A tenant not made yet has no members: only a superuser may start it.
        if not access.may(request.user, Do.OPERATE, tenant_id_of(data["tenant"])):
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
            BatchDetailOutSerializer(batch, context={"request": request}).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )

    @extend_schema(
        summary="A batch's state history",
        description="Every change of the batch's state, in order: `from_state`, `to_state`, `at`, `reason`, "
        "`actor`, and the phase it concerned.",
        responses={200: TransitionOutSerializer(many=True), 404: MISSING},
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def history(self, request: Request, pk: str | None = None) -> Response:
        batch = self.get_object()
        return Response(TransitionOutSerializer(batch.transitions.order_by("seq"), many=True).data)

    @extend_schema(
        summary="A batch's items",
        description="Items in order, paginated: state, attempts, the phase an item failed in, its last "
        "error and error class, and its payload.",
        responses={200: ItemOutSerializer(many=True), 404: MISSING},
        filters=False,
    )
    @action(detail=True, methods=["get"])
    def items(self, request: Request, pk: str | None = None) -> Response:
        batch = self.get_object()
        page = self.paginate_queryset(batch.items.order_by("seq"))
        items = ItemOutSerializer(page, many=True, context={"batch_state": batch.state, "request": request})
        reads.payload_read(batch, items=len(page or []), fields=["payload", "last_error"])
        return self.get_paginated_response(items.data)

    def _operator_action(self, request: Request, service: Any) -> Response:
        batch = self.get_object()
        self._require_operator(batch.tenant_id)
        data_in = ActionInSerializer(data=request.data)
        data_in.is_valid(raise_exception=True)
        service(batch_id=batch.id, actor=_actor(request), reason=data_in.validated_data["reason"])
        batch = self.get_queryset().prefetch_related("phases").get(id=batch.id)
        return Response(BatchDetailOutSerializer(batch, context={"request": request}).data)

    @_action_schema("Cancel a batch", "Stops a batch that has not ended: no phase starts any more.")
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        return self._operator_action(request, batch_cancel)

    @_action_schema("Retry a failed batch", "Runs a failed batch again from its failed phases.")
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        return self._operator_action(request, batch_retry)

    @_action_schema(
        "Retry a batch's failed items",
        "Runs the failed items of a batch that completed with errors again, through the phases they failed in.",
    )
    @action(detail=True, methods=["post"], url_path="retry-items")
    def retry_items(self, request: Request, pk: str | None = None) -> Response:
        return self._operator_action(request, batch_retry_items)

    @_action_schema(
        "Roll a batch back",
        "Runs the compensations of the batch's finished phases, newest first; the batch ends `rolled_back`.",
    )
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str | None = None) -> Response:
        return self._operator_action(request, batch_rollback)

    @extend_schema(
        summary="A batch's graph",
        description="The batch's pipeline as a graph, coloured by each phase's state, with progress "
        "(SVG, or Mermaid text with `?as=mermaid`).",
        parameters=[GRAPH_AS],
        responses={(200, "image/svg+xml"): str, (200, "text/plain"): str},
    )
    @action(detail=True, methods=["get"])
    def graph(self, request: Request, pk: str | None = None) -> HttpResponse:
        return _graph_response(
            request, lambda as_mermaid: batch_graph(self.get_object(), as_mermaid=as_mermaid)
        )


def _limit(request: Request, default: int, most: int) -> int:
    try:
        return max(1, min(int(request.query_params.get("limit", default)), most))
    except ValueError as exc:
        raise InvalidRequest("invalid_limit", "limit must be a number") from exc


@extend_schema(
    tags=["errors"],
    summary="Top errors",
    description="The most frequent error fingerprints (type, normalized message, pipeline, phase) of your "
    "tenants, with their 24-hour trend.",
    parameters=[SINCE, _limit_parameter(20, 200)],
    responses={200: dict},
)
@api_view(["GET"])
def errors_view(request: Request) -> Response:
    raw_since = request.query_params.get("since")
    try:
        since = parse_instant(raw_since) if raw_since else None
    except forms.ValidationError as exc:
        raise InvalidRequest("invalid_since", "since must be an ISO 8601 date-time") from exc
    return Response(
        {"results": top_errors(tenant_ids_for(request.user), since=since, limit=_limit(request, 20, 200))}
    )


@extend_schema(
    tags=["errors"],
    summary="Recent alerts",
    description="Recent alerts of your tenants: new error patterns, rising error rates.",
    parameters=[_limit_parameter(50, 500)],
    responses={200: dict},
)
@api_view(["GET"])
def alerts_view(request: Request) -> Response:
    return Response({"results": recent_alerts(tenant_ids_for(request.user), limit=_limit(request, 50, 500))})


@extend_schema(
    tags=["health"],
    summary="Circuit breakers",
    description="The circuit breaker of every downstream dependency: state, failures in a row, seconds "
    "until the next probe; superusers only (the platform's state). (Liveness, readiness and metrics: "
    "`/healthz`, `/readyz`, `/metrics`.)",
    responses={200: dict},
)
@api_view(["GET"])
def breakers_view(request: Request) -> Response:
    # The service's own state, no tenant's (orchestrator.access): superusers alone.
    if not access.is_superuser(request.user):
        raise PermissionDenied("forbidden", "the circuit breakers are the platform's: superusers only")
    return Response({"results": breaker_states()})


@extend_schema_view(
    list=extend_schema(
        summary="List pipelines", description="Every pipeline with its active version's definition."
    ),
    retrieve=extend_schema(
        summary="Get a pipeline", description="One pipeline by name, with its active definition."
    ),
)
class PipelineViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = PipelineOutSerializer
    lookup_field = "name"
    queryset = Pipeline.objects.select_related("active_version").order_by("name")

    @extend_schema(
        summary="A version's graph",
        description="A pipeline version's phases and their dependencies (SVG, or Mermaid text with `?as=mermaid`).",
        parameters=[GRAPH_AS],
        responses={(200, "image/svg+xml"): str, (200, "text/plain"): str},
    )
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<version>[0-9]+)/graph")
    def version_graph(
        self, request: Request, name: str | None = None, version: str | None = None
    ) -> HttpResponse:
        found = (
            PipelineVersion.objects.select_related("pipeline")
            .filter(pipeline=self.get_object(), version=int(version or 0))
            .first()
        )
        if found is None:
            raise NotFound("version_not_found", f"pipeline {name} has no version {version}")
        return _graph_response(request, lambda as_mermaid: version_graph(found, as_mermaid=as_mermaid))

    @extend_schema(
        summary="A pipeline's versions",
        description="Versions side by side, newest first: definition, whether active, A/B weight, and over "
        "your tenants' batches: batches by state and p50/p95 durations.",
        responses=PipelineVersionOutSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def versions(self, request: Request, name: str | None = None) -> Response:
        pipeline = self.get_object()
        versions = PipelineVersion.objects.filter(pipeline=pipeline).select_related("pipeline")
        page = self.paginate_queryset(versions.order_by("-version"))
        # Over the caller's tenants' batches only: another tenant's work is not theirs to count.
        readable = access.tenant_ids(request.user)
        stats = {s.version: s.to_dict() for s in version_stats(pipeline.name, tenant_ids=readable)}
        data = PipelineVersionOutSerializer(page, many=True, context={"stats": stats}).data
        return self.get_paginated_response(data)
