"""What PostgreSQL can store: one set of rules for every JSON value that comes in.

JSON parsers and JSON Schema accept values that PostgreSQL refuses, and it refuses them
late, at the INSERT or the COPY, as an error that looks like a database failure:

- U+0000 (NUL) in any string, key or value: `text` columns cannot hold it and `jsonb`
  refuses the escape `\\u0000`;
- a lone UTF-16 surrogate (`"\\ud800"`): Python reads it, but it is not encodable as UTF-8;
- NaN, Infinity and -Infinity: Python's `json` reads them, JSON has no such numbers and
  `jsonb` refuses them; a literal too large for a float (`1e400`) reads as Infinity;
- an integer literal longer than Python converts (4300 digits): reading or writing it
  raises a bare `ValueError`;
- nesting deeper than `MAX_DEPTH`: every step that walks the value (the parser, the
  schema check, `json.dumps`, the handlers) recurses, so 1,000 levels are a
  `RecursionError` somewhere.

Two entry points, for every way in (the Kafka consumer, the REST API):

- `loads(text)`: `json.loads` that refuses all of the above; it raises `UnsafeJSON` (a
  `ValueError`) with the first problem and its JSON path, or `json.JSONDecodeError` /
  `UnicodeDecodeError` for text that is not JSON at all. The depth is measured before
  parsing, without recursion, so no input can make it recurse.
- `find_problem(value)`: the first problem of a value already parsed by someone else
  (DRF, a form), with its JSON path, or None.

Pure: no Django, no I/O.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

# Ruby's JSON and several other parsers stop at 100 levels; BOS's own messages use
# four before a payload starts, and no handler needs more.
MAX_DEPTH = 100
# Python's default limit on converting between int and str (sys.get_int_max_str_digits).
MAX_INT_DIGITS = 4300

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# Escapes that may produce a NUL or a lone surrogate; without them a parsed text has neither.
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class ProblemKind(StrEnum):
    NUL = "nul"
    SURROGATE = "surrogate"
    NON_FINITE = "non_finite"
    LONG_INTEGER = "long_integer"
    TOO_DEEP = "too_deep"


def rule(kind: ProblemKind, *, max_depth: int = MAX_DEPTH) -> str:
    """What a value with this problem breaks, for people (no value is ever quoted)."""
    match kind:
        case ProblemKind.NUL:
            return "must not contain U+0000 (NUL)"
        case ProblemKind.SURROGATE:
            return "must not contain a lone UTF-16 surrogate (not encodable as UTF-8)"
        case ProblemKind.NON_FINITE:
            return "must be a finite number (NaN and Infinity are not JSON)"
        case ProblemKind.LONG_INTEGER:
            return f"must be an integer of at most {MAX_INT_DIGITS} digits"
        case ProblemKind.TOO_DEEP:
            return f"must not nest arrays and objects more than {max_depth} levels deep"


@dataclass(frozen=True)
class Problem:
    """Why a value cannot be stored, and where: `path` is like `data.items[3].key`."""

    kind: ProblemKind
    path: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}"


class UnsafeJSON(ValueError):
    """JSON text that parses but that PostgreSQL (or Python) could not store or walk."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


# A path as a linked list from the leaf: (parent, key or index); None is the root.
_Path = tuple["_Path", str | int] | None


class _Unreadable:
    """What `loads` reads in place of a number it refuses, so the walk can name its path."""

    __slots__ = ("kind",)

    def __init__(self, kind: ProblemKind) -> None:
        self.kind = kind


_NON_FINITE = _Unreadable(ProblemKind.NON_FINITE)
_LONG_INTEGER = _Unreadable(ProblemKind.LONG_INTEGER)


def nesting_depth(text: str, *, stop_after: int | None = None) -> int:
    """How deep the arrays and objects of JSON `text` nest (0 for a scalar), without parsing.

    Brackets inside strings do not count. Stops counting once `stop_after` is passed.
    Meaningful for valid JSON only; for other text it is some number, and parsing fails.
    """
    depth = deepest = 0
    for char in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_after is not None and deepest > stop_after:
                    break
        else:
            depth -= 1
    return deepest


def _parse_float(literal: str) -> float | _Unreadable:
    value = float(literal)
    return value if math.isfinite(value) else _NON_FINITE


def _parse_int(literal: str) -> int | _Unreadable:
    return int(literal) if len(literal.lstrip("-")) <= MAX_INT_DIGITS else _LONG_INTEGER


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH, root: str = "message") -> Any:
    """Parse JSON, refusing what PostgreSQL cannot store (see the module's docstring).

    Raises `UnsafeJSON` naming the first problem's path (from `root`), or the errors of
    `json.loads` (`json.JSONDecodeError`, `UnicodeDecodeError`) for text that is not JSON.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    # Fewer opening brackets than the limit cannot nest past it (most messages): no scan.
    few = text.count("[") + text.count("{") <= max_depth
    if not few and nesting_depth(text, stop_after=max_depth) > max_depth:
        raise UnsafeJSON(Problem(ProblemKind.TOO_DEEP, root, rule(ProblemKind.TOO_DEEP, max_depth=max_depth)))
    refused: list[bool] = []

    def constant(name: str) -> _Unreadable:  # NaN, Infinity, -Infinity
        refused.append(True)
        return _NON_FINITE

    def number(literal: str) -> float | _Unreadable:
        value = _parse_float(literal)
        if isinstance(value, _Unreadable):
            refused.append(True)
        return value

    def integer(literal: str) -> int | _Unreadable:
        value = _parse_int(literal)
        if isinstance(value, _Unreadable):
            refused.append(True)
        return value

    value = json.loads(text, parse_constant=constant, parse_float=number, parse_int=integer)
    # Walk only when something can be wrong: a refused number, an escape that makes a NUL
    # or a surrogate, or a surrogate in the text itself (a raw NUL is already not JSON).
    if refused or _RISKY_ESCAPE.search(text) or not _encodable(text):
        problem = find_problem(value, max_depth=max_depth, root=root)
        if problem is not None:
            raise UnsafeJSON(problem)
    return value


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_problem(value: Any, *, max_depth: int = MAX_DEPTH, root: str = "message") -> Problem | None:
    """The first value inside `value` that PostgreSQL cannot store, with its path; or None.

    Walks iteratively (depth-first, in document order), so any depth is safe to check.
    Mappings' keys are checked like strings. Values of other types (bool, None, an int
    within range, a finite float or Decimal) are fine.
    """
    # Each entry: (value, depth, parent entry's path node); paths are built only on a problem.
    stack: list[tuple[Any, int, _Path]] = [(value, 0, None)]
    while stack:
        current, depth, path = stack.pop()
        kind = _scalar_problem(current)
        if kind is not None:
            return Problem(kind, _render(path, root), rule(kind))
        if isinstance(current, dict | list | tuple):
            if depth + 1 > max_depth:
                too_deep = ProblemKind.TOO_DEEP
                return Problem(too_deep, _render(path, root), rule(too_deep, max_depth=max_depth))
            if isinstance(current, dict):
                children: list[tuple[Any, int, _Path]] = []
                for key, child in current.items():
                    key_kind = _scalar_problem(key) if isinstance(key, str) else None
                    if key_kind is not None:
                        return Problem(key_kind, _render((path, key), root), "a key " + rule(key_kind))
                    children.append((child, depth + 1, (path, key)))
            else:
                children = [(child, depth + 1, (path, i)) for i, child in enumerate(current)]
            stack.extend(reversed(children))
    return None


def _scalar_problem(value: Any) -> ProblemKind | None:
    if isinstance(value, str):
        if "\x00" in value:
            return ProblemKind.NUL
        return None if _encodable(value) else ProblemKind.SURROGATE
    if isinstance(value, _Unreadable):
        return value.kind
    if isinstance(value, float) and not math.isfinite(value):
        return ProblemKind.NON_FINITE
    if isinstance(value, Decimal) and not value.is_finite():
        return ProblemKind.NON_FINITE
    return None


def _render(path: _Path, root: str) -> str:
    """`data.items[3].key` (`root` for the value itself), like the schema checks' paths.

    A key that is not a plain name is quoted and ASCII-escaped (`metadata["a\\u0000b"]`),
    so the path is always printable and encodable.
    """
    parts: list[str | int] = []
    while path is not None:
        path, part = path
        parts.append(part)
    text = ""
    for part in reversed(parts):
        if isinstance(part, int):
            text += f"[{part}]"
        elif _SIMPLE_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text or root
