"""Pipeline definitions: parsing, validation errors that name the phase, the DAG."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.pipelines import (
    PipelineDefinitionError,
    chunk_bounds,
    definition_checksum,
    parse_definition,
)

pytestmark = pytest.mark.unit
HANDLERS: dict[str, Any] = {"v": "per_item", "s": "per_item", "t": "per_item", "agg": "per_batch"}


def phase(
    name: str, handler: str = "v", mode: str = "per_item", after: list[str] | None = None
) -> dict[str, Any]:
    return {"name": name, "handler": handler, "mode": mode, "after": after or []}


def diamond() -> dict[str, Any]:
    return {
        "phases": [
            phase("validate"),
            phase("spell", "s", after=["validate"]),
            phase("stats", "t", after=["validate"]),
            phase("aggregate", "agg", "per_batch", ["spell", "stats"]),
        ]
    }


def test_diamond_plans_into_three_levels() -> None:
    plan = parse_definition(diamond(), HANDLERS)
    assert plan.levels() == [["validate"], ["spell", "stats"], ["aggregate"]]
    assert [p.name for p in plan.phases] == ["validate", "spell", "stats", "aggregate"]
    assert plan.dependencies["aggregate"] == ("spell", "stats")


def test_phases_listed_out_of_order_are_sorted_topologically() -> None:
    raw = diamond()
    raw["phases"].reverse()
    plan = parse_definition(raw, HANDLERS)
    assert [p.name for p in plan.phases][0] == "validate"
    assert [p.name for p in plan.phases][-1] == "aggregate"


@pytest.mark.parametrize(
    ("mutate", "code", "where"),
    [
        (lambda d: d["phases"][1].update(handler="nope"), "unknown_handler", "spell"),
        (lambda d: d["phases"][1].update(after=["ghost"]), "missing_dependency", "spell"),
        (lambda d: d["phases"][0].update(after=["aggregate"]), "cycle", None),
        (lambda d: d["phases"][2].update(name="spell"), "duplicate_phase", "spell"),
        (lambda d: d["phases"][3].update(mode="per_item"), "handler_mode_mismatch", "aggregate"),
        (lambda d: d["phases"][1].update(mode="sideways"), "invalid_definition", "spell"),
        (lambda d: d["phases"][1].update(surprise=1), "invalid_definition", "spell"),
        (lambda d: d.update(phases=[]), "invalid_definition", None),
    ],
)
def test_bad_definitions_are_refused_naming_the_problem(mutate: Any, code: str, where: str | None) -> None:
    raw = diamond()
    mutate(raw)
    with pytest.raises(PipelineDefinitionError) as err:
        parse_definition(raw, HANDLERS)
    assert err.value.code == code
    if where:
        assert err.value.phase == where
        assert where in str(err.value)


def test_cycle_error_names_a_phase_on_the_cycle() -> None:
    raw = diamond()
    raw["phases"][0]["after"] = ["aggregate"]
    with pytest.raises(PipelineDefinitionError) as err:
        parse_definition(raw, HANDLERS)
    assert err.value.phase in {"validate", "spell", "stats", "aggregate"}
    assert "cycle" in str(err.value)


def test_non_object_definition_is_refused() -> None:
    with pytest.raises(PipelineDefinitionError, match="JSON object"):
        parse_definition(["phases"], HANDLERS)


def test_checksum_ignores_key_order() -> None:
    assert definition_checksum({"a": 1, "b": [1, 2]}) == definition_checksum({"b": [1, 2], "a": 1})


@pytest.mark.parametrize(
    ("total", "size", "expected"),
    [
        (0, 100, []),
        (5, 100, [(0, 5)]),
        (250, 100, [(0, 100), (100, 200), (200, 250)]),
        (4, 2, [(0, 2), (2, 4)]),
    ],
)
def test_chunk_bounds_cover_every_item_once(total: int, size: int, expected: list[tuple[int, int]]) -> None:
    assert chunk_bounds(total, size) == expected
