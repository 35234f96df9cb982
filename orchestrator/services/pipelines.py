"""Publishing pipeline definitions as immutable, validated versions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Max

from orchestrator.errors import InvalidRequest
from orchestrator.handlers import handler_modes
from orchestrator.models import Pipeline, PipelineVersion
from orchestrator.pipelines import PipelineDefinitionError, definition_checksum, parse_definition


@dataclass(frozen=True)
class PublishResult:
    version: PipelineVersion
    created: bool


def pipeline_publish(*, name: str, definition: Any, activate: bool = True) -> PublishResult:
    """Validate `definition` and store it as the pipeline's next version.

    Publishing a definition identical to the latest version creates nothing. Batches
    keep the version they started with, whatever is published later.
    """
    try:
        plan = parse_definition(definition, handler_modes())
    except PipelineDefinitionError as exc:
        raise InvalidRequest(exc.code, str(exc), phase=exc.phase) from exc
    checksum = definition_checksum(definition)
    with transaction.atomic():
        pipeline, _ = Pipeline.objects.select_for_update().get_or_create(name=name)
        latest = pipeline.versions.order_by("-version").first()
        if latest is not None and latest.checksum == checksum:
            created, version = False, latest
        else:
            number = (pipeline.versions.aggregate(n=Max("version"))["n"] or 0) + 1
            version = PipelineVersion.objects.create(
                pipeline=pipeline, version=number, definition=definition, checksum=checksum
            )
            created = True
        pipeline.description = plan.description
        if activate:
            pipeline.active_version = version
        pipeline.save(update_fields=["description", "active_version"])
    return PublishResult(version, created)


def pipeline_publish_file(path: Path, *, activate: bool = True) -> PublishResult:
    """Publish `<name>.json` as pipeline `<name>`."""
    try:
        definition = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidRequest("invalid_definition", f"{path}: not JSON ({exc})") from exc
    return pipeline_publish(name=path.stem, definition=definition, activate=activate)
