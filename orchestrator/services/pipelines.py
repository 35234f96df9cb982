"""Publishing pipeline definitions as immutable, validated versions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Max

from bos_project.settings.environment import BASE_DIR
from orchestrator.errors import InvalidRequest
from orchestrator.handlers import handler_modes
from orchestrator.models import Pipeline, PipelineVersion
from orchestrator.pipelines import PipelineDefinitionError, definition_checksum, parse_definition
from orchestrator.templates import Template, expand, load_templates

TEMPLATES_DIR = BASE_DIR / "pipelines" / "templates"


@dataclass(frozen=True)
class PublishResult:
    version: PipelineVersion
    created: bool


@lru_cache(maxsize=1)
def _templates() -> dict[str, Template]:
    return load_templates(TEMPLATES_DIR)


def pipeline_publish(*, name: str, definition: Any, activate: bool = True) -> PublishResult:
    """Expand templates in `definition`, validate it, store it as the next version.

    What is stored is the plain, expanded definition.

    Publishing a definition identical to the latest version creates nothing. Batches
    keep the version they started with, whatever is published later.
    """
    try:
        definition = expand(definition, _templates())
        plan = parse_definition(definition, handler_modes())
    except PipelineDefinitionError as exc:
        raise InvalidRequest(exc.code, str(exc), phase=exc.phase) from exc
    for spec in plan.phases:
        if spec.mode != "sub_pipeline":
            continue
        if spec.pipeline == name:
            raise InvalidRequest(
                "sub_pipeline_cycle", f"phase {spec.name!r}: runs its own pipeline", phase=spec.name
            )
        if not Pipeline.objects.filter(name=spec.pipeline, active_version__isnull=False).exists():
            raise InvalidRequest(
                "unknown_pipeline",
                f"phase {spec.name!r}: runs unknown pipeline {spec.pipeline!r}",
                phase=spec.name,
            )
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


def pipeline_set_split(*, name: str, split: list[dict[str, int]]) -> Pipeline:
    """Split new batches of a pipeline between versions by weight (sticky by external id).

    `split` is [{"version": 3, "weight": 70}, {"version": 4, "weight": 30}]; an empty
    list ends the split (new batches get the active version again).
    """
    pipeline = Pipeline.objects.filter(name=name).first()
    if pipeline is None:
        raise InvalidRequest("unknown_pipeline", f"pipeline {name!r} does not exist")
    known = set(pipeline.versions.values_list("version", flat=True))
    clean: list[dict[str, int]] = []
    for part in split:
        version, weight = part.get("version"), part.get("weight")
        if not isinstance(version, int) or version not in known:
            raise InvalidRequest("unknown_pipeline_version", f"pipeline {name!r} has no version {version}")
        if not isinstance(weight, int) or weight <= 0:
            raise InvalidRequest("invalid_split", f"version {version}: weight must be a positive integer")
        clean.append({"version": version, "weight": weight})
    if len({p["version"] for p in clean}) != len(clean):
        raise InvalidRequest("invalid_split", "a version appears twice in the split")
    pipeline.split = clean
    pipeline.save(update_fields=["split"])
    return pipeline
