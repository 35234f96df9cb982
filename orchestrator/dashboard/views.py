"""The dashboard's pages: `/dashboard/` and a batch's graph. Both need the admin's
login (an anonymous visitor is sent to it) and show only the viewer's tenants."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse_lazy
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from orchestrator import access
from orchestrator.access import Do
from orchestrator.dashboard import panels
from orchestrator.dashboard.probes import service_probes
from orchestrator.dashboard.selectors import Viewer
from orchestrator.dashboard.windows import WINDOWS, UnknownWindow, parse_window
from orchestrator.models import Batch
from orchestrator.pipelines import PipelineDefinitionError
from orchestrator.selectors import batch_graph, tenant_id_of

LOGIN_URL = reverse_lazy("admin:login")
# Scripts, styles and images from this site only: no inline script (data comes in
# `json_script` blocks, which are not run), no inline style, nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _secured(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@login_required(login_url=LOGIN_URL)
def dashboard(request: HttpRequest) -> HttpResponse:
    """Throughput, phase durations, errors, SLA, anomalies, batches and (superusers) the
    service's queues, consumer lag and breakers, over `?range=` (1h, 6h, 24h, 7d), of
    every tenant the user may read or of the one `?tenant=` names."""
    try:
        window = parse_window(request.GET.get("range"))
    except UnknownWindow as exc:
        return _refused(request, str(exc), status=400)
    tenant_id = None
    if slug := request.GET.get("tenant"):
        # Another tenant's slug answers as one that does not exist: nothing is revealed.
        tenant_id = tenant_id_of(slug)
        if tenant_id is None or not access.may(request.user, Do.READ, tenant_id):
            return _refused(request, f"you have no tenant {slug[:63]!r}", status=404)
    # The service's own state is no tenant's (orchestrator.access): superusers see it.
    probes = service_probes() if access.is_superuser(request.user) else None
    board = panels.build(Viewer(request.user, tenant_id), window, timezone.now(), probes)
    context: dict[str, Any] = {"board": board, "windows": WINDOWS.values(), "charts": board.chart_data()}
    return _secured(render(request, "dashboard/index.html", context))


def _refused(request: HttpRequest, message: str, *, status: int) -> HttpResponse:
    context = {"message": message, "windows": WINDOWS.values()}
    return _secured(render(request, "dashboard/bad_request.html", context, status=status))


@require_GET
@login_required(login_url=LOGIN_URL)
def batch_graph_page(request: HttpRequest, batch_id: UUID) -> HttpResponse:
    """A batch's pipeline drawn with each phase's live state (404 outside the viewer's tenants)."""
    batch = get_object_or_404(
        access.scope(
            Batch.objects.select_related("tenant", "pipeline_version__pipeline"), request.user, "tenant_id"
        ),
        id=batch_id,
    )
    try:
        # orchestrator.graphs escapes every text it draws into the SVG.
        svg, problem = mark_safe(batch_graph(batch)), ""  # noqa: S308
    except PipelineDefinitionError as exc:
        # A version this process cannot plan (a handler it does not have): say so.
        svg, problem = mark_safe(""), f"{batch.pipeline_version} cannot be drawn here: {exc}"  # noqa: S308
    context = {"batch": batch, "svg": svg, "problem": problem}
    return _secured(render(request, "dashboard/graph.html", context))
