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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Mode = Literal["per_item", "per_batch"]
PHASE_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"


class PipelineDefinitionError(ValueError):
    """A pipeline definition that cannot be run; `phase` names where, when known."""

    def __init__(self, code: str, message: str, phase: str | None = None) -> None:
        super().__init__(f"phase {phase!r}: {message}" if phase else message)
        self.code = code
        self.phase = phase


class _PhaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=PHASE_NAME_PATTERN)
    handler: str = Field(min_length=1, max_length=200)
    mode: Mode
    after: list[str] = Field(default_factory=list)
    chunk_size: int | None = Field(default=None, ge=1, le=10_000)
    options: dict[str, Any] = Field(default_factory=dict)


class _DefinitionModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    phases: list[_PhaseModel] = Field(min_length=1)


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    handler: str
    mode: Mode
    after: tuple[str, ...]
    chunk_size: int | None
    options: Mapping[str, Any]


@dataclass(frozen=True)
class PipelinePlan:
    """A validated definition: its phases in a topological order, and their edges."""

    description: str
    phases: tuple[PhaseSpec, ...]

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


def parse_definition(raw: Any, handlers: Mapping[str, Mode]) -> PipelinePlan:
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
        if phase.handler not in handlers:
            raise PipelineDefinitionError("unknown_handler", f"unknown handler {phase.handler!r}", phase.name)
        if handlers[phase.handler] != phase.mode:
            raise PipelineDefinitionError(
                "handler_mode_mismatch",
                f"handler {phase.handler!r} is {handlers[phase.handler]}, but the phase is {phase.mode}",
                phase.name,
            )
        for dep in phase.after:
            if dep not in seen:
                raise PipelineDefinitionError(
                    "missing_dependency", f"runs after unknown phase {dep!r}", phase.name
                )
            if dep == phase.name:
                raise PipelineDefinitionError("cycle", "runs after itself", phase.name)

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
        phases=tuple(
            PhaseSpec(
                name=n,
                handler=by_name[n].handler,
                mode=by_name[n].mode,
                after=tuple(by_name[n].after),
                chunk_size=by_name[n].chunk_size,
                options=dict(by_name[n].options),
            )
            for n in order
        ),
    )


def _depth(name: str, graph: Mapping[str, list[str]]) -> int:
    deps = graph[name]
    return 0 if not deps else 1 + max(_depth(d, graph) for d in deps)


def definition_checksum(raw: Mapping[str, Any]) -> str:
    """A stable fingerprint of a definition, so publishing the same one twice is a no-op."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def chunk_bounds(total: int, size: int) -> list[tuple[int, int]]:
    """Half-open item-sequence ranges [start, end) covering `total` items."""
    return [(start, min(start + size, total)) for start in range(0, total, size)]
