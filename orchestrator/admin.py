"""Django admin: batches with their phases and transitions inline, pipelines, tenants.

Nothing changes state by editing a field: states are read-only here and operator
actions call the same services as the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from orchestrator.errors import OrchestrationError
from orchestrator.models import (
    Batch,
    Membership,
    OutboxEvent,
    PhaseRun,
    Pipeline,
    PipelineVersion,
    StateTransition,
    Tenant,
)
from orchestrator.services.batches import batch_cancel, batch_retry


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
        "error",
    ]
    ordering = ["position"]


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


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "external_id",
        "tenant",
        "pipeline_version",
        "state",
        "priority",
        "items_total",
        "items_failed",
        "created_at",
        "finished_at",
    ]
    list_filter = ["state", "tenant", "pipeline_version__pipeline"]
    search_fields = ["external_id", "id", "correlation_id"]
    date_hierarchy = "created_at"
    inlines = [PhaseRunInline, TransitionInline]
    actions = [cancel_batches, retry_batches]
    list_select_related = ["tenant", "pipeline_version__pipeline"]
    readonly_fields = [f.name for f in Batch._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Pipeline)
class PipelineAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "active_version", "description", "created_at"]
    readonly_fields = ["name", "description", "active_version", "created_at"]


@admin.register(PipelineVersion)
class PipelineVersionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["pipeline", "version", "checksum", "created_at"]
    list_filter = ["pipeline"]
    readonly_fields = ["pipeline", "version", "definition", "checksum", "created_at"]


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["id", "event_type", "key", "created_at", "published_at", "attempts"]
    list_filter = ["event_type", "published_at"]
    readonly_fields = [f.name for f in OutboxEvent._meta.fields]


admin.site.register(Tenant)
admin.site.register(Membership)
