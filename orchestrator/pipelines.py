"""Pipeline definitions and planning, as pure code.

A definition is JSON: a name and a list of phases, each naming a handler, its mode
(`per_item`: fanned out over the items in chunks; `per_batch`: one task for the batch)
and the phases it runs `after`. `parse_definition` validates it strictly and builds the
phase DAG with `graphlib`; a bad definition raises `PipelineDefinitionError` naming the
phase and the problem. No Django here.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.conditions import ConditionError, check_condition

Mode = Literal["per_item", "per_batch", "sub_pipeline"]
HandlerMode = Literal["per_item", "per_batch"]
Trigger = Literal["all_succeeded", "none_failed"]
PHASE_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"


class PipelineDefinitionError(ValueError):
    """A pipeline definition that cannot be run; `phase` names where, when known."""

    def __init__(self, code: str, message: str, phase: str | None = None) -> None:
        super().__init__(f"phase {phase!r}: {message}" if phase else message)
        self.code = code
        self.phase = phase


class _RetryModel(BaseModel):
    """How a per-item phase retries items that failed transiently (defaults: settings)."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int | None = Field(default=None, ge=1, le=50)
    base: float | None = Field(default=None, gt=0, le=86_400)
    # Waits longer than BOS_MAX_COUNTDOWN_SECONDS are stored and sent by beat.
    cap: float | None = Field(default=None, gt=0, le=86_400)
    jitter: float | None = Field(default=None, ge=0, le=1)


class _PhaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=PHASE_NAME_PATTERN)
    handler: str | None = Field(default=None, min_length=1, max_length=200)
    mode: Mode
    after: list[str] = Field(default_factory=list)
    chunk_size: int | None = Field(default=None, ge=1, le=10_000)
    options: dict[str, Any] = Field(default_factory=dict)
    when: str | None = Field(default=None, min_length=1, max_length=1000)
    trigger: Trigger = "all_succeeded"
    compensate: str | None = Field(default=None, min_length=1, max_length=200)
    pipeline: str | None = Field(default=None, min_length=1, max_length=100)
    retry: _RetryModel | None = None


class _SlaModel(BaseModel):
    """A pipeline's service level: how long a batch may take from its creation."""

    model_config = ConfigDict(extra="forbid")

    # Up to 30 days: a batch's effective deadline is `created_at + target_seconds`.
    target_seconds: float = Field(gt=0, le=30 * 86_400)


class _DefinitionModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    on_failure: Literal["stop", "rollback"] = "stop"
    sla: _SlaModel | None = None
    phases: list[_PhaseModel] = Field(min_length=1)


@dataclass(frozen=True)
class PhaseSpec:
    """One phase of a plan.

    `when`: a condition over the batch; false means the phase is skipped. `trigger`:
    what a phase needs of the phases it runs after (`all_succeeded`: a skipped one skips
    it too; `none_failed`: skipped ones are fine). `compensate`: the per-batch handler
    that undoes the phase on rollback. `pipeline`: for `mode: sub_pipeline`, the
    pipeline run as a child batch.
    """

    name: str
    handler: str
    mode: Mode
    after: tuple[str, ...]
    chunk_size: int | None
    options: Mapping[str, Any]
    when: str | None = None
    trigger: Trigger = "all_succeeded"
    compensate: str | None = None
    pipeline: str | None = None
    retry: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelinePlan:
    """A validated definition: its phases in a topological order, and their edges."""

    description: str
    phases: tuple[PhaseSpec, ...]
    # "rollback": a batch that fails runs its compensations at once.
    on_failure: Literal["stop", "rollback"] = "stop"
    # `sla.target_seconds`: a batch without a deadline must finish this long after creation.
    sla_target_seconds: float | None = None

    @property
    def dependencies(self) -> dict[str, tuple[str, ...]]:
        return {p.name: p.after for p in self.phases}

    def phase(self, name: str) -> PhaseSpec:
        for spec in self.phases:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def levels(self) -> list[list[str]]:
        """Phases grouped by the step at which they can start (parallel within a step)."""
        sorter = graphlib.TopologicalSorter(self.dependencies)
        sorter.prepare()
        result = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            result.append(ready)
            sorter.done(*ready)
        return result


def _first_error_phase(raw: Any, loc: tuple[Any, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "phases" and isinstance(loc[1], int):
        try:
            name = raw["phases"][loc[1]].get("name")
        except (KeyError, IndexError, TypeError, AttributeError):
            return None
        return str(name) if name is not None else f"#{loc[1] + 1}"
    return None


def parse_definition(raw: Any, handlers: Mapping[str, HandlerMode]) -> PipelinePlan:
    """Validate `raw` against the schema, the known `handlers` and the DAG rules."""
    if not isinstance(raw, Mapping):
        raise PipelineDefinitionError("invalid_definition", "a definition must be a JSON object")
    try:
        model = _DefinitionModel.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise PipelineDefinitionError(
            "invalid_definition", f"{where}: {err['msg']}", _first_error_phase(raw, err["loc"])
        ) from exc

    names = [p.name for p in model.phases]
    seen: set[str] = set()
    for phase in model.phases:
        if phase.name in seen:
            raise PipelineDefinitionError("duplicate_phase", "phase name used twice", phase.name)
        seen.add(phase.name)
    for phase in model.phases:
        _check_phase(phase, handlers, seen)

    graph = {p.name: p.after for p in model.phases}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        raise PipelineDefinitionError("cycle", f"dependency cycle {' -> '.join(cycle)}", cycle[0]) from exc

    by_name = {p.name: p for p in model.phases}
    # Topological order, ties kept in definition order, so plans read like their source.
    position = {name: i for i, name in enumerate(names)}
    order.sort(key=lambda n: (_depth(n, graph), position[n]))
    return PipelinePlan(
        description=model.description,
        on_failure=model.on_failure,
        sla_target_seconds=model.sla.target_seconds if model.sla is not None else None,
        phases=tuple(
            PhaseSpec(
                name=n,
                handler=by_name[n].handler or "",
                mode=by_name[n].mode,
                after=tuple(by_name[n].after),
                chunk_size=by_name[n].chunk_size,
                options=dict(by_name[n].options),
                when=by_name[n].when,
                trigger=by_name[n].trigger,
                compensate=by_name[n].compensate,
                pipeline=by_name[n].pipeline,
                retry=_retry_of(by_name[n]),
            )
            for n in order
        ),
    )


def _retry_of(phase: _PhaseModel) -> dict[str, Any]:
    return phase.retry.model_dump(exclude_none=True) if phase.retry is not None else {}


def _check_phase(phase: _PhaseModel, handlers: Mapping[str, HandlerMode], names: set[str]) -> None:
    def refuse(code: str, message: str) -> PipelineDefinitionError:
        return PipelineDefinitionError(code, message, phase.name)

    if phase.mode == "sub_pipeline":
        if not phase.pipeline:
            raise refuse("missing_pipeline", "a sub_pipeline phase names the `pipeline` it runs")
        if phase.handler:
            raise refuse("invalid_definition", "a sub_pipeline phase has no handler")
    else:
        if phase.pipeline:
            raise refuse("invalid_definition", "only a sub_pipeline phase names a `pipeline`")
        if not phase.handler:
            raise refuse("invalid_definition", f"a {phase.mode} phase names its `handler`")
        if phase.handler not in handlers:
            raise refuse("unknown_handler", f"unknown handler {phase.handler!r}")
        if handlers[phase.handler] != phase.mode:
            raise refuse(
                "handler_mode_mismatch",
                f"handler {phase.handler!r} is {handlers[phase.handler]}, but the phase is {phase.mode}",
            )
    if phase.compensate is not None:
        if phase.compensate not in handlers:
            raise refuse("unknown_handler", f"unknown compensation handler {phase.compensate!r}")
        if handlers[phase.compensate] != "per_batch":
            raise refuse(
                "handler_mode_mismatch", f"compensation handler {phase.compensate!r} must be per_batch"
            )
    if phase.when is not None:
        try:
            check_condition(phase.when)
        except ConditionError as exc:
            raise refuse("invalid_condition", f"when: {exc}") from exc
    for dep in phase.after:
        if dep not in names:
            raise refuse("missing_dependency", f"runs after unknown phase {dep!r}")
        if dep == phase.name:
            raise refuse("cycle", "runs after itself")


def _depth(name: str, graph: Mapping[str, list[str]]) -> int:
    deps = graph[name]
    return 0 if not deps else 1 + max(_depth(d, graph) for d in deps)


def definition_checksum(raw: Mapping[str, Any]) -> str:
    """A stable fingerprint of a definition, so publishing the same one twice is a no-op."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def choose_version(split: Sequence[Mapping[str, int]], key: str) -> int:
    """The version a new batch gets from an A/B `split` ([{"version", "weight"}, ...]).

    Sticky: the same key (pipeline and external id) always lands on the same version,
    so a batch submitted again, or retried, runs what it ran before.
    """
    total = sum(part["weight"] for part in split)
    if total <= 0:
        raise ValueError("an A/B split needs a positive total weight")
    point = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % total
    for part in split:
        point -= part["weight"]
        if point < 0:
            return part["version"]
    raise AssertionError("unreachable")  # pragma: no cover


def chunk_bounds(total: int, size: int) -> list[tuple[int, int]]:
    """Half-open item-sequence ranges [start, end) covering `total` items."""
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def missing_ranges(recorded: Iterable[tuple[int, int]], total: int, size: int) -> list[tuple[int, int]]:
    """The ranges of [0, total) that no recorded range covers, cut on the chunk grid.

    A chunk stopped early (a soft time limit) records [start, k); what is left starts at
    k. Cutting gaps on the grid of `size` keeps every range that may be sent again
    starting where an earlier task of the same items started, so the chunk record's
    uniqueness on (phase, start) keeps two tasks from recording the same items.
    """
    gaps: list[tuple[int, int]] = []
    position = 0
    for start, end in sorted(recorded):
        if start > position:
            gaps.append((position, start))
        position = max(position, end)
    if position < total:
        gaps.append((position, total))
    ranges: list[tuple[int, int]] = []
    for start, end in gaps:
        cut = start
        while cut < end:
            grid = (cut // size + 1) * size
            ranges.append((cut, min(grid, end)))
            cut = min(grid, end)
    return ranges
