"""Pipeline templates: reusable phase groups and whole pipelines, with parameters.

A template is a JSON file in `pipelines/templates/` (see `docs/templates.md`). A pipeline
definition uses one in either of two forms, and `expand` turns it into a plain definition
that `orchestrator.pipelines.parse_definition` then validates like any other:

- a whole pipeline: `{"template": "map-reduce", "params": {...}, "description": "..."}`;
- a phase group inside `phases`:
  `{"use": "validate-then", "as": "check", "params": {...}, "after": [...]}` inserts the
  group's phases named `check-<phase>`, gives the group's entry phases (no `after` inside
  the group) the entry's `after`, and lets later phases run `after: ["check"]`, meaning
  all of the group's exit phases (those no other group phase runs after).

Parameters fill a template body with a deliberately small language:

- `"${p}"` as a whole string value is replaced by the value of `p`, keeping its type;
  if `p` is optional and not set, the object key (or list element) holding it is dropped;
- `${p}` inside a longer string is replaced textually (string, handler or integer values);
- `${p.key}` reads a key of an object; `"${p[*].key}"` as a list element is replaced by
  that key of every element of the list `p`;
- `{"for_each": "${p}", "as_var": "a", "phase": {...}}` as a list element expands into
  one copy of `phase` per element of the list `p`, with `${a}` / `${a.key}` reading it.

Errors are `PipelineDefinitionError`s with stable codes: `unknown_template`,
`missing_parameter`, `invalid_parameter`, `unknown_parameter`, `template_recursion`,
`duplicate_phase`, `invalid_definition` (a malformed `template`/`use` entry) and
`invalid_template` (a malformed template). Pure: no Django, no handler registry.
"""

from __future__ import annotations

import copy
import graphlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.pipelines import PHASE_NAME_PATTERN, PipelineDefinitionError

ParamType = Literal["string", "integer", "boolean", "list", "object", "handler"]
TemplateKind = Literal["pipeline", "group"]

MAX_GROUP_DEPTH = 5
"""How deeply phase groups may nest (a group using a group using a group ...)."""

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REF = re.compile(rf"\$\{{({_IDENT})(?:(\[\*\])?\.({_IDENT}))?\}}")
_IDENT_RE = re.compile(rf"^{_IDENT}$")
_NAME_RE = re.compile(PHASE_NAME_PATTERN)
_TEXT_TYPES: frozenset[str] = frozenset({"string", "handler", "integer"})
_FOR_EACH_KEYS = frozenset({"for_each", "as_var", "phase"})
_USE_KEYS = frozenset({"use", "as", "params", "after"})
_TEMPLATE_FORM_KEYS = frozenset({"template", "params", "description"})


@dataclass(frozen=True)
class ParamSpec:
    """One declared template parameter. Optional when `required` is false or a `default` is set."""

    type: ParamType
    required: bool = True
    default: Any = None
    description: str = ""


@dataclass(frozen=True)
class Template:
    """A parsed template: a whole definition (`pipeline`) or a phase group (`group`)."""

    name: str
    description: str
    params: Mapping[str, ParamSpec]
    body: Mapping[str, Any]
    kind: Literal["pipeline", "group"]


# --- loading -------------------------------------------------------------------------


class _ParamModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: ParamType
    required: bool | None = None
    default: Any = None
    description: str = ""


class _TemplateModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = None
    kind: TemplateKind
    description: str = Field(min_length=1)
    params: dict[str, _ParamModel] = Field(default_factory=dict)
    body: dict[str, Any]


def _invalid(message: str, phase: str | None = None) -> PipelineDefinitionError:
    return PipelineDefinitionError("invalid_template", message, phase)


def load_templates(folder: Path) -> dict[str, Template]:
    """Read every `*.json` template in `folder` (none if it does not exist), by name.

    A file that is not a valid template, a name that does not match its file name, or
    groups that use each other in a cycle raise `PipelineDefinitionError`.
    """
    templates: dict[str, Template] = {}
    if not folder.is_dir():
        return templates
    for path in sorted(folder.glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _invalid(f"{path.name}: not readable JSON: {exc}") from exc
        if isinstance(raw, Mapping) and raw.get("name", path.stem) != path.stem:
            raise _invalid(f"{path.name}: name {raw.get('name')!r} does not match the file name")
        try:
            templates[path.stem] = parse_template(raw, path.stem)
        except PipelineDefinitionError as exc:
            message = str(exc)
            if exc.phase and message.startswith(f"phase {exc.phase!r}: "):
                message = message[len(f"phase {exc.phase!r}: ") :]
            raise PipelineDefinitionError(exc.code, f"{path.name}: {message}", exc.phase) from exc
    _check_group_cycles(templates)
    return templates


def parse_template(raw: Any, name: str | None = None) -> Template:
    """Validate one template's JSON content; `name` defaults to its `name` field."""
    if not isinstance(raw, Mapping):
        raise _invalid("a template must be a JSON object")
    try:
        model = _TemplateModel.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise _invalid(f"{where}: {err['msg']}") from exc
    name = name or model.name
    if not name or not _NAME_RE.match(name):
        raise _invalid(f"template name {name!r} must match {PHASE_NAME_PATTERN}")
    params = {pname: _param_spec(name, pname, p) for pname, p in model.params.items()}
    template = Template(
        name=name, description=model.description, params=params, body=model.body, kind=model.kind
    )
    _check_body(template)
    return template


def _param_spec(template: str, name: str, model: _ParamModel) -> ParamSpec:
    if not _IDENT_RE.match(name):
        raise _invalid(f"template {template!r}: parameter name {name!r} must match {_IDENT}")
    if model.default is not None:
        if model.required:
            raise _invalid(f"template {template!r}: parameter {name!r} is required but has a default")
        if not _type_ok(model.type, model.default):
            raise _invalid(f"template {template!r}: default of parameter {name!r} is not a {model.type}")
    required = model.default is None if model.required is None else model.required
    return ParamSpec(type=model.type, required=required, default=model.default, description=model.description)


def _check_body(template: Template) -> None:
    body = template.body
    allowed = {"phases", "description"} if template.kind == "pipeline" else {"phases"}
    extra = sorted(set(body) - allowed)
    if extra:
        raise _invalid(f"template {template.name!r}: unknown body field(s) {', '.join(extra)}")
    phases = body.get("phases")
    if not isinstance(phases, list) or not phases:
        raise _invalid(f"template {template.name!r}: body.phases must be a non-empty list")
    if not isinstance(body.get("description", ""), str):
        raise _invalid(f"template {template.name!r}: body.description must be a string")
    _check_refs(template, body.get("description", ""), frozenset(), in_list=False, phase=None)
    for entry in phases:
        if not isinstance(entry, Mapping):
            raise _invalid(f"template {template.name!r}: each phase must be an object")
        _check_refs(template, entry, frozenset(), in_list=True, phase=_label(entry))


def _check_refs(
    template: Template, value: Any, loops: frozenset[str], *, in_list: bool, phase: str | None
) -> None:
    """Check every `${...}` in `value` names a declared parameter or loop variable, usably."""

    def fail(message: str) -> PipelineDefinitionError:
        return _invalid(f"template {template.name!r}: {message}", phase)

    if isinstance(value, str):
        if "${" in _REF.sub("", value):
            raise fail(f"malformed reference in {value!r}")
        whole = _REF.fullmatch(value) is not None
        for match in _REF.finditer(value):
            name, star, key = match.groups()
            if name in loops:
                if star:
                    raise fail(f"{match.group(0)}: {name!r} is one element, not a list")
                continue
            spec = template.params.get(name)
            if spec is None:
                raise fail(f"{match.group(0)} names no declared parameter")
            if star and (spec.type != "list" or not whole or not in_list):
                raise fail(f"{match.group(0)} needs a list parameter and must be a whole list element")
            if key and not star and spec.type != "object":
                raise fail(f"{match.group(0)} reads a key, but {name!r} is a {spec.type}")
            if not whole and not key and spec.type not in _TEXT_TYPES:
                raise fail(f"{match.group(0)} is used inside a string, but {name!r} is a {spec.type}")
    elif isinstance(value, list):
        for item in value:
            _check_refs(template, item, loops, in_list=True, phase=phase)
    elif isinstance(value, Mapping):
        if "for_each" in value:
            if not in_list:
                raise fail("for_each is only allowed as an element of a list")
            if set(value) != _FOR_EACH_KEYS:
                raise fail("a for_each entry has exactly the keys for_each, as_var and phase")
            var = value["as_var"]
            if not isinstance(var, str) or not _IDENT_RE.match(var):
                raise fail(f"as_var {var!r} must match {_IDENT}")
            if var in template.params or var in loops:
                raise fail(f"as_var {var!r} hides a parameter or an outer as_var")
            source = value["for_each"]
            if not isinstance(source, list) and not (isinstance(source, str) and _REF.fullmatch(source)):
                raise fail("for_each takes a list or a whole-string reference to one")
            _check_refs(template, source, loops, in_list=False, phase=phase)
            _check_refs(template, value["phase"], loops | {var}, in_list=True, phase=phase)
            return
        for item in value.values():
            _check_refs(template, item, loops, in_list=False, phase=phase)


def _uses(value: Any) -> Iterator[str]:
    """The group names a template body `use`s literally."""
    if isinstance(value, Mapping):
        if isinstance(value.get("use"), str):
            yield value["use"]
        for item in value.values():
            yield from _uses(item)
    elif isinstance(value, list):
        for item in value:
            yield from _uses(item)


def _check_group_cycles(templates: Mapping[str, Template]) -> None:
    graph = {name: sorted(set(_uses(t.body)) & set(templates)) for name, t in templates.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = list(reversed(exc.args[1]))
        raise PipelineDefinitionError(
            "template_recursion", f"groups use each other in a cycle: {' -> '.join(cycle)}", cycle[0]
        ) from exc


# --- substitution ----------------------------------------------------------------------


class _Absent:
    """An optional parameter that was not set: the key or element holding it is dropped."""

    __slots__ = ()


_ABSENT = _Absent()


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "handler":
        return isinstance(value, str) and bool(value.strip())
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, Mapping)
    return False


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _label(entry: Any) -> str | None:
    """A readable name for a raw phase entry, for error messages."""
    if not isinstance(entry, Mapping):
        return None
    if "for_each" in entry:
        inner = _label(entry.get("phase"))
        if inner and "${" not in inner:
            return inner
        source = entry["for_each"]
        match = _REF.fullmatch(source) if isinstance(source, str) else None
        return f"{match.group(0)[2:-1] if match else 'for_each'}[*]"
    for key in ("name", "as", "use"):
        if isinstance(entry.get(key), str):
            return str(entry[key])
    return None


def _phases_using(template: Template, param: str) -> list[str]:
    found = []
    for entry in template.body.get("phases", []):
        text = json.dumps(entry)
        if any(m.group(1) == param for m in _REF.finditer(text)):
            found.append(_label(entry) or "?")
    return found


@dataclass
class _Scope:
    """Substitutes one template's bound parameters into its body."""

    template: Template
    values: dict[str, Any]
    where: str | None  # the definition entry (a group's prefixed `as`), for errors
    loops: dict[str, tuple[str, int, Mapping[str, Any]]] = field(default_factory=dict)
    phase: str | None = None  # the template phase being substituted, for errors

    def error(self, code: str, message: str) -> PipelineDefinitionError:
        at = f" phase {self.phase!r}" if self.phase else ""
        return PipelineDefinitionError(
            code, f"template {self.template.name!r}{at}: {message}", self.where or self.phase
        )

    def phases(self, entries: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        for entry in entries:
            self.phase = _label(entry)
            out.extend(self.sub([entry]))
        self.phase = None
        return out

    def sub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._sub_str(value)
        if isinstance(value, list):
            out: list[Any] = []
            for item in value:
                if isinstance(item, Mapping) and "for_each" in item:
                    out.extend(self._for_each(item))
                    continue
                match = _REF.fullmatch(item) if isinstance(item, str) else None
                if match and match.group(2):
                    got = self._resolve(match)
                    if not isinstance(got, _Absent):
                        out.extend(got)
                    continue
                got = self.sub(item)
                if not isinstance(got, _Absent):
                    out.append(got)
            return out
        if isinstance(value, Mapping):
            if "for_each" in value:
                raise self.error("invalid_template", "for_each is only allowed as an element of a list")
            result: dict[str, Any] = {}
            for key, item in value.items():
                got = self.sub(item)
                if not isinstance(got, _Absent):
                    result[key] = got
            return result
        return value

    def _sub_str(self, text: str) -> Any:
        match = _REF.fullmatch(text)
        if match:
            return self._resolve(match)
        if "${" not in text:
            return text
        if "${" in _REF.sub("", text):
            raise self.error("invalid_template", f"malformed reference in {text!r}")
        return _REF.sub(lambda m: self._text(m, text), text)

    def _text(self, match: re.Match[str], text: str) -> str:
        name = match.group(1)
        spec = self.template.params.get(name)
        if spec is not None and not match.group(3) and spec.type not in _TEXT_TYPES:
            raise self.error(
                "invalid_template", f"{match.group(0)} is used inside a string, but {name!r} is a {spec.type}"
            )
        value = self._resolve(match)
        if isinstance(value, _Absent):
            raise self.error("missing_parameter", f"parameter {name!r} is not set but is used in {text!r}")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.error(
                "invalid_parameter",
                f"{match.group(0)} is used inside a string, so must be a string or an integer, "
                f"not {_json_type(value)}",
            )
        return str(value)

    def _resolve(self, match: re.Match[str]) -> Any:
        name, star, key = match.groups()
        ref = match.group(0)
        if name in self.loops:
            source, index, element = self.loops[name]
            if star:
                raise self.error("invalid_template", f"{ref}: {name!r} is one element, not a list")
            if key is None:
                return copy.deepcopy(element)
            if key not in element:
                raise self.error(
                    "invalid_parameter", f"element {index} of {source!r} has no key {key!r} (read by {ref})"
                )
            return copy.deepcopy(element[key])
        spec = self.template.params.get(name)
        if spec is None:
            raise self.error("invalid_template", f"{ref} names no declared parameter")
        if name not in self.values:
            return _ABSENT
        value = self.values[name]
        if key is None:
            return copy.deepcopy(value)
        if star:
            if not isinstance(value, list):
                raise self.error("invalid_template", f"{ref}: {name!r} is a {spec.type}, not a list")
            out = []
            for index, element in enumerate(value):
                if not isinstance(element, Mapping) or key not in element:
                    raise self.error(
                        "invalid_parameter", f"{name}[{index}] must be an object with key {key!r} (for {ref})"
                    )
                out.append(copy.deepcopy(element[key]))
            return out
        if not isinstance(value, Mapping):
            raise self.error("invalid_template", f"{ref}: {name!r} is a {spec.type}, not an object")
        if key not in value:
            raise self.error("invalid_parameter", f"parameter {name!r} has no key {key!r} (for {ref})")
        return copy.deepcopy(value[key])

    def _for_each(self, item: Mapping[str, Any]) -> list[Any]:
        if set(item) != _FOR_EACH_KEYS:
            raise self.error(
                "invalid_template", "a for_each entry has exactly the keys for_each, as_var and phase"
            )
        var = item["as_var"]
        if not isinstance(var, str) or not _IDENT_RE.match(var) or var in self.template.params:
            raise self.error("invalid_template", f"as_var {var!r} must be a new name matching {_IDENT}")
        if var in self.loops:
            raise self.error("invalid_template", f"as_var {var!r} is already in use by an outer for_each")
        source = item["for_each"]
        match = _REF.fullmatch(source) if isinstance(source, str) else None
        label = match.group(0)[2:-1] if match else "for_each"
        elements = self.sub(source)
        if isinstance(elements, _Absent):
            return []
        if not isinstance(elements, list):
            raise self.error(
                "invalid_parameter", f"for_each over {label} needs a list, not {_json_type(elements)}"
            )
        out: list[Any] = []
        for index, element in enumerate(elements):
            if not isinstance(element, Mapping):
                raise self.error(
                    "invalid_parameter", f"{label}[{index}] must be an object, not {_json_type(element)}"
                )
            self.loops[var] = (label, index, element)
            outer_phase = self.phase
            if outer_phase and outer_phase.endswith("[*]"):
                self.phase = f"{outer_phase[:-3]}[{index}]"
            try:
                out.extend(self.sub([item["phase"]]))
            finally:
                del self.loops[var]
                self.phase = outer_phase
        return out


def _bind(template: Template, given: Any, where: str | None) -> dict[str, Any]:
    """The template's parameter values: the given ones, checked, and the defaults."""

    def error(code: str, message: str, phase: str | None = where) -> PipelineDefinitionError:
        return PipelineDefinitionError(code, f"template {template.name!r}: {message}", phase)

    def user(name: str) -> str | None:
        # For a whole-pipeline template (no entry to name), the template phase using `name`.
        users = _phases_using(template, name)
        return where or next((u for u in users if "[*]" not in u), users[0] if users else None)

    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise error("invalid_parameter", f"params must be an object, not {_json_type(given)}")
    for name in given:
        if name not in template.params:
            takes = ", ".join(sorted(template.params)) or "none"
            raise error("unknown_parameter", f"no parameter {name!r} (it takes: {takes})")
    values: dict[str, Any] = {}
    for name, spec in template.params.items():
        value = given.get(name)
        if value is None:
            if spec.default is not None:
                values[name] = copy.deepcopy(spec.default)
            elif spec.required:
                users = _phases_using(template, name)
                used = f" (used by phase {', '.join(repr(u) for u in users)})" if users else ""
                raise error("missing_parameter", f"parameter {name!r} is required{used}", user(name))
            continue
        if not _type_ok(spec.type, value):
            article = "an" if spec.type[0] in "aeiou" else "a"
            raise error(
                "invalid_parameter",
                f"parameter {name!r} must be {article} {spec.type}, not {_json_type(value)}",
                user(name),
            )
        values[name] = copy.deepcopy(value)
    return values


# --- expansion -------------------------------------------------------------------------


def expand(raw: Mapping[str, Any], templates: Mapping[str, Template]) -> dict[str, Any]:
    """Expand the templates a definition uses into a plain definition (not yet validated).

    A definition that uses none comes back as a deep copy of itself.
    """
    if not isinstance(raw, Mapping):
        raise PipelineDefinitionError("invalid_definition", "a definition must be a JSON object")
    if "template" in raw:
        return _expand_pipeline(raw, templates)
    result = copy.deepcopy(dict(raw))
    phases = result.get("phases")
    if isinstance(phases, list) and any(isinstance(p, Mapping) and "use" in p for p in phases):
        result["phases"] = _expand_phases(phases, templates, (), "")
    return result


def _expand_pipeline(raw: Mapping[str, Any], templates: Mapping[str, Template]) -> dict[str, Any]:
    extra = sorted(set(raw) - _TEMPLATE_FORM_KEYS)
    if extra:
        raise PipelineDefinitionError(
            "invalid_definition",
            f"a definition from a template has only template, params and description, not {', '.join(extra)}",
        )
    name = raw["template"]
    if not isinstance(name, str):
        raise PipelineDefinitionError("invalid_definition", "template must be a template name")
    template = templates.get(name)
    if template is None:
        raise PipelineDefinitionError("unknown_template", f"unknown template {name!r}")
    if template.kind != "pipeline":
        raise PipelineDefinitionError(
            "unknown_template",
            f'no pipeline template {name!r}: it is a phase group, used inside phases with "use"',
        )
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise PipelineDefinitionError("invalid_definition", "description must be a string")
    scope = _Scope(template, _bind(template, raw.get("params"), None), None)
    if description is None:
        got = scope.sub(template.body.get("description", ""))
        description = got if isinstance(got, str) and got else template.description
    phases = scope.phases(template.body["phases"])
    return {"description": description, "phases": _expand_phases(phases, templates, (), "")}


def _expand_phases(
    entries: Sequence[Any], templates: Mapping[str, Template], stack: tuple[str, ...], prefix: str
) -> list[Any]:
    """Expand the `use` entries of a phase list; `prefix` is where the list sits, for errors."""
    out: list[Any] = []
    groups: dict[str, list[str]] = {}
    for entry in entries:
        if isinstance(entry, Mapping) and "use" in entry:
            alias, phases, exits = _expand_group(entry, templates, stack, prefix)
            if alias in groups:
                raise PipelineDefinitionError(
                    "duplicate_phase", "two groups use the same `as` name", prefix + alias
                )
            groups[alias] = exits
            out.extend(phases)
        else:
            out.append(copy.deepcopy(entry))
    if groups:
        for phase in out:
            after = phase.get("after") if isinstance(phase, dict) else None
            if isinstance(after, list) and any(isinstance(d, str) and d in groups for d in after):
                rewritten: list[Any] = []
                for dep in after:
                    for name in groups[dep] if isinstance(dep, str) and dep in groups else [dep]:
                        if name not in rewritten:
                            rewritten.append(name)
                phase["after"] = rewritten
    seen: set[str] = set()
    for phase in out:
        name = phase.get("name") if isinstance(phase, Mapping) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            raise PipelineDefinitionError(
                "duplicate_phase", "phase name used twice once templates are expanded", prefix + name
            )
        seen.add(name)
    for alias in groups:
        if alias in seen:
            raise PipelineDefinitionError(
                "duplicate_phase", f"group `as` name {alias!r} is also a phase name", prefix + alias
            )
    return out


def _expand_group(
    entry: Mapping[str, Any], templates: Mapping[str, Template], stack: tuple[str, ...], prefix: str
) -> tuple[str, list[dict[str, Any]], list[str]]:
    """One `use` entry: its prefixed phases, and the prefixed names of its exit phases."""
    name = entry["use"]
    alias = entry.get("as")
    label = prefix + (alias if isinstance(alias, str) else str(name))

    def refuse(message: str) -> PipelineDefinitionError:
        return PipelineDefinitionError("invalid_definition", message, label)

    extra = sorted(set(entry) - _USE_KEYS)
    if extra:
        raise refuse(f"a `use` entry has only use, as, params and after, not {', '.join(extra)}")
    if not isinstance(name, str):
        raise refuse("use must be a group template name")
    if not isinstance(alias, str) or not _NAME_RE.match(alias):
        raise refuse(f"a `use` entry names its group with `as`, matching {PHASE_NAME_PATTERN}")
    after = entry.get("after", [])
    if not isinstance(after, list) or not all(isinstance(d, str) for d in after):
        raise refuse("after must be a list of phase names")
    template = templates.get(name)
    if template is None:
        raise PipelineDefinitionError("unknown_template", f"unknown template {name!r}", label)
    if template.kind != "group":
        raise PipelineDefinitionError(
            "unknown_template",
            f'no group template {name!r}: it is a whole-pipeline template, used as {{"template": ...}}',
            label,
        )
    chain = " -> ".join((*stack, name))
    if name in stack:
        raise PipelineDefinitionError("template_recursion", f"group {name!r} uses itself: {chain}", label)
    if len(stack) >= MAX_GROUP_DEPTH:
        raise PipelineDefinitionError(
            "template_recursion", f"groups nest deeper than {MAX_GROUP_DEPTH}: {chain}", label
        )

    scope = _Scope(template, _bind(template, entry.get("params"), label), label)
    inner = _expand_phases(scope.phases(template.body["phases"]), templates, (*stack, name), label + "-")

    def broken(message: str) -> PipelineDefinitionError:
        return PipelineDefinitionError("invalid_template", f"template {name!r}: {message}", label)

    local: list[str] = []
    for index, phase in enumerate(inner):
        if not isinstance(phase, Mapping) or not isinstance(phase.get("name"), str):
            raise broken(f"group phase #{index + 1} has no name")
        local.append(phase["name"])
    depended: set[str] = set()
    for phase in inner:
        deps = phase.get("after", [])
        if not isinstance(deps, list):
            raise broken(f"phase {phase['name']!r}: after must be a list")
        for dep in deps:
            if dep not in local:
                raise broken(f"phase {phase['name']!r} runs after {dep!r}, which is not in the group")
            depended.add(dep)

    phases: list[dict[str, Any]] = []
    for phase in inner:
        result = dict(phase)
        result["name"] = f"{alias}-{phase['name']}"
        if not _NAME_RE.match(result["name"]):
            raise PipelineDefinitionError(
                "invalid_definition",
                f"phase name {result['name']!r} does not match {PHASE_NAME_PATTERN} once prefixed",
                prefix + result["name"],
            )
        deps = phase.get("after") or []
        if deps:
            result["after"] = [f"{alias}-{dep}" for dep in deps]
        elif after:
            result["after"] = list(after)
        phases.append(result)
    exits = [f"{alias}-{n}" for n in local if n not in depended]
    return alias, phases, exits
