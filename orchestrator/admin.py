"""Django admin, by tenant and role.

Every page asks `orchestrator.access`, never Django's model permissions: roles are per
tenant (an operator of one tenant may be a viewer of another) and Django's permissions
are per model, so they cannot say it. What a staff user sees and may do:

- the objects of their tenants only (a superuser: all); another tenant's object is
  never listed, and its pages redirect as for an object that does not exist;
- viewer: read; operator: also the batch actions; admin: also the tenant's settings
  (its name) and its memberships (read); superuser: everything, and alone what
  belongs to no tenant (system events and alerts, breakers, memberships' changes);
- records (items, phase runs, transitions, snapshots, events, errors, alerts, leases,
  chunk runs, ...) are read-only for everyone: no Add, no Change, no Delete. State
  changes only through the actions, which call the same services as the API and check
  the role on every selected batch: one refused batch refuses the whole action.

Pipelines and their versions are read by every member (as in the API), with statistics
over the reader's tenants' batches only; they change only by publishing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.postgres.aggregates import StringAgg
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Model, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django_celery_results.models import GroupResult, TaskResult

from orchestrator import access, audit
from orchestrator import admin_display as display
from orchestrator.access import Do
from orchestrator.audit import reads
from orchestrator.breakers import breaker_states
from orchestrator.config import registry as config_registry
from orchestrator.config import store as config_store
from orchestrator.errors import OrchestrationError
from orchestrator.models import (
    Alert,
    AuditRecord,
    Batch,
    BatchItem,
    BatchSnapshot,
    ChunkRun,
    ConfigVersion,
    DeferredTask,
    ErrorCount,
    ErrorFingerprint,
    ItemResult,
    Membership,
    OutboxEvent,
    PhaseRun,
    Pipeline,
    PipelineVersion,
    ProcessedEvent,
    StateTransition,
    Tenant,
    WorkLease,
)
from orchestrator.profiling import format_seconds, version_stats
from orchestrator.selectors import batch_graph, version_graph
from orchestrator.services.batches import batch_cancel, batch_retry, batch_retry_items
from orchestrator.services.rollback import batch_rollback
from orchestrator.task_results import task_results_of

ONLY_YOURS = admin.RelatedOnlyFieldListFilter
ADMIN_CSS = "orchestrator/admin.css"
# The app list beside every page repeats the home page and took 300 px from the lists:
# at 1,400 px the batch list's right-hand columns were cut off.
admin.site.enable_nav_sidebar = False


def _fields(model: type[Model], *leave_out: str) -> list[str]:
    return [f.name for f in model._meta.fields if f.name not in leave_out]


# --- The base: scoped to the user's tenants, read-only unless said otherwise ----------------


class ScopedAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """A model whose rows belong to tenants, found through `tenant_field`.

    `tenant_field` None: rows of no tenant (platform-wide), read by members when
    `members_read` and otherwise by superusers only. `change_needs`: the operation that
    lets a user change a row by its form (None: nobody). `superuser_adds` /
    `superuser_deletes`: whether a superuser may add or delete rows here (nobody else).
    """

    tenant_field: str | None = "tenant_id"
    read_needs: Do = Do.READ
    members_read = False
    change_needs: Do | None = None
    superuser_adds = False
    superuser_deletes = False
    # Masked on a row's page (docs/masking.md): payload-derived values for viewers, errors always.
    payload_fields: tuple[str, ...] = ()
    error_fields: tuple[str, ...] = ()

    class Media:
        css = {"all": [ADMIN_CSS]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        qs = super().get_queryset(request)
        if self.tenant_field is None:
            if self.members_read or access.is_superuser(request.user):
                return qs
            return qs.none()
        return access.scope(qs, request.user, self.tenant_field, self.read_needs)

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        # Only to show it: a POST (a change by someone allowed to) gets the row as stored.
        if (
            obj is not None
            and request.method in ("GET", "HEAD")
            and (self.payload_fields or self.error_fields)
        ):
            clear = self._may(request, Do.OPERATE, obj)
            display.mask_shown(
                obj, payload_fields=() if clear else self.payload_fields, error_fields=self.error_fields
            )
        return obj

    def _tenant(self, obj: Any) -> int | None:
        return access.tenant_of(obj, self.tenant_field) if self.tenant_field else None

    def _may(self, request: HttpRequest, do: Do, obj: Any) -> bool:
        user = request.user
        if self.tenant_field is None:
            return access.is_superuser(user) or (
                do is Do.READ and self.members_read and access.may_somewhere(user, do)
            )
        if obj is None:
            return access.may_somewhere(user, do)
        return access.may(user, do, self._tenant(obj))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._may(request, self.read_needs, None)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, self.read_needs, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.change_needs is not None and self._may(request, self.change_needs, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.superuser_adds and access.is_superuser(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.superuser_deletes and access.is_superuser(request.user)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Whether to offer the operator actions (each batch is checked again when run)."""
        return self._may(request, Do.OPERATE, None)

    # Every edit through a form is in the audit log as well as in the admin's own history.
    def _audit_edit(self, obj: Any, verb: str, message: Any = "") -> None:
        audit.record(
            f"{self.model._meta.model_name}.{verb}",
            object_type=self.model._meta.model_name or "",
            object_id=obj.pk,
            tenant=self._tenant(obj),
            detail={"change": str(message)[:2000]} if message else {},
        )

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        self._audit_edit(obj, "add", message)
        return super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        self._audit_edit(obj, "change", message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        for obj in queryset:
            self._audit_edit(obj, "delete")
        return super().log_deletions(request, queryset)

    def payloads_shown(self, obj: Any) -> tuple[Batch, list[str]] | None:
        """The batch whose payload-derived fields (`payload_fields`) an object's page shows,
        and their names (None: the page shows none). Every such page view is a `payload_read`."""
        batch = obj if isinstance(obj, Batch) else getattr(obj, "batch", None)
        return (
            (batch, list(self.payload_fields)) if self.payload_fields and isinstance(batch, Batch) else None
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        shown = self.payloads_shown(obj) if obj is not None else None
        if shown is not None:
            reads.payload_read(shown[0], items=0, fields=shown[1])
        return super().render_change_form(request, context, add, change, form_url, obj)

    def log_action(self, request: HttpRequest, obj: Any, message: str) -> None:
        """The admin's "Recent actions" entry of a batch action (its audit record is the service's)."""
        admin.ModelAdmin.log_change(self, request, obj, message)


class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    """Rows of the parent batch: shown to whoever may read the batch."""

    extra = 0
    can_delete = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Without `obj` Django asks whether to fill the formset at all; its rows are the
        # parent's, which the parent's admin has already checked.
        if obj is None:
            return access.may_somewhere(request.user, Do.READ)
        return access.may(request.user, Do.READ, obj.tenant_id)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PhaseRunInline(ReadOnlyInline):
    model = PhaseRun
    fields = (
        "name",
        "phase_state",
        "items",
        "started_at",
        "finished_at",
        "duration",
        "attempts",
        "retries",
        "waiting_on",
        "compensation",
        "skip_reason",
        "error",
    )
    readonly_fields = fields
    ordering = ["position"]

    @admin.display(description="state")
    def phase_state(self, phase: PhaseRun) -> str:
        return display.state_badge(phase.state)

    @admin.display(description="items")
    def items(self, phase: PhaseRun) -> str:
        """`12/12`, `12/12 · 1 failed`; a per-batch phase has no items of its own."""
        if phase.mode != "per_item":
            return phase.mode.replace("_", " ")
        done = f"{phase.items_done}/{phase.items_total}"
        return f"{done} · {phase.items_failed} failed" if phase.items_failed else done

    @admin.display(description="duration")
    def duration(self, phase: PhaseRun) -> str:
        return display.format_duration(phase.duration_seconds)

    @admin.display(description="compensation")
    def compensation(self, phase: PhaseRun) -> str:
        return display.state_badge(phase.compensation_state)


class SnapshotInline(ReadOnlyInline):
    model = BatchSnapshot
    fields = ["taken_at", "state", "transitions_count", "items_failed", "phases"]
    ordering = ["-taken_at"]


class TransitionInline(ReadOnlyInline):
    model = StateTransition
    fields = ("seq", "from_state", "to", "at", "actor", "reason", "phase")
    readonly_fields = fields
    ordering = ["seq"]

    @admin.display(description="to state")
    def to(self, transition: StateTransition) -> str:
        return display.state_badge(transition.to_state)


# --- Batches and their operator actions -------------------------------------------------------


BatchService = Callable[..., Batch]


def _run_action(
    modeladmin: BatchAdmin,
    request: HttpRequest,
    queryset: QuerySet[Batch],
    service: BatchService,
    verb: str,
) -> None:
    """Run `service` on every selected batch, if the user may operate on each of them.

    The queryset is already cut to the batches the user may read; a selected id that is
    not in it (another tenant's, or gone) refuses the action too, so a forged POST
    changes nothing and says so.
    """
    batches = list(queryset.select_related("tenant"))
    selected = set(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))
    across = request.POST.get("select_across") == "1"
    missing = 0 if across else len(selected - {str(b.pk) for b in batches})
    refused = [b for b in batches if not access.may(request.user, Do.OPERATE, b.tenant_id)]
    if missing or refused:
        audit.record(
            getattr(service, "audit_action", service.__name__),
            outcome=audit.Outcome.DENIED,
            object_type="batch",
            detail={
                "selected": sorted(selected)[:100],
                "not_found": missing,
                "refused": [str(b.pk) for b in refused][:100],
            },
        )
        modeladmin.message_user(
            request,
            f"Nothing was {verb}: {missing + len(refused)} of the selected batches are not yours to "
            "operate on (this needs the operator or admin role in their tenant).",
            messages.ERROR,
        )
        return
    actor = f"user:{request.user.get_username()}"
    done = 0
    for batch in batches:
        try:
            service(batch_id=batch.id, actor=actor, reason=f"{verb} from the admin")
            modeladmin.log_action(request, batch, f"{verb} from the admin")
            done += 1
        except OrchestrationError as exc:
            modeladmin.message_user(request, f"{batch}: {exc.message}", messages.WARNING)
    if done:
        modeladmin.message_user(request, f"{verb}: {done} batch(es)", messages.SUCCESS)


@admin.action(description="Cancel selected batches", permissions=["operate"])
def cancel_batches(modeladmin: BatchAdmin, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
    _run_action(modeladmin, request, queryset, batch_cancel, "cancelled")


@admin.action(description="Retry selected failed batches", permissions=["operate"])
def retry_batches(modeladmin: BatchAdmin, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
    _run_action(modeladmin, request, queryset, batch_retry, "retried")


@admin.action(description="Retry the failed items of selected batches", permissions=["operate"])
def retry_failed_items(modeladmin: BatchAdmin, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
    _run_action(modeladmin, request, queryset, batch_retry_items, "retrying failed items of")


@admin.action(description="Roll back selected batches (run their compensations)", permissions=["operate"])
def rollback_batches(modeladmin: BatchAdmin, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
    _run_action(modeladmin, request, queryset, batch_rollback, "rolling back")


def _svg(svg: str) -> SafeString:
    # The SVG is built by orchestrator.graphs, which escapes every text it draws; it
    # scales down to the page's width (admin.css) rather than scrolling in a box.
    return mark_safe(f'<div class="bos-graph">{svg}</div>')  # noqa: S308


def _running_phases() -> Subquery:
    """The names of a batch's running phases, in plan order, as one column."""
    names = (
        PhaseRun.objects.filter(batch_id=OuterRef("pk"), state="running")
        .order_by()
        .values("batch_id")
        .annotate(names=StringAgg("name", ", ", order_by="position"))
        .values("names")
    )
    return Subquery(names)


def _admin_url(model: type[Model], view: str, *args: Any) -> str:
    opts = model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


@admin.register(Batch)
class BatchAdmin(ScopedAdmin):
    list_display = [
        "batch",
        "batch_tenant",
        "pipeline",
        "batch_state",
        "active_phases",
        "prio",
        "items",
        "created_at",
        "took",
    ]
    list_filter = ["state", ("tenant", ONLY_YOURS), ("pipeline_version__pipeline", ONLY_YOURS)]
    search_fields = ["external_id", "id", "correlation_id"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    inlines = [PhaseRunInline, TransitionInline, SnapshotInline]
    actions = [cancel_batches, retry_batches, retry_failed_items, rollback_batches]
    list_select_related = ["tenant", "pipeline_version__pipeline"]
    # The graph, the report and the failed items are drawn by the page's template
    # (admin/orchestrator/batch/change_form.html) above these fields.
    readonly_fields = ["batch_state", *_fields(Batch, "report")]
    payload_fields, error_fields = ("metadata", "report"), ("error",)
    fields = ["batch_state", *_fields(Batch, "report", "state")]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Batch]:
        batches: QuerySet[Batch] = super().get_queryset(request)
        return batches.annotate(running_phases=_running_phases())

    @admin.display(description="external id", ordering="external_id")
    def batch(self, batch: Batch) -> str:
        return display.short_id(batch.external_id, 20)

    @admin.display(description="tenant", ordering="tenant__slug")
    def batch_tenant(self, batch: Batch) -> str:
        return display.short_id(batch.tenant.slug, 12)

    @admin.display(description="pipeline", ordering="pipeline_version__pipeline__name")
    def pipeline(self, batch: Batch) -> str:
        version = batch.pipeline_version
        return display.short_id(f"{version.pipeline.name} v{version.version}", 20)

    @admin.display(description="state", ordering="state")
    def batch_state(self, batch: Batch) -> str:
        return display.state_badge(batch.state)

    @admin.display(description="prio", ordering="priority")
    def prio(self, batch: Batch) -> int:
        return batch.priority

    @admin.display(description="items", ordering="items_total")
    def items(self, batch: Batch) -> str:
        """`12`, or `12 (1 failed)`."""
        return (
            f"{batch.items_total} ({batch.items_failed} failed)"
            if batch.items_failed
            else str(batch.items_total)
        )

    @admin.display(description="took")
    def took(self, batch: Batch) -> str:
        """From creation to the end (the end time is on the batch's page)."""
        if batch.finished_at is None:
            return "—"
        return display.format_duration((batch.finished_at - batch.created_at).total_seconds())

    @admin.display(description="active phases")
    def active_phases(self, batch: Batch) -> str:
        return getattr(batch, "running_phases", None) or ""

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        batch = self.get_object(request, object_id)
        if batch is not None:
            extra_context = {**(extra_context or {}), **self._sections(batch)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _sections(self, batch: Batch) -> dict[str, Any]:
        """What the batch page shows above its fields: graph, report, failed items, tasks."""
        failed = BatchItem.objects.filter(batch_id=batch.id, state="failed").order_by("seq")
        items_url = f"{_admin_url(BatchItem, 'changelist')}?batch__id__exact={batch.id}&state__exact=failed"
        return {
            "bos_graph": _svg(batch_graph(batch)),
            "bos_graph_url": reverse("batch-graph", args=[batch.id]),
            "bos_report": display.report_tables(batch.report),
            "bos_failed_items": display.failed_items_table(
                failed[: display.FAILED_ITEMS_SHOWN], failed.count(), items_url
            ),
            "bos_task_results": task_results_link(batch),
        }


# --- A batch's records: read-only --------------------------------------------------------------


@admin.register(BatchItem)
class BatchItemAdmin(ScopedAdmin):
    # Payloads are read through the API only (orchestrator.payloads; audited there).
    readonly_fields = _fields(BatchItem, "payload")
    error_fields = ("last_error",)
    fields = tuple(readonly_fields)
    list_display = ["key", "batch", "seq", "state", "attempts", "failed_phase", "error_class"]
    list_filter = ["state", "error_class"]
    list_select_related = ["batch__tenant"]
    search_fields = ["key", "batch__external_id"]


@admin.register(ItemResult)
class ItemResultAdmin(ScopedAdmin):
    tenant_field = "item__tenant_id"
    readonly_fields = _fields(ItemResult, "output")
    error_fields = ("error",)
    fields = tuple(readonly_fields)
    list_display = ["item", "phase_run", "ok", "error_class", "created_at"]
    list_filter = ["ok", "error_class"]
    list_select_related = ["item", "phase_run"]


@admin.register(PhaseRun)
class PhaseRunAdmin(ScopedAdmin):
    readonly_fields = _fields(PhaseRun)
    payload_fields, error_fields = ("output",), ("error", "compensation_error")

    def payloads_shown(self, obj: PhaseRun) -> tuple[Batch, list[str]] | None:
        return obj.batch, [f"phases.{obj.name}.output"]

    list_display = [
        "name",
        "batch",
        "mode",
        "state",
        "attempts",
        "items_done",
        "items_total",
        "items_failed",
        "started_at",
        "finished_at",
    ]
    list_filter = ["state", "mode"]
    list_select_related = ["batch__tenant"]
    search_fields = ["name", "batch__external_id"]


@admin.register(StateTransition)
class StateTransitionAdmin(ScopedAdmin):
    readonly_fields = _fields(StateTransition)
    list_display = ["batch", "seq", "from_state", "to_state", "phase", "at", "actor", "reason"]
    list_filter = ["to_state"]
    list_select_related = ["batch__tenant"]
    search_fields = ["batch__external_id", "actor"]


@admin.register(BatchSnapshot)
class BatchSnapshotAdmin(ScopedAdmin):
    readonly_fields = _fields(BatchSnapshot)
    list_display = ["batch", "taken_at", "state", "transitions_count", "items_failed"]
    list_select_related = ["batch__tenant"]


@admin.register(ChunkRun)
class ChunkRunAdmin(ScopedAdmin):
    tenant_field = "phase_run__tenant_id"
    readonly_fields = _fields(ChunkRun)
    list_display = ["phase_run", "start", "end", "attempt", "succeeded", "failed", "skipped", "finished_at"]
    list_select_related = ["phase_run"]


@admin.register(WorkLease)
class WorkLeaseAdmin(ScopedAdmin):
    tenant_field = "phase_run__tenant_id"
    readonly_fields = _fields(WorkLease)
    list_display = ["phase_run", "start", "end", "attempt", "owner", "heartbeat_at", "leased_until"]
    list_select_related = ["phase_run"]


@admin.register(DeferredTask)
class DeferredTaskAdmin(ScopedAdmin):
    tenant_field = "phase_run__tenant_id"
    readonly_fields = _fields(DeferredTask)
    list_display = ["phase_run", "kind", "start", "end", "attempt", "due_at", "reason"]
    list_select_related = ["phase_run"]


@admin.register(OutboxEvent)
class OutboxEventAdmin(ScopedAdmin):
    readonly_fields = _fields(OutboxEvent)
    error_fields = ("envelope", "last_error")
    list_display = ["id", "event_type", "tenant", "key", "created_at", "published_at", "attempts"]
    list_filter = ["event_type", "published_at"]
    list_select_related = ["tenant"]


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(ScopedAdmin):
    readonly_fields = _fields(ProcessedEvent)
    list_display = ["event_id", "event_type", "tenant", "batch", "processed_at"]
    list_filter = ["event_type"]
    list_select_related = ["tenant", "batch__tenant"]
    search_fields = ["event_id"]


@admin.register(ErrorFingerprint)
class ErrorFingerprintAdmin(ScopedAdmin):
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
    list_filter = ["error_class", "pipeline", ("tenant", ONLY_YOURS)]
    list_select_related = ["tenant"]
    search_fields = ["message", "error_type", "fingerprint"]
    readonly_fields = _fields(ErrorFingerprint)
    error_fields = ("message", "sample")


@admin.register(ErrorCount)
class ErrorCountAdmin(ScopedAdmin):
    tenant_field = "fingerprint__tenant_id"
    readonly_fields = _fields(ErrorCount)
    list_display = ["error", "hour", "count"]
    list_select_related = ["fingerprint"]

    @admin.display(description="error", ordering="fingerprint__error_type")
    def error(self, row: ErrorCount) -> str:
        return f"{row.fingerprint.error_type}: {row.fingerprint.message[:80]}"


@admin.register(Alert)
class AlertAdmin(ScopedAdmin):
    list_display = ["created_at", "kind", "message", "tenant", "acknowledged_at"]
    list_filter = ["kind", ("tenant", ONLY_YOURS)]
    list_select_related = ["tenant"]
    readonly_fields = _fields(Alert)
    error_fields = ("message",)


# --- Task results (django-celery-results): a batch's tasks by tenant, the rest superusers' ------


class TaskBatchFilter(admin.SimpleListFilter):
    """`?batch=<id>`: the task results of one batch (the batch page links here)."""

    title = "batch"
    parameter_name = "batch"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        chosen = self.value()
        return [(chosen, f"this batch ({chosen[:8]})")] if chosen else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        chosen = self.value()
        if not chosen:
            return queryset
        try:
            return queryset.filter(batch_link__batch_id=uuid.UUID(chosen))
        except ValueError:
            return queryset.none()


def task_results_link(batch: Batch) -> SafeString:
    """How many of the batch's tasks stored a result, by status, and a link to them."""
    counts = dict(
        task_results_of(batch)
        .order_by()
        .values_list("status")
        .annotate(n=Count("task_id"))
        .values_list("status", "n")
    )
    if not counts:
        return format_html(
            '<p class="bos-none">{}</p>',
            "No task result stored yet (per-batch phases and orchestration tasks store theirs; "
            "chunk tasks keep theirs in Redis).",
        )
    url = f"{_admin_url(TaskResult, 'changelist')}?batch={batch.id}"
    statuses = format_html_join(
        " ", "{} {}", ((display.state_badge(s), n) for s, n in sorted(counts.items()))
    )
    return format_html('<p><a href="{}">{} task results</a>: {}</p>', url, sum(counts.values()), statuses)


admin.site.unregister(TaskResult)
admin.site.unregister(GroupResult)  # groups and chords keep their results in Redis


@admin.register(TaskResult)
class TaskResultAdmin(ScopedAdmin):
    """Stored results of per-batch, maintenance and analytics tasks (orchestrator/task_results.py):
    a member reads those of their tenants' batches; tasks of no batch are superusers'."""

    tenant_field = "batch_link__batch__tenant_id"
    list_display = ["task", "task_name", "task_status", "batch", "worker", "date_done", "runtime"]
    list_filter = [TaskBatchFilter, "status", "task_name"]
    list_select_related = ["batch_link__batch"]
    search_fields = ["task_id", "task_name", "task_args"]
    ordering = ["-date_done"]
    date_hierarchy = "date_done"
    readonly_fields = ("task_status", "batch", *_fields(TaskResult, "id", "status"))
    payload_fields, error_fields = ("task_args", "task_kwargs", "result", "meta"), ("traceback",)
    fields = readonly_fields

    @admin.display(description="task id", ordering="task_id")
    def task(self, result: TaskResult) -> str:
        return display.short_id(result.task_id, 13)

    @admin.display(description="status", ordering="status")
    def task_status(self, result: TaskResult) -> str:
        return display.state_badge(result.status)

    @admin.display(description="batch")
    def batch(self, result: TaskResult) -> str:
        link = getattr(result, "batch_link", None)
        if link is None:
            return "—"
        return format_html(
            '<a href="{}">{}</a>',
            _admin_url(Batch, "change", link.batch_id),
            display.short_id(link.batch.external_id),
        )

    @admin.display(description="runtime")
    def runtime(self, result: TaskResult) -> str:
        # django-celery-results' model is untyped: its fields read through getattr.
        started = getattr(result, "date_started", None) or getattr(result, "date_created", None)
        done = getattr(result, "date_done", None)
        if started is None or done is None:
            return "—"
        return display.format_duration((done - started).total_seconds())


# --- Tenants and memberships ----------------------------------------------------------------


@admin.register(Tenant)
class TenantAdmin(ScopedAdmin):
    """A tenant's admins keep its settings (its name); only a superuser adds tenants."""

    tenant_field = "id"
    change_needs = Do.ADMINISTER
    superuser_adds = True
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The slug is the tenant's identity in keys and events: set once.
        return ["slug", "created_at"] if obj is not None else ["created_at"]


@admin.register(Membership)
class MembershipAdmin(ScopedAdmin):
    """Read by the tenant's admins; granted and changed by a superuser (or `create_api_user`)."""

    read_needs = Do.ADMINISTER
    superuser_adds = True
    superuser_deletes = True
    list_display = ["user", "tenant", "role"]
    list_filter = ["role", ("tenant", ONLY_YOURS)]
    list_select_related = ["user", "tenant"]
    search_fields = ["user__username", "tenant__slug"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access.is_superuser(request.user)


# --- Pipelines: platform-wide, read by members -----------------------------------------------


def _version_stats_table(pipeline: Pipeline, tenant_ids: list[int] | None) -> SafeString:
    rows = [
        (
            f"v{s.version}{' (active)' if s.active else ''}",
            ", ".join(f"{state} {n}" for state, n in sorted(s.counts.items()) if n) or "no batches",
            format_seconds(s.duration_p50),
            format_seconds(s.duration_p95),
        )
        for s in version_stats(pipeline.name, tenant_ids=tenant_ids)
    ]
    return format_html(
        "<table><tr><th>version</th><th>batches</th><th>p50</th><th>p95</th></tr>{}</table>",
        format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
    )


@admin.register(Pipeline)
class PipelineAdmin(ScopedAdmin):
    tenant_field = None
    members_read = True
    list_display = ["name", "active_version", "split", "description", "created_at"]
    list_select_related = ["active_version__pipeline"]
    readonly_fields = ["name", "description", "active_version", "split", "created_at"]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        pipeline = self.get_object(request, object_id)
        if pipeline is not None:
            # Counted over the reader's tenants' batches only (a superuser's: all).
            table = _version_stats_table(pipeline, access.tenant_ids(request.user))
            extra_context = {**(extra_context or {}), "version_stats": table}
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(PipelineVersion)
class PipelineVersionAdmin(ScopedAdmin):
    tenant_field = None
    members_read = True
    list_display = ["pipeline", "version", "checksum", "created_at"]
    list_filter = ["pipeline"]
    list_select_related = ["pipeline"]
    readonly_fields = ["graph", "pipeline", "version", "definition", "checksum", "created_at"]

    @admin.display(description="phases")
    def graph(self, version: PipelineVersion) -> str:
        return _svg(version_graph(version))


def breakers_page(request: HttpRequest) -> HttpResponse:
    """Admin page: every downstream dependency's circuit breaker (superusers: they are
    the service's, not a tenant's)."""
    if not access.is_superuser(request.user):
        raise PermissionDenied
    rows = [(b["dependency"], b["state"], b["failures"], b["opens_for_seconds"]) for b in breaker_states()]
    body = format_html(
        "<h1>Circuit breakers</h1><table><tr><th>dependency</th><th>state</th><th>failures in a row</th>"
        "<th>seconds until the probe</th></tr>{}</table>",
        format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
    )
    context = {**admin.site.each_context(request), "title": "Circuit breakers", "content": body}
    return TemplateResponse(request, "admin/bos_page.html", context)


class ConfigChangeForm(forms.ModelForm):  # type: ignore[type-arg]
    """A new version of the runtime configuration: one key, its value (JSON), why — a
    setting (for every tenant or one), a feature flag or a schedule of beat. Validated by
    the same functions as the API and `bos_config` (orchestrator.config.store)."""

    key = forms.CharField(
        help_text="a runtime setting (chunk_size), flag.<name> or schedule.<name>",
        widget=forms.TextInput(attrs={"size": 40}),
    )
    tenant = forms.SlugField(required=False, help_text="only for this tenant (settings of scope tenant)")
    value = forms.CharField(
        help_text='JSON: 250, 0.5, true; a flag {"enabled": true, "percent": 10, "tenants": ["acme"]}; '
        'a schedule {"every_seconds": 30, "enabled": true}'
    )
    reason = forms.CharField(widget=forms.Textarea)

    class Meta:
        model = ConfigVersion
        fields: list[str] = []

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "key" in data and "value" in data:
            data["value"] = config_registry.from_text(data["value"])
            try:
                config_store.validate_change(data["key"], data["value"], tenant=data.get("tenant") or None)
            except config_registry.ConfigInvalid as exc:
                raise forms.ValidationError(f"invalid_config: {exc} (rule: {exc.rule})") from exc
        return data


@admin.register(AuditRecord)
class AuditRecordAdmin(ScopedAdmin):
    """The audit log, read-only here as everywhere (a trigger refuses UPDATE and DELETE
    below the ORM): a tenant's admins read its records, superusers all of them."""

    read_needs = Do.ADMINISTER
    readonly_fields = _fields(AuditRecord)
    list_display = ["at", "actor", "ip", "action", "outcome", "object_type", "object_id", "tenant"]
    list_filter = ["outcome"]
    list_select_related = ["tenant"]
    search_fields = ["actor", "action", "object_id", "correlation_id"]
    ordering = ["-at", "-id"]


@admin.register(ConfigVersion)
class ConfigVersionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Runtime configuration: the platform's, so superusers only. Versions are never
    edited: Add makes a new one (through the same service as the API)."""

    form = ConfigChangeForm
    list_display = ["version", "at", "actor", "reason", "changes", "rollback_of"]
    readonly_fields = ["version", "at", "actor", "reason", "changes", "values", "rollback_of"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return tuple(self.readonly_fields) if obj else ("key", "tenant", "value", "reason")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return list(self.readonly_fields) if obj else []

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access.is_superuser(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access.is_superuser(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return access.is_superuser(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ConfigVersion, form: Any, change: bool) -> None:
        row = config_store.change(
            key=form.cleaned_data["key"],
            value=form.cleaned_data["value"],
            actor=f"user:{request.user.get_username()}",
            reason=form.cleaned_data["reason"],
            tenant=form.cleaned_data.get("tenant") or None,
        )
        obj.pk, obj.version, obj.at = row.pk, row.version, row.at
