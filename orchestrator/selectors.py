"""Selectors: reads of the domain, shared by the API, admin, commands and services."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import F, QuerySet

from orchestrator import access
from orchestrator.errors import InvalidRequest
from orchestrator.graphs import PhaseView, pipeline_mermaid, pipeline_svg
from orchestrator.handlers import handler_modes
from orchestrator.models import Batch, ItemResult, PhaseRun, Pipeline, PipelineVersion, Tenant
from orchestrator.pipelines import PipelinePlan, choose_version, parse_definition


def resolve_pipeline_version(pipeline: str, version: int | None, external_id: str = "") -> PipelineVersion:
    """The version a new batch runs: the one asked for, else the pipeline's A/B split
    (sticky by external id), else its active version."""
    qs = PipelineVersion.objects.select_related("pipeline").filter(pipeline__name=pipeline)
    if version is None:
        split = Pipeline.objects.filter(name=pipeline).values_list("split", flat=True).first()
        if split:
            version = choose_version(split, f"{pipeline}:{external_id}")
    if version is None:
        found = qs.filter(pipeline__active_version_id=F("id")).first()
    else:
        found = qs.filter(version=version).first()
    if found is None:
        if not qs.exists():
            raise InvalidRequest("unknown_pipeline", f"pipeline {pipeline!r} does not exist")
        raise InvalidRequest("unknown_pipeline_version", f"pipeline {pipeline!r} has no version {version}")
    return found


_PLANS: dict[tuple[int, str], PipelinePlan] = {}


def pipeline_plan(version: PipelineVersion) -> PipelinePlan:
    """The validated plan of a version; versions are immutable, so plans are cached."""
    key = (version.id, version.checksum)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = parse_definition(version.definition, handler_modes())
    return plan


def tenant_ids_for(user: AbstractBaseUser | AnonymousUser) -> list[int]:
    """The ids of the tenants a user may read (orchestrator.access): every tenant for a superuser."""
    ids = access.tenant_ids(user)
    return list(Tenant.objects.values_list("id", flat=True)) if ids is None else ids


def batches_for(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Batch]:
    """The batches a user may see: those of their tenants (all of them for a superuser)."""
    return access.scope(Batch.objects.all(), user, "tenant_id").select_related(
        "tenant", "pipeline_version__pipeline"
    )


def batch_phases(batch: Batch) -> QuerySet[PhaseRun]:
    return batch.phases.order_by("position")


def iter_item_results(phase_run_id: int, page: int = 2000) -> Iterator[tuple[str, bool, Any]]:
    """(item key, ok, output) for every item a per-item phase recorded, `page` rows a query.

    Keyset pages (not a server-side cursor): a small batch costs one query, a large one
    a query per page, and no cursor is held open between pages.
    """
    last = -1
    while True:
        rows = list(
            ItemResult.objects.filter(phase_run_id=phase_run_id, item__seq__gt=last)
            .order_by("item__seq")
            .values_list("item__seq", "item__key", "ok", "output")[:page]
        )
        for _, key, ok, output in rows:
            yield key, ok, output
        if len(rows) < page:
            return
        last = rows[-1][0]


def batch_progress(batch: Batch) -> dict[str, Any]:
    """Done and total units of work over the batch's phases (items for per-item phases)."""
    done = total = 0
    for phase in batch.phases.all():
        size = phase.items_total if phase.mode == "per_item" else 1
        total += size
        if phase.state in ("succeeded", "skipped"):
            done += size  # a skipped phase has nothing left to do
        elif phase.mode == "per_item":
            done += phase.items_done
    return {"done": done, "total": total, "fraction": (done / total) if total else 1.0}


def batch_graph(batch: Batch, *, as_mermaid: bool = False) -> str:
    """The batch's pipeline drawn with each phase's live state and progress."""
    views: dict[str, PhaseView] = {}
    for phase in batch.phases.all():
        note = phase.skip_reason
        child = (
            # Each attempt of the phase has its own child: show the newest.
            phase.child_batches.only("id", "state")
            .order_by(F("parent_attempt").desc(nulls_last=True))
            .first()
            if phase.mode == "sub_pipeline"
            else None
        )
        if child is not None:
            note = f"child batch {str(child.id)[:8]} · {child.state}"
        if phase.compensation_state:
            note = f"compensation {phase.compensation_state}"
        views[phase.name] = PhaseView(
            state=phase.state,
            done=phase.items_done if phase.mode == "per_item" else None,
            total=phase.items_total if phase.mode == "per_item" else None,
            failed=phase.items_failed,
            seconds=phase.duration_seconds,
            note=note,
        )
    plan = pipeline_plan(batch.pipeline_version)
    title = f"{batch.pipeline_version} · batch {batch.external_id} · {batch.state}"
    render = pipeline_mermaid if as_mermaid else pipeline_svg
    return render(plan, views, title=title)


def version_graph(version: PipelineVersion, *, as_mermaid: bool = False) -> str:
    """A pipeline version's definition, drawn."""
    render = pipeline_mermaid if as_mermaid else pipeline_svg
    return render(pipeline_plan(version), None, title=str(version))


def tenant_id_of(slug: str) -> int | None:
    """The id of the tenant named `slug`, or None when there is none."""
    return Tenant.objects.filter(slug=slug).values_list("id", flat=True).first()
