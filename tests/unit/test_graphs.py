"""Pipeline graphs: Mermaid text and a standalone SVG of a plan and a batch's progress."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from orchestrator.graphs import STATES, PhaseView, pipeline_mermaid, pipeline_svg
from orchestrator.pipelines import PipelinePlan, parse_definition

pytestmark = pytest.mark.unit
HANDLERS: dict[str, Any] = {"v": "per_item", "agg": "per_batch", "<script>x</script>": "per_item"}
SVG = "{http://www.w3.org/2000/svg}"
SCRIPT = "<script>alert(1)</script>"


def phase(name: str, after: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    spec = {"name": name, "handler": "v", "mode": "per_item", "after": after or []}
    spec.update(extra)
    return spec


def plan_of(*phases: dict[str, Any]) -> PipelinePlan:
    return parse_definition({"phases": list(phases)}, HANDLERS)


def diamond(when: str | None = None) -> PipelinePlan:
    extra = {"when": when} if when else {}
    return plan_of(
        phase("validate"),
        phase("spell-check", ["validate"], **extra),
        phase("stats", ["validate"]),
        phase("aggregate", ["spell-check", "stats"], handler="agg", mode="per_batch"),
    )


def fan_out(width: int = 10) -> PipelinePlan:
    shards = [phase(f"shard-{i}", ["split"]) for i in range(width)]
    merge = phase("merge", [s["name"] for s in shards], handler="agg", mode="per_batch")
    return plan_of(phase("split"), *shards, merge)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 -- our own output, under test


def svg_root(plan: PipelinePlan, views: dict[str, PhaseView] | None = None, **kw: Any) -> ET.Element:
    return parse(pipeline_svg(plan, views, **kw))


def node_groups(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-phase", ""): g for g in root.iter(f"{SVG}g") if g.get("class") == "node"}


def edge_paths(root: ET.Element) -> list[ET.Element]:
    return [p for p in root.iter(f"{SVG}path") if (p.get("class") or "").startswith("edge")]


def node_rect(group: ET.Element) -> tuple[float, float, float, float]:
    rect = group.find(f"{SVG}rect")
    assert rect is not None
    return tuple(float(rect.get(k, "0")) for k in ("x", "y", "width", "height"))  # type: ignore[return-value]


def mermaid_ids(text: str) -> dict[str, str]:
    """Phase name -> node id, read back from the node definitions."""
    return {
        m.group(2): m.group(1)
        for m in re.finditer(r"^    (\S+?)\[\[?\"<b>(.+?)</b>", text, flags=re.MULTILINE)
    }


# --------------------------------------------------------------------------- Mermaid


def test_mermaid_has_a_node_per_phase_and_an_edge_per_dependency() -> None:
    plan = diamond()
    text = pipeline_mermaid(plan)
    assert text.splitlines()[0] == "flowchart LR"
    ids = mermaid_ids(text)
    assert set(ids) == {"validate", "spell-check", "stats", "aggregate"}
    edges = re.findall(r"^    (\S+) -(?:-|\.-)>(?:\|[^|]*\|)? (\S+)$", text, flags=re.MULTILINE)
    expected = {(ids[dep], ids[p.name]) for p in plan.phases for dep in p.after}
    assert set(edges) == expected and len(edges) == len(expected)
    assert "essays" not in text and "<br/>v<br/>per_item" in text  # handler and mode on the label
    assert "<br/>agg<br/>per_batch" in text


def test_mermaid_without_views_has_no_state_classes() -> None:
    text = pipeline_mermaid(diamond())
    assert "classDef" not in text
    assert not re.search(r"^\s*class ", text, flags=re.MULTILINE)


def test_mermaid_applies_state_classes_from_views() -> None:
    views = {
        "validate": PhaseView("succeeded", done=50, total=50),
        "spell-check": PhaseView("running", done=30, total=50, failed=2),
        "stats": PhaseView("failed"),
        "nonexistent": PhaseView("running"),
    }
    text = pipeline_mermaid(diamond(), views)
    ids = mermaid_ids(text)
    for state in STATES:
        assert re.search(
            rf"^    classDef {state} fill:#[0-9a-f]{{6}},stroke:#[0-9a-f]{{6}}", text, re.MULTILINE
        )
    classes = dict(re.findall(r"^    class (\S+) (\w+)$", text, flags=re.MULTILINE))
    by_node = {node: state for nodes, state in classes.items() for node in nodes.split(",")}
    assert by_node == {
        ids["validate"]: "succeeded",
        ids["spell-check"]: "running",
        ids["stats"]: "failed",
        ids["aggregate"]: "pending",  # no view: pending
    }
    assert "running · 30/50 · 2 failed" in text
    assert "succeeded · 50/50" in text
    assert "nonexistent" not in text


def test_mermaid_state_colours_are_distinct_and_skipped_is_dashed() -> None:
    text = pipeline_mermaid(diamond(), {})
    defs = dict(re.findall(r"^    classDef (\w+) (.+)$", text, flags=re.MULTILINE))
    assert set(defs) == set(STATES)
    assert len({d.split(",")[1] for d in defs.values()}) == len(STATES)  # strokes differ
    assert "stroke-dasharray" in defs["skipped"]


def test_mermaid_labels_the_conditional_edge_escaped_and_truncated() -> None:
    condition = "metadata.get('x') == \"<b>\" and items.failed == 0 and batch.priority >= 8"
    text = pipeline_mermaid(diamond(condition))
    ids = mermaid_ids(text)
    (edge,) = [line for line in text.splitlines() if line.endswith(f" {ids['spell-check']}")]
    assert edge.startswith(f'    {ids["validate"]} -.->|"when ')
    label = edge.split('|"')[1].split('"|')[0]
    assert "<" not in label and ">" not in label and '"' not in label
    assert "#lt;b#gt;" in label and "#quot;" in label
    assert (
        label.endswith("…")
        and len(label.replace("#quot;", '"').replace("#lt;", "<").replace("#gt;", ">")) <= 46
    )
    # The other edges are plain.
    assert f"{ids['validate']} --> {ids['stats']}" in text


def test_mermaid_ids_are_safe_identifiers_and_unique() -> None:
    plan = plan_of(phase("a-b"), phase("a_b", ["a-b"]), phase("end", ["a_b"]))
    text = pipeline_mermaid(plan)
    ids = mermaid_ids(text)
    assert len(set(ids.values())) == 3
    for node_id in ids.values():
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", node_id)
        assert node_id != "end"
    assert f"{ids['a-b']} --> {ids['a_b']}" in text


def test_mermaid_escapes_labels_and_title() -> None:
    plan = plan_of(phase("p", handler="<script>x</script>"))
    text = pipeline_mermaid(plan, {"p": PhaseView("failed", note=f'bad "{SCRIPT}"')}, title=f"t {SCRIPT}")
    assert "<script" not in text
    assert "#lt;script#gt;x#lt;/script#gt;" in text
    assert "#quot;" in text
    assert text.startswith('---\ntitle: "t \\u003cscript\\u003e')


def test_mermaid_draws_a_sub_pipeline_with_its_pipeline() -> None:
    plan = plan_of(
        phase("a"), {"name": "child", "mode": "sub_pipeline", "pipeline": "essays", "after": ["a"]}
    )
    text = pipeline_mermaid(plan, {"child": PhaseView("running", note="child batch 1a2b…")})
    assert '[["<b>child</b><br/>↳ essays<br/>sub_pipeline<br/>running<br/>child batch 1a2b…"]]' in text


# --------------------------------------------------------------------------- SVG


def test_svg_parses_with_a_group_per_phase_and_a_path_per_edge() -> None:
    plan = diamond("items.failed == 0")
    root = svg_root(plan, title="essays")
    assert root.tag == f"{SVG}svg"
    assert set(node_groups(root)) == {p.name for p in plan.phases}
    paths = edge_paths(root)
    pairs = {(p.get("data-from"), p.get("data-to")) for p in paths}
    assert len(paths) == 4 and pairs == {(dep, p.name) for p in plan.phases for dep in p.after}
    dashed = {p.get("data-to") for p in paths if p.get("stroke-dasharray")}
    assert dashed == {"spell-check"}
    assert all(p.get("marker-end") == "url(#bos-graph-arrow)" for p in paths)
    assert root.find(f".//{SVG}marker[@id='bos-graph-arrow']") is not None


def test_svg_is_self_contained() -> None:
    text = pipeline_svg(diamond(), {"validate": PhaseView("running", 1, 2)}, title="t")
    assert "<script" not in text and "javascript" not in text.lower()
    assert "@import" not in text and "@font-face" not in text
    assert re.findall(r"https?://[^\"']+", text) == ["http://www.w3.org/2000/svg"]
    root = parse(text)
    width, height = float(root.get("width", "0")), float(root.get("height", "0"))
    assert root.get("viewBox") == f"0 0 {width:g} {height:g}"
    assert "sans-serif" in (root.get("font-family") or "")


def test_svg_escapes_every_text() -> None:
    plan = plan_of(
        phase("a", options={"x": SCRIPT}),
        phase("b", ["a"], handler="<script>x</script>", when=f"metadata.get('{SCRIPT}') == 1"),
        {"name": "c", "mode": "sub_pipeline", "pipeline": SCRIPT, "after": ["b"]},
    )
    views = {"a": PhaseView(state=SCRIPT, note=SCRIPT)}
    text = pipeline_svg(plan, views, title=SCRIPT)
    assert "<script" not in text
    assert "&lt;script&gt;" in text
    root = parse(text)
    texts = " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))
    assert "<script>x</script>" in texts  # the handler, shown as text
    assert "when metadata.get('<scr" in texts  # the condition label, cut to fit


def test_svg_colours_nodes_by_state_and_draws_the_legend() -> None:
    views = {
        "validate": PhaseView("succeeded"),
        "stats": PhaseView("failed"),
        "spell-check": PhaseView("bogus"),
    }
    root = svg_root(diamond(), views)
    groups = node_groups(root)
    fills = {name: g.find(f"{SVG}rect").get("fill") for name, g in groups.items()}  # type: ignore[union-attr]
    assert fills["validate"] != fills["stats"] != fills["aggregate"]
    assert fills["spell-check"] == fills["aggregate"]  # an unknown state is drawn pending
    assert groups["spell-check"].get("data-state") == "bogus"
    legend = root.find(f".//{SVG}g[@class='legend']")
    assert legend is not None
    assert [t.text for t in legend.iter(f"{SVG}text")] == list(STATES)


def test_svg_without_views_draws_the_plain_definition() -> None:
    root = svg_root(diamond())
    groups = node_groups(root)
    assert {g.get("data-state") for g in groups.values()} == {""}
    assert len({g.find(f"{SVG}rect").get("fill") for g in groups.values()}) == 1  # type: ignore[union-attr]
    assert root.find(f".//{SVG}g[@class='legend']") is None
    assert not [r for r in root.iter(f"{SVG}rect") if r.get("class") == "progress-fill"]


@pytest.mark.parametrize(
    ("done", "total", "failed"), [(0, 50, 0), (30, 50, 0), (10, 50, 2), (50, 50, 50), (7, 3, 0)]
)
def test_svg_progress_bar_is_proportional(done: int, total: int, failed: int) -> None:
    plan = plan_of(phase("a"), phase("b", ["a"], handler="agg", mode="per_batch"))
    views = {
        "a": PhaseView("running", done=done, total=total, failed=failed),
        "b": PhaseView("pending", 1, 2),
    }
    groups = node_groups(svg_root(plan, views))
    bars = {r.get("class"): r for r in groups["a"].iter(f"{SVG}rect") if r.get("class")}
    track, fill = (
        float(bars["progress-track"].get("width", "0")),
        float(bars["progress-fill"].get("width", "0")),
    )
    assert track > 100
    assert fill == pytest.approx(track * min(done, total) / total, abs=0.1)
    if failed:
        assert float(bars["progress-failed"].get("width", "0")) == pytest.approx(
            track * failed / total, abs=0.1
        )
    else:
        assert "progress-failed" not in bars
    x, _y, w, _h = node_rect(groups["a"])
    assert (
        x < float(bars["progress-track"].get("x", "0"))
        and float(bars["progress-track"].get("x", "0")) + track < x + w
    )
    # No bar for a per-batch phase, nor without a total.
    assert not [r for r in groups["b"].iter(f"{SVG}rect") if r.get("class")]


def test_svg_fan_out_of_ten_fits_without_overlaps() -> None:
    plan = fan_out(10)
    views = {f"shard-{i}": PhaseView("running", done=i, total=10, note="n") for i in range(10)}
    root = svg_root(plan, views, title="fan-out")
    height, width = float(root.get("height", "0")), float(root.get("width", "0"))
    rects = {name: node_rect(g) for name, g in node_groups(root).items()}
    assert len(rects) == 12
    columns: dict[float, list[tuple[float, float]]] = {}
    for x, y, w, h in rects.values():
        assert x >= 0 and x + w <= width and y >= 0 and y + h <= height
        columns.setdefault(x, []).append((y, y + h))
    assert sorted(len(c) for c in columns.values()) == [1, 1, 10]
    for spans in columns.values():
        spans.sort()
        for (_top, bottom), (next_top, _bottom) in zip(spans, spans[1:], strict=False):
            assert bottom < next_top
    assert len(edge_paths(root)) == 20
    # The single phases are centred on the column.
    split, column = rects["split"], columns[rects["shard-0"][0]]
    assert split[1] + split[3] / 2 == pytest.approx((column[0][0] + column[-1][1]) / 2, abs=1)


def test_svg_columns_follow_the_levels() -> None:
    plan = diamond()
    rects = {name: node_rect(g) for name, g in node_groups(svg_root(plan)).items()}
    xs = [[rects[name][0] for name in level] for level in plan.levels()]
    assert [len(set(level)) for level in xs] == [1, 1, 1]
    assert xs[0][0] < xs[1][0] < xs[2][0]


def test_svg_edge_that_skips_a_column_goes_around_it() -> None:
    plan = plan_of(phase("a"), phase("b", ["a"]), phase("c", ["a", "b"]))
    root = svg_root(plan)
    rects = {name: node_rect(g) for name, g in node_groups(root).items()}
    (path,) = [p for p in edge_paths(root) if p.get("data-from") == "a" and p.get("data-to") == "c"]
    ys = [float(v) for v in re.findall(r"[\d.]+,([\d.]+)", path.get("d", ""))]
    _x, b_top, _w, b_h = rects["b"]
    assert min(ys) < b_top or max(ys) > b_top + b_h
    assert float(root.get("height", "0")) >= max(ys)


@pytest.mark.parametrize(
    "plan",
    [
        plan_of(phase("only")),
        plan_of(*[phase(f"p{i}", [f"p{i - 1}"] if i else []) for i in range(12)]),
        fan_out(10),
        diamond("items.ok > 0"),
    ],
    ids=["single", "chain", "fan-out", "diamond"],
)
@pytest.mark.parametrize(
    "views", [None, {}, {"ghost": PhaseView("failed")}], ids=["none", "empty", "unknown"]
)
def test_any_shape_renders(plan: PipelinePlan, views: dict[str, PhaseView] | None) -> None:
    root = svg_root(plan, views, title="shape")
    assert len(node_groups(root)) == len(plan.phases)
    assert len(edge_paths(root)) == sum(len(p.after) for p in plan.phases)
    text = pipeline_mermaid(plan, views)
    assert len(mermaid_ids(text)) == len(plan.phases)
    assert "ghost" not in text and "ghost" not in ET.tostring(root, encoding="unicode")


def test_svg_truncates_long_text_inside_the_node() -> None:
    name = "x" + "-very-long" * 6
    root = svg_root(plan_of(phase(name)), {name: PhaseView("running", note="n" * 300)})
    group = node_groups(root)[name]
    texts = ["".join(t.itertext()) for t in group.iter(f"{SVG}text")]
    assert any(t.endswith("…") and t.startswith("x-very") for t in texts)
    assert all(len(t) < 60 for t in texts)
    title = group.find(f"{SVG}title")
    assert title is not None and name in (title.text or "") and "n" * 300 in (title.text or "")


def test_text_with_control_characters_still_makes_valid_xml() -> None:
    plan = plan_of(phase("a"))
    views = {"a": PhaseView("failed\x00", note="boom\x07\x1b[31m\nline two")}
    root = svg_root(plan, views, title="t\x01")
    texts = " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))
    assert "boom[31m line two" in texts
    assert "\x07" not in pipeline_mermaid(plan, views)
