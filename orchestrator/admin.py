"""Django admin: batches with their phases and transitions inline, pipelines, tenants.

Nothing changes state by editing a field: states are read-only here and operator
actions call the same services as the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from orchestrator.breakers import breaker_states
from orchestrator.errors import OrchestrationError
from orchestrator.models import (
    Alert,
    Batch,
    BatchSnapshot,
    ErrorFingerprint,
    Membership,
    OutboxEvent,
    PhaseRun,
    Pipeline,
    PipelineVersion,
    StateTransition,
    Tenant,
)
from orchestrator.profiling import format_seconds, version_stats
from orchestrator.selectors import batch_graph, version_graph
from orchestrator.services.batches import batch_cancel, batch_retry, batch_retry_items
from orchestrator.services.rollback import batch_rollback


class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PhaseRunInline(ReadOnlyInline):
    model = PhaseRun
    fields = [
        "name",
        "mode",
        "state",
        "items_done",
        "items_total",
        "items_failed",
        "started_at",
        "finished_at",
        "attempts",
        "retries",
        "next_retry_at",
        "waiting_on",
        "compensation_state",
        "error",
    ]
    ordering = ["position"]


class SnapshotInline(ReadOnlyInline):
    model = BatchSnapshot
    fields = ["taken_at", "state", "transitions_count", "items_failed", "phases"]
    ordering = ["-taken_at"]


class TransitionInline(ReadOnlyInline):
    model = StateTransition
    fields = ["seq", "from_state", "to_state", "at", "actor", "reason", "phase"]
    ordering = ["seq"]


def _run_action(
    modeladmin: Any, request: HttpRequest, queryset: QuerySet[Batch], service: Any, verb: str
) -> None:
    done = 0
    for batch in queryset:
        try:
            service(
                batch_id=batch.id, actor=f"admin:{request.user.get_username()}", reason=f"{verb} from admin"
            )
            done += 1
        except OrchestrationError as exc:
            modeladmin.message_user(request, f"{batch}: {exc.message}", messages.WARNING)
    if done:
        modeladmin.message_user(request, f"{verb}: {done} batch(es)", messages.SUCCESS)


@admin.action(description="Cancel selected batches")
def cancel_batches(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
    _run_action(modeladmin, request, queryset, batch_cancel, "cancelled")


@admin.action(description="Retry selected failed batches")
def retry_batches(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
    _run_action(modeladmin, request, queryset, batch_retry, "retried")


@admin.action(description="Retry the failed items of selected batches")
def retry_failed_items(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
    _run_action(modeladmin, request, queryset, batch_retry_items, "retrying failed items of")


@admin.action(description="Roll back selected batches (run their compensations)")
def rollback_batches(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
    _run_action(modeladmin, request, queryset, batch_rollback, "rolling back")


def _svg(svg: str) -> str:
    # The SVG is built by orchestrator.graphs, which escapes every text it draws.
    return mark_safe(f'<div style="overflow-x:auto;max-width:100%">{svg}</div>')  # noqa: S308


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "external_id",
        "tenant",
        "pipeline_version",
        "state",
        "active_phases",
        "priority",
        "items_total",
        "items_failed",
        "created_at",
        "finished_at",
    ]
    list_filter = ["state", "tenant", "pipeline_version__pipeline"]
    search_fields = ["external_id", "id", "correlation_id"]
    date_hierarchy = "created_at"
    inlines = [PhaseRunInline, TransitionInline, SnapshotInline]
    actions = [cancel_batches, retry_batches, retry_failed_items, rollback_batches]
    list_select_related = ["tenant", "pipeline_version__pipeline"]
    readonly_fields = ["graph", *[f.name for f in Batch._meta.fields]]

    @admin.display(description="progress")
    def graph(self, batch: Batch) -> str:
        return _svg(batch_graph(batch))

    @admin.display(description="active phases")
    def active_phases(self, batch: Batch) -> str:
        return ", ".join(batch.phases.filter(state="running").values_list("name", flat=True))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Pipeline)
class PipelineAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "active_version", "split", "description", "created_at"]
    readonly_fields = ["name", "description", "active_version", "split", "versions", "created_at"]

    @admin.display(description="versions side by side")
    def versions(self, pipeline: Pipeline) -> str:
        rows = [
            (
                f"v{s.version}{' (active)' if s.active else ''}",
                ", ".join(f"{state} {n}" for state, n in sorted(s.counts.items()) if n) or "no batches",
                format_seconds(s.duration_p50),
                format_seconds(s.duration_p95),
            )
            for s in version_stats(pipeline.name)
        ]
        return format_html(
            "<table><tr><th>version</th><th>batches</th><th>p50</th><th>p95</th></tr>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )


@admin.register(PipelineVersion)
class PipelineVersionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["pipeline", "version", "checksum", "created_at"]
    list_filter = ["pipeline"]
    readonly_fields = ["graph", "pipeline", "version", "definition", "checksum", "created_at"]

    @admin.display(description="phases")
    def graph(self, version: PipelineVersion) -> str:
        return _svg(version_graph(version))


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["id", "event_type", "key", "created_at", "published_at", "attempts"]
    list_filter = ["event_type", "published_at"]
    readonly_fields = [f.name for f in OutboxEvent._meta.fields]


@admin.register(ErrorFingerprint)
class ErrorFingerprintAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "error_type",
        "error_class",
        "message",
        "pipeline",
        "phase",
        "count",
        "last_seen",
        "tenant",
    ]
    list_filter = ["error_class", "pipeline", "tenant"]
    search_fields = ["message", "error_type", "fingerprint"]
    readonly_fields = [f.name for f in ErrorFingerprint._meta.fields]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["created_at", "kind", "message", "tenant", "acknowledged_at"]
    list_filter = ["kind", "tenant"]
    readonly_fields = [f.name for f in Alert._meta.fields]


admin.site.register(Tenant)
admin.site.register(Membership)


def breakers_page(request: HttpRequest) -> HttpResponse:
    """Admin page: every downstream dependency's circuit breaker."""
    rows = [(b["dependency"], b["state"], b["failures"], b["opens_for_seconds"]) for b in breaker_states()]
    body = format_html(
        "<h1>Circuit breakers</h1><table><tr><th>dependency</th><th>state</th><th>failures in a row</th>"
        "<th>seconds until the probe</th></tr>{}</table>",
        format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
    )
    context = {**admin.site.each_context(request), "title": "Circuit breakers", "content": body}
    return TemplateResponse(request, "admin/bos_page.html", context)
