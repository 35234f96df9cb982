"""Pipeline templates: whole-pipeline and phase-group expansion, parameters, errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.pipelines import PipelineDefinitionError, parse_definition
from orchestrator.templates import (
    MAX_GROUP_DEPTH,
    ParamSpec,
    Template,
    expand,
    load_templates,
    parse_template,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = ROOT / "pipelines" / "templates"
ESSAY_HANDLERS: dict[str, Any] = {
    "essays.validate": "per_item",
    "essays.spellcheck": "per_item",
    "essays.text_stats": "per_item",
    "essays.aggregate": "per_batch",
}
# The shape of pipelines/essay-analysis.json as the template was written against (the
# live file may grow phases, e.g. a conditional `grading`, that this template does not make).
ESSAY_ANALYSIS: dict[str, Any] = {
    "description": "Validate essays, then spellcheck them and measure readability in parallel, "
    "then write the batch report.",
    "phases": [
        {
            "name": "validate",
            "handler": "essays.validate",
            "mode": "per_item",
            "options": {"min_words": 3, "max_chars": 50000},
        },
        {"name": "spellcheck", "handler": "essays.spellcheck", "mode": "per_item", "after": ["validate"]},
        {"name": "text_stats", "handler": "essays.text_stats", "mode": "per_item", "after": ["validate"]},
        {
            "name": "aggregate",
            "handler": "essays.aggregate",
            "mode": "per_batch",
            "after": ["spellcheck", "text_stats"],
        },
    ],
}
ESSAY_PARAMS: dict[str, Any] = {
    "validator": "essays.validate",
    "validator_options": {"min_words": 3, "max_chars": 50000},
    "analyses": [
        {"name": "spellcheck", "handler": "essays.spellcheck"},
        {"name": "text_stats", "handler": "essays.text_stats"},
    ],
    "aggregator": "essays.aggregate",
}


@pytest.fixture(scope="module")
def shipped() -> dict[str, Template]:
    return load_templates(TEMPLATES_DIR)


def group(name: str, phases: list[dict[str, Any]], **params: ParamSpec) -> Template:
    return Template(name=name, description=name, params=params, body={"phases": phases}, kind="group")


def phase(
    name: str, handler: str = "h", mode: str = "per_item", after: list[str] | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = {"name": name, "handler": handler, "mode": mode}
    if after is not None:
        result["after"] = after
    return result


def refused(raw: dict[str, Any], templates: dict[str, Template], code: str) -> PipelineDefinitionError:
    with pytest.raises(PipelineDefinitionError) as info:
        expand(raw, templates)
    assert info.value.code == code, str(info.value)
    return info.value


# --- shipped templates -------------------------------------------------------------------


def test_all_shipped_templates_load_with_described_params(shipped: dict[str, Template]) -> None:
    assert set(shipped) == {"fan-out-analysis", "map-reduce", "validate-then"}
    assert {n: t.kind for n, t in shipped.items()} == {
        "fan-out-analysis": "pipeline",
        "map-reduce": "pipeline",
        "validate-then": "group",
    }
    for template in shipped.values():
        assert template.description
        assert template.params
        assert all(spec.description for spec in template.params.values()), template.name
    assert set(shipped["fan-out-analysis"].params) == {
        "validator",
        "validator_options",
        "analyses",
        "aggregator",
    }
    assert set(shipped["map-reduce"].params) == {"mapper", "chunk_size", "reducer"}
    assert set(shipped["validate-then"].params) == {"handler", "options"}
    assert shipped["map-reduce"].params["chunk_size"] == ParamSpec(
        type="integer", required=False, description=shipped["map-reduce"].params["chunk_size"].description
    )


def test_fan_out_analysis_reproduces_essay_analysis(shipped: dict[str, Template]) -> None:
    essay = ESSAY_ANALYSIS
    raw = {"template": "fan-out-analysis", "params": ESSAY_PARAMS, "description": essay["description"]}

    expanded = expand(raw, shipped)

    assert expanded == essay
    plan = parse_definition(expanded, ESSAY_HANDLERS)
    assert plan.levels() == [["validate"], ["spellcheck", "text_stats"], ["aggregate"]]
    assert plan.phase("validate").options == {"min_words": 3, "max_chars": 50000}


def test_fan_out_phases_and_after_match_essay_analysis_without_options(shipped: dict[str, Template]) -> None:
    essay = ESSAY_ANALYSIS
    params = {k: v for k, v in ESSAY_PARAMS.items() if k != "validator_options"}

    expanded = expand({"template": "fan-out-analysis", "params": params}, shipped)

    assert [(p["name"], p["handler"], p["mode"], p.get("after", [])) for p in expanded["phases"]] == [
        (p["name"], p["handler"], p["mode"], p.get("after", [])) for p in essay["phases"]
    ]
    assert "options" not in expanded["phases"][0]  # an unset optional parameter drops its key
    assert expanded["description"] == shipped["fan-out-analysis"].description


def test_fan_out_with_five_analyses_runs_them_all_in_parallel(shipped: dict[str, Template]) -> None:
    names = ["a1", "a2", "a3", "a4", "a5"]
    params = {
        "validator": "v",
        "analyses": [{"name": n, "handler": f"h.{n}"} for n in names],
        "aggregator": "agg",
    }

    expanded = expand({"template": "fan-out-analysis", "params": params}, shipped)

    assert [p["name"] for p in expanded["phases"]] == ["validate", *names, "aggregate"]
    assert all(p["after"] == ["validate"] for p in expanded["phases"][1:6])
    assert expanded["phases"][-1]["after"] == names
    handlers = {"v": "per_item", "agg": "per_batch", **{f"h.{n}": "per_item" for n in names}}
    assert parse_definition(expanded, handlers).levels() == [["validate"], names, ["aggregate"]]


def test_map_reduce_keeps_integer_chunk_size_and_drops_it_when_unset(shipped: dict[str, Template]) -> None:
    with_chunks = expand(
        {"template": "map-reduce", "params": {"mapper": "m", "reducer": "r", "chunk_size": 25}}, shipped
    )
    without = expand({"template": "map-reduce", "params": {"mapper": "m", "reducer": "r"}}, shipped)

    assert with_chunks["phases"] == [
        {"name": "map", "handler": "m", "mode": "per_item", "chunk_size": 25},
        {"name": "reduce", "handler": "r", "mode": "per_batch", "after": ["map"]},
    ]
    assert "chunk_size" not in without["phases"][0]
    plan = parse_definition(with_chunks, {"m": "per_item", "r": "per_batch"})
    assert plan.levels() == [["map"], ["reduce"]]
    assert plan.phase("map").chunk_size == 25


# --- phase groups ------------------------------------------------------------------------


def test_group_prefixes_names_wires_entries_and_resolves_the_group_name(shipped: dict[str, Template]) -> None:
    raw = {
        "description": "check, then two analyses, then a report",
        "phases": [
            phase("fetch"),
            {
                "use": "validate-then",
                "as": "check",
                "params": {"handler": "essays.validate", "options": {"min_words": 3}},
                "after": ["fetch"],
            },
            phase("spellcheck", "essays.spellcheck", after=["check"]),
            phase("text_stats", "essays.text_stats", after=["check", "fetch"]),
            phase("aggregate", "essays.aggregate", "per_batch", ["spellcheck", "text_stats"]),
        ],
    }

    expanded = expand(raw, shipped)

    assert expanded["phases"][1] == {
        "name": "check-validate",
        "handler": "essays.validate",
        "mode": "per_item",
        "options": {"min_words": 3},
        "after": ["fetch"],
    }
    assert expanded["phases"][2]["after"] == ["check-validate"]
    assert expanded["phases"][3]["after"] == ["check-validate", "fetch"]
    plan = parse_definition(expanded, {**ESSAY_HANDLERS, "h": "per_item"})
    assert plan.levels() == [["fetch"], ["check-validate"], ["spellcheck", "text_stats"], ["aggregate"]]


def test_group_with_internal_edges_rewrites_them_and_exposes_every_exit() -> None:
    diamond = group(
        "diamond",
        [
            phase("start", "${first}"),
            phase("left", after=["start"]),
            phase("right", after=["start"]),
        ],
        first=ParamSpec(type="handler"),
    )
    raw = {
        "phases": [
            phase("root"),
            {"use": "diamond", "as": "d", "params": {"first": "h"}, "after": ["root"]},
            phase("end", "agg", "per_batch", ["d"]),
        ]
    }

    expanded = expand(raw, {"diamond": diamond})

    assert [(p["name"], p["after"]) for p in expanded["phases"][1:]] == [
        ("d-start", ["root"]),
        ("d-left", ["d-start"]),
        ("d-right", ["d-start"]),
        ("end", ["d-left", "d-right"]),
    ]
    plan = parse_definition(expanded, {"h": "per_item", "agg": "per_batch"})
    assert plan.levels() == [["root"], ["d-start"], ["d-left", "d-right"], ["end"]]


def test_groups_can_use_groups_and_pass_parameters_down(shipped: dict[str, Template]) -> None:
    outer = group(
        "checked-map",
        [
            {"use": "validate-then", "as": "in", "params": {"handler": "${validator}"}},
            phase("map", "${mapper}", after=["in"]),
        ],
        validator=ParamSpec(type="handler"),
        mapper=ParamSpec(type="handler"),
    )
    templates = {**shipped, "checked-map": outer}
    raw = {
        "phases": [
            {"use": "checked-map", "as": "cm", "params": {"validator": "v", "mapper": "m"}},
            phase("after-all", "agg", "per_batch", ["cm"]),
        ]
    }

    expanded = expand(raw, templates)

    assert [(p["name"], p["handler"], p.get("after")) for p in expanded["phases"]] == [
        ("cm-in-validate", "v", None),
        ("cm-map", "m", ["cm-in-validate"]),
        ("after-all", "agg", ["cm-map"]),
    ]


def test_pipeline_template_may_use_a_group(shipped: dict[str, Template]) -> None:
    pipeline = Template(
        name="checked-reduce",
        description="validate then reduce",
        params={"reducer": ParamSpec(type="handler")},
        body={
            "description": "reduce with ${reducer}",
            "phases": [
                {"use": "validate-then", "as": "check", "params": {"handler": "v"}},
                phase("reduce", "${reducer}", "per_batch", ["check"]),
            ],
        },
        kind="pipeline",
    )

    expanded = expand(
        {"template": "checked-reduce", "params": {"reducer": "r"}}, {**shipped, "checked-reduce": pipeline}
    )

    assert expanded["description"] == "reduce with r"
    assert expanded["phases"][1]["after"] == ["check-validate"]


def test_definition_without_templates_passes_through_as_a_deep_copy() -> None:
    essay = json.loads((ROOT / "pipelines" / "essay-analysis.json").read_text())  # whatever it holds now
    original = copy.deepcopy(essay)

    expanded = expand(essay, {})

    assert expanded == original
    expanded["phases"][0]["options"]["min_words"] = 99
    assert essay == original


def test_placeholders_in_plain_definitions_and_given_params_are_left_alone(
    shipped: dict[str, Template],
) -> None:
    raw = {"phases": [phase("x", "${not_a_template}")]}
    assert expand(raw, shipped) == raw

    expanded = expand({"template": "map-reduce", "params": {"mapper": "${reducer}", "reducer": "r"}}, shipped)
    assert expanded["phases"][0]["handler"] == "${reducer}"


def test_embedded_references_substitute_text_and_integers() -> None:
    template = Template(
        name="t",
        description="d",
        params={"ns": ParamSpec(type="string"), "n": ParamSpec(type="integer", required=False, default=5)},
        body={"phases": [phase("p", "${ns}.work") | {"options": {"label": "${ns}-${n}", "n": "${n}"}}]},
        kind="pipeline",
    )

    expanded = expand({"template": "t", "params": {"ns": "shop"}}, {"t": template})

    assert expanded["phases"][0]["handler"] == "shop.work"
    assert expanded["phases"][0]["options"] == {"label": "shop-5", "n": 5}


# --- errors ------------------------------------------------------------------------------


def test_unknown_template_names_it(shipped: dict[str, Template]) -> None:
    err = refused({"template": "nope"}, shipped, "unknown_template")
    assert "'nope'" in str(err)

    err = refused({"phases": [{"use": "nope", "as": "prep"}]}, shipped, "unknown_template")
    assert err.phase == "prep" and "'nope'" in str(err)


def test_using_a_template_in_the_wrong_form_is_an_unknown_template(shipped: dict[str, Template]) -> None:
    err = refused({"template": "validate-then", "params": {"handler": "v"}}, shipped, "unknown_template")
    assert "group" in str(err)

    err = refused({"phases": [{"use": "map-reduce", "as": "mr"}]}, shipped, "unknown_template")
    assert err.phase == "mr"


def test_missing_parameter_names_template_parameter_and_where(shipped: dict[str, Template]) -> None:
    err = refused(
        {"template": "fan-out-analysis", "params": {"validator": "v", "analyses": []}},
        shipped,
        "missing_parameter",
    )
    assert "'fan-out-analysis'" in str(err) and "'aggregator'" in str(err)
    assert err.phase == "aggregate"

    err = refused(
        {"template": "fan-out-analysis", "params": {"validator": "v", "aggregator": "a"}},
        shipped,
        "missing_parameter",
    )
    assert "'analyses'" in str(err) and "'analyses[*]'" in str(err)
    assert err.phase == "aggregate"

    err = refused({"phases": [{"use": "validate-then", "as": "prep"}]}, shipped, "missing_parameter")
    assert err.phase == "prep"
    assert "'validate-then'" in str(err) and "'handler'" in str(err)


def test_optional_parameter_used_inside_a_string_is_missing_when_unset() -> None:
    template = group(
        "g",
        [phase("p", "x.${suffix}")],
        suffix=ParamSpec(type="string", required=False),
    )

    err = refused({"phases": [{"use": "g", "as": "grp"}]}, {"g": template}, "missing_parameter")

    assert err.phase == "grp" and "'suffix'" in str(err) and "'p'" in str(err)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"validator": 3}, "'validator'"),
        ({"validator": ""}, "'validator'"),
        ({"analyses": {"name": "x"}}, "'analyses'"),
        ({"validator_options": [1]}, "'validator_options'"),
    ],
)
def test_invalid_parameter_type_is_refused(
    shipped: dict[str, Template], params: dict[str, Any], named: str
) -> None:
    full = ESSAY_PARAMS | params
    err = refused({"template": "fan-out-analysis", "params": full}, shipped, "invalid_parameter")
    assert named in str(err)


def test_integer_parameter_refuses_booleans_and_strings(shipped: dict[str, Template]) -> None:
    for bad in (True, "10"):
        err = refused(
            {"template": "map-reduce", "params": {"mapper": "m", "reducer": "r", "chunk_size": bad}},
            shipped,
            "invalid_parameter",
        )
        assert "'chunk_size'" in str(err) and "integer" in str(err)
        assert err.phase == "map"  # the template phase that uses it


def test_fan_out_elements_must_be_objects_with_the_keys_read(shipped: dict[str, Template]) -> None:
    params = ESSAY_PARAMS | {"analyses": [{"name": "spellcheck"}]}
    err = refused({"template": "fan-out-analysis", "params": params}, shipped, "invalid_parameter")
    assert err.phase == "analyses[0]" and "'handler'" in str(err)

    params = ESSAY_PARAMS | {"analyses": ["spellcheck"]}
    err = refused({"template": "fan-out-analysis", "params": params}, shipped, "invalid_parameter")
    assert "analyses[0]" in str(err)


def test_unknown_parameter_is_refused(shipped: dict[str, Template]) -> None:
    err = refused(
        {"template": "map-reduce", "params": {"mapper": "m", "reducer": "r", "mappr": "x"}},
        shipped,
        "unknown_parameter",
    )
    assert "'mappr'" in str(err) and "'map-reduce'" in str(err)

    err = refused(
        {"phases": [{"use": "validate-then", "as": "check", "params": {"handler": "v", "extra": 1}}]},
        shipped,
        "unknown_parameter",
    )
    assert err.phase == "check" and "'extra'" in str(err)


def test_group_using_itself_is_recursion() -> None:
    loop = group("loop", [{"use": "loop", "as": "again"}])

    err = refused({"phases": [{"use": "loop", "as": "top"}]}, {"loop": loop}, "template_recursion")

    assert "loop -> loop" in str(err)
    assert err.phase == "top-again"


def test_groups_using_each_other_is_recursion() -> None:
    templates = {
        "a": group("a", [{"use": "b", "as": "b"}]),
        "b": group("b", [phase("x"), {"use": "a", "as": "a", "after": ["x"]}]),
    }

    err = refused({"phases": [{"use": "a", "as": "top"}]}, templates, "template_recursion")

    assert "a -> b -> a" in str(err)


def test_groups_nested_deeper_than_the_limit_are_refused() -> None:
    def chain(depth: int) -> dict[str, Template]:
        templates = {f"g{depth}": group(f"g{depth}", [phase("leaf")])}
        for level in range(depth - 1, 0, -1):
            templates[f"g{level}"] = group(f"g{level}", [{"use": f"g{level + 1}", "as": "n"}])
        return templates

    ok = expand({"phases": [{"use": "g1", "as": "top"}]}, chain(MAX_GROUP_DEPTH))
    assert [p["name"] for p in ok["phases"]] == ["top-" + "n-" * (MAX_GROUP_DEPTH - 1) + "leaf"]

    err = refused({"phases": [{"use": "g1", "as": "top"}]}, chain(MAX_GROUP_DEPTH + 1), "template_recursion")
    assert str(MAX_GROUP_DEPTH) in str(err)


def test_name_clash_after_prefixing_is_a_duplicate_phase(shipped: dict[str, Template]) -> None:
    raw = {
        "phases": [
            {"use": "validate-then", "as": "check", "params": {"handler": "v"}},
            phase("check-validate"),
        ]
    }
    err = refused(raw, shipped, "duplicate_phase")
    assert err.phase == "check-validate"


def test_group_name_clashing_with_a_phase_or_group_is_a_duplicate_phase(shipped: dict[str, Template]) -> None:
    use = {"use": "validate-then", "as": "check", "params": {"handler": "v"}}

    err = refused({"phases": [use, phase("check")]}, shipped, "duplicate_phase")
    assert err.phase == "check"

    err = refused({"phases": [use, dict(use)]}, shipped, "duplicate_phase")
    assert err.phase == "check"


def test_fan_out_with_repeated_names_is_a_duplicate_phase(shipped: dict[str, Template]) -> None:
    params = ESSAY_PARAMS | {"analyses": [{"name": "same", "handler": "a"}, {"name": "same", "handler": "b"}]}

    err = refused({"template": "fan-out-analysis", "params": params}, shipped, "duplicate_phase")

    assert err.phase == "same"


def test_malformed_entries_are_invalid_definitions(shipped: dict[str, Template]) -> None:
    refused({"template": "map-reduce", "phases": []}, shipped, "invalid_definition")
    err = refused(
        {"phases": [{"use": "validate-then", "params": {"handler": "v"}}]}, shipped, "invalid_definition"
    )
    assert "as" in str(err)
    refused(
        {"phases": [{"use": "validate-then", "as": "c", "params": {"handler": "v"}, "when": "x"}]},
        shipped,
        "invalid_definition",
    )


# --- template files ----------------------------------------------------------------------


def write(folder: Path, name: str, content: Any) -> None:
    (folder / f"{name}.json").write_text(content if isinstance(content, str) else json.dumps(content))


def minimal(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "group",
        "description": "one phase",
        "params": {"handler": {"type": "handler", "description": "the handler"}},
        "body": {"phases": [phase("only", "${handler}")]},
    } | overrides


def test_load_templates_reads_a_folder_and_tolerates_a_missing_one(tmp_path: Path) -> None:
    write(tmp_path, "one", minimal())
    assert list(load_templates(tmp_path)) == ["one"]
    assert load_templates(tmp_path / "absent") == {}


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        minimal(kind="stage"),
        minimal(name="other"),
        minimal(params={"handler": {"type": "handler", "required": True, "default": "x"}}),
        minimal(params={"handler": {"type": "integer", "default": "x"}}),
        minimal(body={"phases": [phase("only", "${undeclared}")]}),
        minimal(body={"phases": [phase("only", "${handler")]}),
        minimal(body={"phases": []}),
        minimal(
            params={"items": {"type": "list"}},
            body={"phases": [phase("only", "x.${items}")]},
        ),
        minimal(body={"phases": [{"for_each": "${handler}", "phase": phase("x")}]}),
    ],
)
def test_bad_template_files_are_invalid_templates(tmp_path: Path, content: Any) -> None:
    write(tmp_path, "bad", content)
    with pytest.raises(PipelineDefinitionError) as info:
        load_templates(tmp_path)
    assert info.value.code == "invalid_template"
    assert "bad.json" in str(info.value)


def test_loading_groups_that_use_each_other_is_recursion(tmp_path: Path) -> None:
    write(tmp_path, "a", minimal(body={"phases": [{"use": "b", "as": "b"}]}, params={}))
    write(tmp_path, "b", minimal(body={"phases": [{"use": "a", "as": "a"}]}, params={}))
    with pytest.raises(PipelineDefinitionError) as info:
        load_templates(tmp_path)
    assert info.value.code == "template_recursion"


def test_parse_template_fills_in_parameter_defaults() -> None:
    template = parse_template(
        minimal(params={"n": {"type": "integer", "default": 3}, "handler": {"type": "handler"}}), "t"
    )
    assert template.params["n"] == ParamSpec(type="integer", required=False, default=3)
    assert template.params["handler"].required is True
