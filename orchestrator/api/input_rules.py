"""What JSON the REST API takes in: the rules of `orchestrator.input_safety`, with the
API's error codes.

One set of rules for every way in (the Kafka consumer uses the same module): no U+0000,
no lone surrogate, no NaN, Infinity or integer too long to convert, nesting at most
`MAX_DEPTH` deep. Here they get the stable codes the API answers with:
`invalid_character`, `invalid_number`, `too_deep`, and `invalid_json` for text that is
not UTF-8 JSON at all. Pure Python, no Django.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from orchestrator import input_safety
from orchestrator.input_safety import ProblemKind

MAX_DEPTH = input_safety.MAX_DEPTH
ROOT = "$"

CODES = {
    ProblemKind.NUL: "invalid_character",
    ProblemKind.SURROGATE: "invalid_character",
    ProblemKind.NON_FINITE: "invalid_number",
    ProblemKind.LONG_INTEGER: "invalid_number",
    ProblemKind.TOO_DEEP: "too_deep",
}


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


def _jsonpath(path: str) -> str:
    """`$.items[0].payload` from input_safety's `items[0].payload` (`$` is the body)."""
    if path == ROOT:
        return path
    return f"{ROOT}{path}" if path.startswith("[") else f"{ROOT}.{path}"


def _of(problem: input_safety.Problem) -> Problem:
    return Problem(CODES[problem.kind], _jsonpath(problem.path), problem.rule)


def problem_of(value: Any, *, max_depth: int = MAX_DEPTH) -> Problem | None:
    """The first thing found in a JSON-like value that breaks the rules, with its code."""
    found = input_safety.find_problem(value, max_depth=max_depth, root=ROOT)
    return None if found is None else _of(found)


def first_problem(value: Any, *, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """`(path, message)` of the first thing in `value` that breaks the rules, or None.

    `path` is JSONPath-like: `$.items[0].payload["a b"]`.
    """
    problem = problem_of(value, max_depth=max_depth)
    return None if problem is None else (problem.path, problem.message)


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse UTF-8 JSON text by the rules; raise `InputRejected` on anything else."""
    try:
        return input_safety.loads(data, max_depth=max_depth, root=ROOT)
    except input_safety.UnsafeJSON as exc:
        problem = _of(exc.problem)
        raise InputRejected(problem.code, f"{problem.path}: {problem.message}") from exc
    except UnicodeDecodeError as exc:
        raise InputRejected("invalid_json", f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise InputRejected(
            "invalid_json", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
