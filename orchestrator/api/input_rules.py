"""What JSON BOS takes in from outside: no U+0000, no lone surrogate, no NaN or Infinity,
nesting at most `MAX_DEPTH` deep.

PostgreSQL refuses U+0000 in text and jsonb, and UTF-8 has no encoding of a lone surrogate
(a JSON `"\\ud800"` escape makes one); NaN and Infinity are not JSON (RFC 8259) and jsonb has
no place for them; deep nesting runs the parser, the encoder and jsonb's own input out of
stack. Values are checked once, where they come in, so nothing behind that edge ever meets
one. Pure Python, no Django: the Kafka intake keeps the same rules
(orchestrator/input_safety.py), and the two are meant to become one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

# Deep enough for any real payload (an essay is `{"text": …}`), far below the ~1,000 levels
# at which Python's recursion limit stops the parser and the encoder.
MAX_DEPTH = 64

_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,40}")


class Problem(NamedTuple):
    code: str
    path: str
    message: str


class InputRejected(ValueError):
    """Input that can never be accepted: `code` is stable, `message` says where and why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _child_path(path: str, step: str | int) -> str:
    if isinstance(step, int):
        return f"{path}[{step}]"
    if _IDENTIFIER.fullmatch(step):
        return f"{path}.{step}"
    shown = step if len(step) <= 40 else step[:40] + "…"
    return f"{path}[{json.dumps(shown)}]"


def _string_problem(text: str, path: str, what: str) -> Problem | None:
    found = _BAD_CHARACTER.search(text)
    if found is None:
        return None
    char = found.group()
    name = "U+0000 (NUL)" if char == "\x00" else f"a lone surrogate U+{ord(char):04X}"
    return Problem("invalid_character", path, f"{what} contains {name} at position {found.start()}")


def _walk(value: Any, max_depth: int) -> Iterator[Problem]:
    # An explicit stack, not recursion: the value may be as deep as the caller's stack allows.
    stack: list[tuple[Any, str, int]] = [(value, "$", 0)]
    while stack:
        current, path, depth = stack.pop()
        if isinstance(current, str):
            if problem := _string_problem(current, path, "string"):
                yield problem
        elif isinstance(current, float):
            if not math.isfinite(current):
                yield Problem("invalid_number", path, f"{current} is not a JSON number")
        elif isinstance(current, dict | list | tuple):
            if depth + 1 > max_depth:
                yield Problem("too_deep", path, f"nested more than {max_depth} levels deep")
                continue
            if isinstance(current, dict):
                children = []
                for key, child in current.items():
                    child_path = _child_path(path, str(key))
                    if isinstance(key, str) and (problem := _string_problem(key, child_path, "key")):
                        yield problem
                    children.append((child, child_path, depth + 1))
                stack.extend(reversed(children))
            else:
                stack.extend(
                    (child, _child_path(path, i), depth + 1)
                    for i, child in reversed(list(enumerate(current)))
                )


def problem_of(value: Any, *, max_depth: int = MAX_DEPTH) -> Problem | None:
    """The first thing found in a JSON-like value that breaks the rules, with its code."""
    return next(_walk(value, max_depth), None)


def first_problem(value: Any, *, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """`(path, message)` of the first thing in `value` that breaks the rules, or None if there is none.

    `path` is JSONPath-like: `$.items[0].payload["a b"]`.
    """
    problem = problem_of(value, max_depth=max_depth)
    return None if problem is None else (problem.path, problem.message)


def _refuse_constant(name: str) -> Any:
    raise InputRejected("invalid_number", f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        shown = text if len(text) <= 30 else text[:30] + "…"
        raise InputRejected("invalid_number", f"{shown} is too large for a JSON number")
    return number


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:  # more digits than Python converts (sys.get_int_max_str_digits)
        raise InputRejected("invalid_number", f"an integer of {len(text)} digits is too long") from exc


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse UTF-8 JSON text by the rules above; raise `InputRejected` on anything else.

    Codes: `invalid_json` (not UTF-8 JSON), `invalid_number` (NaN, Infinity, a number out of
    range), `invalid_character` (U+0000, a lone surrogate), `too_deep`.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise InputRejected("invalid_json", f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_integer
        )
    except RecursionError as exc:
        raise InputRejected("too_deep", f"nested more than {max_depth} levels deep") from exc
    except json.JSONDecodeError as exc:
        raise InputRejected(
            "invalid_json", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    problem = problem_of(value, max_depth=max_depth)
    if problem is not None:
        raise InputRejected(problem.code, f"{problem.path}: {problem.message}")
    return value
