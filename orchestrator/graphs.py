"""Pictures of a pipeline: its phase DAG, and a batch's live progress drawn on it.

Two renderings of the same thing, as pure code (stdlib only, no Django):

- `pipeline_mermaid` — Mermaid `flowchart LR` text, for Markdown, docs and tools that
  render Mermaid themselves;
- `pipeline_svg` — a self-contained SVG document (no JavaScript, no external fonts or
  CSS), laid out left to right by `PipelinePlan.levels()`, that renders offline in a
  browser, inline or in an `<img>` tag.

Both draw one node per phase (name, handler or `↳ <pipeline>` for a sub-pipeline, mode)
and one arrow per `after` dependency, dashed and labelled with the condition into a
phase that has a `when`. Given `views` (the live `PhaseView` of each phase, by name) the
nodes are coloured by state and show progress; phases without a view are drawn pending,
and views of unknown phases are ignored. Without views the plain definition is drawn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape as _escape
from xml.sax.saxutils import quoteattr as _quoteattr

if TYPE_CHECKING:
    from orchestrator.pipelines import PhaseSpec, PipelinePlan

__all__ = [
    "STATES",
    "STATE_STYLES",
    "PhaseView",
    "StateStyle",
    "pipeline_mermaid",
    "pipeline_svg",
]


@dataclass(frozen=True)
class PhaseView:
    """The live state of one phase, as much of it as is known.

    `done` counts the items processed (failed ones included) out of `total`, for a
    per-item phase; `failed` the items that failed; `seconds` how long the phase has run;
    `note` a short remark (a skip reason, "child batch 1a2b…").
    """

    state: str = "pending"
    done: int | None = None
    total: int | None = None
    failed: int = 0
    seconds: float | None = None
    note: str = ""


@dataclass(frozen=True)
class StateStyle:
    """The colours of a phase in one state: node fill and border, and a strong accent."""

    fill: str
    stroke: str
    accent: str
    dashed: bool = False


STATES: tuple[str, ...] = ("pending", "running", "succeeded", "failed", "skipped", "cancelled")
STATE_STYLES: Mapping[str, StateStyle] = {
    "pending": StateStyle(fill="#f3f4f6", stroke="#9ca3af", accent="#6b7280"),
    "running": StateStyle(fill="#eff6ff", stroke="#3b82f6", accent="#1d4ed8"),
    "succeeded": StateStyle(fill="#f0fdf4", stroke="#22c55e", accent="#15803d"),
    "failed": StateStyle(fill="#fef2f2", stroke="#ef4444", accent="#b91c1c"),
    "skipped": StateStyle(fill="#fafafa", stroke="#d1d5db", accent="#9ca3af", dashed=True),
    "cancelled": StateStyle(fill="#fff7ed", stroke="#f97316", accent="#c2410c"),
}
# A phase drawn without views: the plain definition.
_PLAIN = StateStyle(fill="#ffffff", stroke="#64748b", accent="#334155")

_CONDITION_CHARS = 40
_SEP = " · "


# Characters XML 1.0 does not allow at all, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml_chars(text: str) -> str:
    return _NOT_XML.sub("", text)


def _state_key(view: PhaseView) -> str:
    """The palette entry of a view: its state, or pending for a state we do not know."""
    state = str(view.state)
    return state if state in STATE_STYLES else "pending"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _clip(text: str, limit: int) -> str:
    text = _one_line(text)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _duration(seconds: float) -> str:
    if seconds < 0:
        seconds = 0.0
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def _subject(spec: PhaseSpec) -> str:
    """What a phase runs: its handler, or the pipeline of a sub-pipeline phase."""
    if spec.mode == "sub_pipeline":
        return f"↳ {spec.pipeline or '?'}"
    return spec.handler


def _progress(view: PhaseView) -> list[str]:
    """The counters of a view worth showing: done/total, failures, time."""
    parts = []
    if view.done is not None and view.total is not None:
        parts.append(f"{view.done}/{view.total}")
    if view.failed:
        parts.append(f"{view.failed} failed")
    if view.seconds is not None:
        parts.append(_duration(view.seconds))
    return parts


def _views_for(plan: PipelinePlan, views: Mapping[str, PhaseView] | None) -> dict[str, PhaseView] | None:
    if views is None:
        return None
    return {spec.name: views.get(spec.name) or PhaseView() for spec in plan.phases}


# --------------------------------------------------------------------------- Mermaid


def _mermaid_text(text: str) -> str:
    """Text safe inside a quoted Mermaid label: entity codes for the characters that matter."""
    text = _one_line(_NOT_XML.sub("", text))
    for char, code in (
        ("#", "#35;"),
        ("&", "#amp;"),
        ('"', "#quot;"),
        ("<", "#lt;"),
        (">", "#gt;"),
        ("|", "#124;"),
    ):
        text = text.replace(char, code)
    return text


def _node_ids(names: Iterable[str]) -> dict[str, str]:
    """A safe, unique Mermaid id per phase (prefixed, so `end` and `-` cannot bite)."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = "p_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
        candidate, n = base, 1
        while candidate in used:
            n += 1
            candidate = f"{base}_{n}"
        used.add(candidate)
        ids[name] = candidate
    return ids


def pipeline_mermaid(
    plan: PipelinePlan, views: Mapping[str, PhaseView] | None = None, *, title: str = ""
) -> str:
    """The plan as a Mermaid `flowchart LR`, coloured by state when `views` are given."""
    live = _views_for(plan, views)
    ids = _node_ids(spec.name for spec in plan.phases)
    lines: list[str] = []
    if title:
        # A YAML double-quoted string; `<` and `>` as escapes, so no markup shows raw.
        quoted = (
            json.dumps(_one_line(title), ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
        )
        lines += ["---", f"title: {quoted}", "---"]
    lines.append("flowchart LR")
    for spec in plan.phases:
        label = [f"<b>{_mermaid_text(spec.name)}</b>", _mermaid_text(_subject(spec)), spec.mode]
        if live is not None:
            view = live[spec.name]
            label.append(_mermaid_text(_SEP.join([str(view.state), *_progress(view)])))
            if view.note:
                label.append(_mermaid_text(_clip(view.note, 60)))
        text = "<br/>".join(label)
        shape = '[["{}"]]' if spec.mode == "sub_pipeline" else '["{}"]'
        lines.append(f"    {ids[spec.name]}{shape.format(text)}")
    for spec in plan.phases:
        for dep in spec.after:
            if spec.when:
                condition = _mermaid_text(_clip(spec.when, _CONDITION_CHARS))
                lines.append(f'    {ids[dep]} -.->|"when {condition}"| {ids[spec.name]}')
            else:
                lines.append(f"    {ids[dep]} --> {ids[spec.name]}")
    if live is not None:
        for state in STATES:
            style = STATE_STYLES[state]
            extra = ",stroke-dasharray:5 4" if style.dashed else ""
            lines.append(f"    classDef {state} fill:{style.fill},stroke:{style.stroke},color:#0f172a{extra}")
        by_state: dict[str, list[str]] = {}
        for spec in plan.phases:
            by_state.setdefault(_state_key(live[spec.name]), []).append(ids[spec.name])
        for state in STATES:
            if state in by_state:
                lines.append(f"    class {','.join(by_state[state])} {state}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- SVG

_FONT = "'Inter', 'Segoe UI', system-ui, 'Helvetica Neue', Helvetica, Arial, 'Liberation Sans', 'DejaVu Sans', sans-serif"
_INK = "#0f172a"
_MUTED = "#475569"
_FAINT = "#64748b"
_EDGE = "#94a3b8"
_FAIL = "#dc2626"

_MARGIN = 24
_COL_GAP = 84
_ROW_GAP = 30
_PAD = 12
_LINE = 17
_NODE_MIN_W = 200
_NODE_MAX_W = 300
_TITLE_H = 40
_LEGEND_GAP = 26
_LEGEND_H = 14
_TAB_H = 18
_BAR_H = 6
_LANE_CLEAR = 22
_LANE_STEP = 10


def _char_em(char: str) -> float:
    """A generous width of one character, in em (wide enough for DejaVu Sans)."""
    if char in "ijl.,:;'|!·":
        return 0.3
    if char in 'frt()[]{}/\\- `"':
        return 0.42
    if char in "mwMW@%":
        return 0.95
    if char.isupper():
        return 0.72
    if ord(char) > 0x2FF:
        return 1.0
    return 0.63


def _text_width(text: str, size: float, bold: bool = False) -> float:
    return sum(_char_em(c) for c in text) * size * (1.08 if bold else 1.0)


def _fit(text: str, width: float, size: float, bold: bool = False) -> str:
    """`text` on one line, cut with an ellipsis to fit `width` pixels."""
    text = _one_line(text)
    if _text_width(text, size, bold) <= width:
        return text
    while text and _text_width(text + "…", size, bold) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _attrs(**values: str | float) -> str:
    out = []
    for key, value in values.items():
        text = _num(value) if isinstance(value, float | int) else value
        out.append(f"{key.rstrip('_').replace('_', '-')}={_quoteattr(_xml_chars(text))}")
    return " ".join(out)


def _text(x: float, y: float, content: str, *, size: float = 12, **extra: str | float) -> str:
    return f"<text {_attrs(x=x, y=y, font_size=size, **extra)}>{_escape(_xml_chars(content))}</text>"


@dataclass
class _Box:
    spec: PhaseSpec
    view: PhaseView | None
    column: int
    x: float
    y: float
    w: float
    h: float

    @property
    def top(self) -> float:
        return self.y

    @property
    def bottom(self) -> float:
        return self.y + self.h

    @property
    def mid(self) -> float:
        return self.y + self.h / 2


@dataclass
class _Lanes:
    """Horizontal detours above or below the columns, for edges that skip a column."""

    above: int = 0
    below: int = 0
    ys: list[float] = field(default_factory=list)


def _node_width(plan: PipelinePlan, live: Mapping[str, PhaseView] | None) -> float:
    need = 0.0
    for spec in plan.phases:
        need = max(
            need,
            _text_width(spec.name, 13, bold=True) + 14 + _text_width(spec.mode, 12),
            _text_width(_subject(spec), 12),
        )
        if live is not None:
            view = live[spec.name]
            pieces = _status_pieces(view, _PLAIN)
            need = max(need, 14 + sum(_text_width(text, 12, bold) for text, _c, bold in pieces))
    return max(_NODE_MIN_W, min(_NODE_MAX_W, need + 2 * _PAD))


def _node_lines(live: Mapping[str, PhaseView] | None) -> tuple[int, bool]:
    """How many text lines every node has, and whether any node has a progress bar."""
    if live is None:
        return 2, False
    notes = any(view.note for view in live.values())
    return (4 if notes else 3), any(_has_bar(view) for view in live.values())


def _has_bar(view: PhaseView | None) -> bool:
    return view is not None and view.done is not None and view.total is not None and view.total > 0


def _edge_path(
    source: _Box, target: _Box, boxes: Sequence[_Box], lanes: _Lanes, columns_x: list[float]
) -> str:
    sx, sy = source.x + source.w, source.mid
    tx, ty = target.x - 1, target.mid
    between = [b for b in boxes if source.column < b.column < target.column]
    low, high = min(sy, ty), max(sy, ty)
    if not between or not any(b.top - 8 < high and b.bottom + 8 > low for b in between):
        bend = (tx - sx) / 2
        return f"M{_num(sx)},{_num(sy)} C{_num(sx + bend)},{_num(sy)} {_num(tx - bend)},{_num(ty)} {_num(tx)},{_num(ty)}"
    # Around the columns in between, on a lane above or below them, whichever is nearer.
    top = min(b.top for b in between) - _LANE_CLEAR - lanes.above * _LANE_STEP
    bottom = max(b.bottom for b in between) + _LANE_CLEAR + lanes.below * _LANE_STEP
    if abs((sy + ty) / 2 - top) <= abs(bottom - (sy + ty) / 2):
        lane, lanes.above = top, lanes.above + 1
    else:
        lane, lanes.below = bottom, lanes.below + 1
    lanes.ys.append(lane)
    x1 = columns_x[source.column + 1]
    x2 = columns_x[target.column - 1] + source.w
    g = _COL_GAP / 2
    return (
        f"M{_num(sx)},{_num(sy)} C{_num(sx + g)},{_num(sy)} {_num(x1 - g)},{_num(lane)} {_num(x1)},{_num(lane)}"
        f" L{_num(x2)},{_num(lane)} C{_num(x2 + g)},{_num(lane)} {_num(tx - g)},{_num(ty)} {_num(tx)},{_num(ty)}"
    )


def _render_node(box: _Box, lines: int, bar: bool) -> list[str]:
    spec, view = box.spec, box.view
    style = _PLAIN if view is None else STATE_STYLES[_state_key(view)]
    x, y, w, h = box.x, box.y, box.w, box.h
    inner = w - 2 * _PAD
    tooltip = [spec.name, _subject(spec), spec.mode]
    if spec.when:
        tooltip.append(f"when {_one_line(spec.when)}")
    if view is not None:
        tooltip.append(_SEP.join([str(view.state), *_progress(view)]))
        if view.note:
            tooltip.append(_one_line(view.note))
    state = "" if view is None else str(view.state)
    out = [
        f"<g {_attrs(class_='node', data_phase=spec.name, data_state=state)}>",
        f"<title>{_escape(_xml_chars(chr(10).join(tooltip)))}</title>",
        f"<rect {_attrs(x=x, y=y, width=w, height=h, rx=8.0, fill=style.fill, stroke=style.stroke, stroke_width=1.5)}"
        + (' stroke-dasharray="5 4"' if style.dashed else "")
        + "/>",
    ]
    baseline = y + 10 + 13
    mode_w = _text_width(spec.mode, 12)
    out.append(
        _text(
            x + _PAD,
            baseline,
            _fit(spec.name, inner - mode_w - 10, 13, bold=True),
            size=13,
            font_weight="600",
            fill=_FAINT if state == "skipped" else _INK,
        )
    )
    out.append(_text(x + w - _PAD, baseline, spec.mode, fill=_FAINT, text_anchor="end"))
    out.append(_text(x + _PAD, baseline + _LINE, _fit(_subject(spec), inner, 12), fill=_MUTED))
    if view is not None:
        out += _render_status(x + _PAD, baseline + 2 * _LINE, inner, view, style)
        if view.note:
            out.append(
                _text(
                    x + _PAD,
                    baseline + 3 * _LINE,
                    _fit(view.note, inner, 12),
                    fill=_FAINT,
                    font_style="italic",
                )
            )
        if bar and spec.mode == "per_item" and _has_bar(view):
            out += _render_bar(x + _PAD, y + h - 10 - _BAR_H, inner, view, style)
    if spec.when:
        out += _render_condition(box, spec.when)
    out.append("</g>")
    return out


def _status_pieces(view: PhaseView, style: StateStyle) -> list[tuple[str, str, bool]]:
    """The status line of a node as (text, colour, bold) runs: state, then counters."""
    pieces = [(str(view.state), style.accent, True)]
    for part in _progress(view):
        pieces.append((_SEP + part, _FAIL if part.endswith(" failed") else _MUTED, False))
    return pieces


def _render_status(x: float, y: float, width: float, view: PhaseView, style: StateStyle) -> list[str]:
    out = [f"<circle {_attrs(cx=x + 4, cy=y - 4, r=4.0, fill=style.accent)}/>"]
    room = width - 14
    spans: list[str] = []
    for text, colour, bold in _status_pieces(view, style):
        need = _text_width(text, 12, bold)
        if need > room + 0.5:
            lead = _SEP if text.startswith(_SEP) else ""
            text = lead + _fit(text[len(lead) :], room - _text_width(lead, 12), 12, bold)
            if len(text.strip(_SEP + "…")) < 2:
                break
        weight = "600" if bold else "400"
        spans.append(f"<tspan {_attrs(fill=colour, font_weight=weight)}>{_escape(_xml_chars(text))}</tspan>")
        room -= need
        if room <= 0:
            break
    # Preserved spaces: a run that starts with one keeps it in every renderer.
    out.append(f'<text {_attrs(x=x + 14, y=y, font_size=12.0)} xml:space="preserve">{"".join(spans)}</text>')
    return out


def _render_bar(x: float, y: float, width: float, view: PhaseView, style: StateStyle) -> list[str]:
    total = view.total or 1
    done = max(0, min(view.done or 0, total))
    failed = max(0, min(view.failed, done))
    fill_w = width * done / total
    fail_w = width * failed / total
    out = [
        f"<rect {_attrs(class_='progress-track', x=x, y=y, width=width, height=_BAR_H, rx=3.0, fill='#e2e8f0')}/>",
        f"<rect {_attrs(class_='progress-fill', x=x, y=y, width=fill_w, height=_BAR_H, rx=3.0, fill=style.stroke)}"
        f" {_attrs(data_done=done, data_total=total)}/>",
    ]
    if fail_w > 0:
        out.append(
            f"<rect {_attrs(class_='progress-failed', x=x + fill_w - fail_w, y=y, width=fail_w, height=_BAR_H, fill=_FAIL)}/>"
        )
    return out


def _render_condition(box: _Box, condition: str) -> list[str]:
    text = "when " + _clip(condition, _CONDITION_CHARS)
    text = _fit(text, box.w - 2 * _PAD - 4, 11)
    width = _text_width(text, 11) + 14
    x, y = box.x + 10, box.y - _TAB_H / 2
    return [
        f"<rect {_attrs(class_='condition', x=x, y=y, width=width, height=_TAB_H, rx=9.0, fill='#ffffff', stroke=_EDGE)}"
        ' stroke-dasharray="3 2"/>',
        _text(x + 7, y + 12.5, text, size=11, fill=_MUTED, font_style="italic"),
    ]


def _legend(x: float, y: float, has_states: bool, has_conditions: bool) -> tuple[list[str], float]:
    out: list[str] = []
    cursor = x
    if has_states:
        for state in STATES:
            style = STATE_STYLES[state]
            dash = ' stroke-dasharray="3 2"' if style.dashed else ""
            out.append(
                f"<rect {_attrs(x=cursor, y=y + 1, width=12.0, height=12.0, rx=3.0, fill=style.fill, stroke=style.stroke, stroke_width=1.5)}{dash}/>"
            )
            out.append(_text(cursor + 18, y + 11, state, fill=_MUTED))
            cursor += 18 + _text_width(state, 12) + 18
    if has_conditions:
        out.append(
            f"<path {_attrs(d=f'M{_num(cursor)},{_num(y + 7)} h22', stroke=_EDGE, stroke_width=1.5, fill='none')}"
            ' stroke-dasharray="6 4" marker-end="url(#bos-graph-arrow)"/>'
        )
        out.append(_text(cursor + 30, y + 11, "runs only when its condition holds", fill=_MUTED))
        cursor += 30 + _text_width("runs only when its condition holds", 12) + 18
    return out, cursor - 18 - x


def pipeline_svg(plan: PipelinePlan, views: Mapping[str, PhaseView] | None = None, *, title: str = "") -> str:
    """The plan as a standalone SVG document, coloured by state when `views` are given."""
    live = _views_for(plan, views)
    levels = plan.levels()
    by_name = {spec.name: spec for spec in plan.phases}
    lines, bar = _node_lines(live)
    w = _node_width(plan, live)
    h = 10.0 + _LINE * lines + 6 + (_BAR_H + 8 if bar else 0)

    # Columns centred on y = 0; shifted into place once the extent is known.
    columns_x = [i * (w + _COL_GAP) for i in range(len(levels))]
    boxes: list[_Box] = []
    for column, names in enumerate(levels):
        height = len(names) * h + (len(names) - 1) * _ROW_GAP
        for row, name in enumerate(names):
            view = None if live is None else live[name]
            y = -height / 2 + row * (h + _ROW_GAP)
            boxes.append(_Box(by_name[name], view, column, columns_x[column], y, w, h))
    box_of = {box.spec.name: box for box in boxes}

    # Routed once to learn how far detours reach, and again after the shift.
    lanes = _Lanes()
    pairs = [(box_of[dep], box_of[spec.name]) for spec in plan.phases for dep in spec.after]
    for source, target in pairs:
        _edge_path(source, target, boxes, lanes, columns_x)

    top = min([b.top - (_TAB_H / 2 if b.spec.when else 0) for b in boxes] + [y - 4 for y in lanes.ys])
    bottom = max([b.bottom for b in boxes] + [y + 4 for y in lanes.ys])
    diagram_w = columns_x[-1] + w
    has_conditions = any(spec.when for spec in plan.phases)
    legend, legend_w = _legend(0, 0, live is not None, has_conditions)
    show_legend = bool(legend)
    title_text = _fit(title, max(diagram_w, 560.0), 15, bold=True) if title else ""
    content_w = max(diagram_w, legend_w if show_legend else 0.0, _text_width(title_text, 15, bold=True))
    width = content_w + 2 * _MARGIN
    title_h = _TITLE_H if title_text else 0
    dx = _MARGIN + (content_w - diagram_w) / 2
    dy = _MARGIN + title_h - top
    for box in boxes:
        box.x += dx
        box.y += dy
    columns_x = [x + dx for x in columns_x]
    lanes = _Lanes()
    edges = [(s, t, _edge_path(s, t, boxes, lanes, columns_x)) for s, t in pairs]
    legend_y = _MARGIN + title_h + (bottom - top) + _LEGEND_GAP
    height = legend_y + (_LEGEND_H if show_legend else -_LEGEND_GAP) + _MARGIN

    label = title_text or "Pipeline graph"
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" '
        + _attrs(
            width=round(width),
            height=round(height),
            viewBox=f"0 0 {round(width)} {round(height)}",
            role="img",
            aria_label=label,
            font_family=_FONT,
        )
        + ">",
        f"<title>{_escape(_xml_chars(label))}</title>",
        "<defs>"
        '<marker id="bos-graph-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse"'
        ' markerWidth="9" markerHeight="9" orient="auto">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{_FAINT}"/></marker>'
        "</defs>",
        '<rect width="100%" height="100%" fill="#ffffff"/>',
    ]
    if title_text:
        out.append(_text(_MARGIN, _MARGIN + 16, title_text, size=15, font_weight="700", fill=_INK))
    out.append('<g class="edges">')
    for source, target, path in edges:
        dash = ' stroke-dasharray="6 4"' if target.spec.when else ""
        cls = "edge conditional" if target.spec.when else "edge"
        out.append(
            f"<path {_attrs(class_=cls, data_from=source.spec.name, data_to=target.spec.name, d=path, fill='none', stroke=_EDGE, stroke_width=1.5)}"
            f'{dash} marker-end="url(#bos-graph-arrow)"/>'
        )
    out.append("</g>")
    out.append('<g class="nodes">')
    for box in boxes:
        out += _render_node(box, lines, bar)
    out.append("</g>")
    if show_legend:
        out.append(f'<g class="legend" transform="translate({_MARGIN},{_num(legend_y)})">')
        out += legend
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
