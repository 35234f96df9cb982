"""Input and output serializers of the REST API, kept separate (input validates, output shows)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from orchestrator import access
from orchestrator.access import Do
from orchestrator.insights.projection import SlaState
from orchestrator.insights.sla import sla_summary
from orchestrator.kafka.messages import TENANT_PATTERN
from orchestrator.masking import mask_error, mask_value
from orchestrator.models import Batch, BatchItem, PhaseRun, Pipeline, PipelineVersion, StateTransition
from orchestrator.states import ItemState, reported_item_state


class ItemInSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=200, help_text="unique within the batch")
    payload = serializers.JSONField(
        required=False, allow_null=True, help_text="the item's data for the pipeline's handlers"
    )


class BatchCreateInSerializer(serializers.Serializer):
    tenant = serializers.RegexField(TENANT_PATTERN, help_text="a tenant where you are an operator or admin")
    external_id = serializers.CharField(
        max_length=200, help_text="your id of the batch; the same one again returns the existing batch"
    )
    pipeline = serializers.CharField(max_length=100, help_text="a pipeline's name (GET /api/v1/pipelines/)")
    pipeline_version = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, help_text="null: the active version (or its A/B split)"
    )
    priority = serializers.IntegerField(min_value=0, max_value=9, default=5, help_text="0-9, 9 highest")
    deadline = serializers.DateTimeField(required=False, allow_null=True, help_text="the batch's SLA")
    metadata = serializers.DictField(
        required=False, default=dict, help_text="free-form; phases' `when:` conditions read it"
    )
    correlation_id = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="else the request's X-Correlation-ID"
    )
    items = ItemInSerializer(many=True, allow_empty=False, help_text="at least one item")

    def validate_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = [i["key"] for i in items]
        if len(set(keys)) != len(keys):
            raise serializers.ValidationError("item keys must be unique within a batch")
        return items


class ActionInSerializer(serializers.Serializer):
    """The body of an operator action (cancel, retry, retry-items, rollback): optional."""

    reason = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        default="",
        help_text="why, in the batch's history and the audit log (optional; an empty body is fine)",
    )


def shows_payloads(context: Mapping[str, Any], tenant_id: int) -> bool:
    """The masking rule (docs/masking.md): operators, admins and superusers see payloads,
    metadata, reports and outputs in clear; viewers masked. The caller comes from the
    serializer's context (`request`); without one, masked. Errors are masked for everybody."""
    request = context.get("request")
    return request is not None and access.may(request.user, Do.OPERATE, tenant_id)


class ErrorOutSerializer(serializers.Serializer):
    """Every error answer of the API (docs/api-errors.md)."""

    code = serializers.CharField(help_text="stable, for programs: `not_found`, `invalid_transition`, ...")
    message = serializers.CharField(help_text="for people")


class PhaseOutSerializer(serializers.ModelSerializer):
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    queue_wait_seconds = serializers.FloatField(read_only=True, allow_null=True)
    items_per_second = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = PhaseRun
        fields = [
            "name",
            "handler",
            "mode",
            "state",
            "started_at",
            "finished_at",
            "attempts",
            "items_total",
            "items_done",
            "items_failed",
            "chunks_total",
            "chunks_done",
            "duration_seconds",
            "queue_wait_seconds",
            "items_per_second",
            "skip_reason",
            "retries",
            "next_retry_at",
            "waiting_on",
            "compensation_state",
            "error",
        ]

    def to_representation(self, instance: PhaseRun) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        data["error"] = mask_error(data["error"])
        return data


class BatchOutSerializer(serializers.ModelSerializer):
    tenant = serializers.CharField(source="tenant.slug")
    pipeline = serializers.CharField(source="pipeline_version.pipeline.name")
    pipeline_version = serializers.IntegerField(source="pipeline_version.version")

    class Meta:
        model = Batch
        fields = [
            "id",
            "external_id",
            "tenant",
            "pipeline",
            "pipeline_version",
            "state",
            "priority",
            "deadline",
            "items_total",
            "items_succeeded",
            "items_failed",
            "created_at",
            "updated_at",
            "finished_at",
        ]


class SlaOutSerializer(serializers.Serializer):
    """A batch's SLA: its effective deadline, and where it stands against it."""

    deadline = serializers.DateTimeField(
        help_text="The batch's deadline, else its pipeline's sla.target_seconds after its creation."
    )
    state = serializers.ChoiceField(choices=[s.value for s in SlaState])
    projected_finish_at = serializers.DateTimeField(
        allow_null=True, help_text="The latest projection; the real finish once the batch ended."
    )
    at_risk_at = serializers.DateTimeField(allow_null=True, help_text="When batch.sla_at_risk was raised.")
    breached_at = serializers.DateTimeField(allow_null=True, help_text="When batch.sla_breached was raised.")


class BatchDetailOutSerializer(BatchOutSerializer):
    phases = PhaseOutSerializer(many=True)
    active_phases = serializers.SerializerMethodField()
    sla = serializers.SerializerMethodField()

    class Meta(BatchOutSerializer.Meta):
        fields = [
            *BatchOutSerializer.Meta.fields,
            "metadata",
            "correlation_id",
            "started_at",
            "phases",
            "active_phases",
            "sla",
            "report",
            "error",
        ]

    def to_representation(self, instance: Batch) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        data["error"] = mask_error(data["error"])
        if not shows_payloads(self.context, instance.tenant_id):
            data["metadata"], data["report"] = mask_value(data["metadata"]), mask_value(data["report"])
        return data

    def get_active_phases(self, batch: Batch) -> list[str]:
        return [p.name for p in batch.phases.all() if p.state == "running"]

    @extend_schema_field(SlaOutSerializer(allow_null=True))
    def get_sla(self, batch: Batch) -> dict[str, Any] | None:
        """Null for a batch with no deadline (its own, or its pipeline's target)."""
        summary = sla_summary(batch)
        return SlaOutSerializer(summary).data if summary is not None else None


class TransitionOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = StateTransition
        fields = ["seq", "from_state", "to_state", "at", "reason", "actor", "phase"]


class ItemOutSerializer(serializers.ModelSerializer):
    payload = serializers.SerializerMethodField()
    state = serializers.SerializerMethodField()

    class Meta:
        model = BatchItem
        fields = ["seq", "key", "state", "attempts", "failed_phase", "last_error", "error_class", "payload"]

    def get_payload(self, item: BatchItem) -> Any:
        return item.payload

    def to_representation(self, instance: BatchItem) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        data["last_error"] = mask_error(data["last_error"])
        if not self._shows_payloads(instance.tenant_id):
            data["payload"] = mask_value(data["payload"])
        return data

    def _shows_payloads(self, tenant_id: int) -> bool:
        # Once per page: a page's items are of one batch, so of one tenant.
        cache: dict[int, bool] = self.root.__dict__.setdefault("_bos_shows_payloads", {})
        if tenant_id not in cache:
            cache[tenant_id] = shows_payloads(self.context, tenant_id)
        return cache[tenant_id]

    @extend_schema_field(serializers.ChoiceField(choices=[s.value for s in ItemState]))
    def get_state(self, item: BatchItem) -> str:
        batch_state = self.context.get("batch_state", "")
        return reported_item_state(item.state, batch_state)


class PipelineVersionOutSerializer(serializers.ModelSerializer):
    pipeline = serializers.CharField(source="pipeline.name")
    active = serializers.SerializerMethodField()
    weight = serializers.SerializerMethodField()
    stats = serializers.SerializerMethodField()

    class Meta:
        model = PipelineVersion
        fields = ["pipeline", "version", "definition", "checksum", "created_at", "active", "weight", "stats"]

    def get_active(self, version: PipelineVersion) -> bool:
        return version.pipeline.active_version_id == version.id

    def get_weight(self, version: PipelineVersion) -> int | None:
        """Its weight in the pipeline's A/B split, if there is one."""
        return next((p["weight"] for p in version.pipeline.split if p["version"] == version.version), None)

    def get_stats(self, version: PipelineVersion) -> dict[str, Any] | None:
        """Batches by state, batch and phase durations (p50/p95) of this version."""
        stats: dict[int, dict[str, Any]] = self.context.get("stats", {})
        return stats.get(version.version)


class PipelineOutSerializer(serializers.ModelSerializer):
    active_version = serializers.IntegerField(source="active_version.version", allow_null=True)
    definition = serializers.JSONField(source="active_version.definition", allow_null=True)

    class Meta:
        model = Pipeline
        fields = ["name", "description", "active_version", "split", "definition", "created_at"]
