"""The rules for JSON from outside (orchestrator.api.input_rules): pure, no database."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.api.input_rules import MAX_DEPTH, InputRejected, first_problem, loads, problem_of

pytestmark = pytest.mark.unit


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        {"text": "An essay.", "n": 3, "x": 2.5, "ok": True, "none": None, "list": [1, "a", {}]},
        "plain",
        0,
        nested(MAX_DEPTH),
        {"emoji": "\U0001f600", "accents": "é", "tab": "\t", "escape": "\u001b"},
    ],
)
def test_acceptable_values_have_no_problem(value: Any) -> None:
    assert first_problem(value) is None
    assert loads(json.dumps(value)) == value


@pytest.mark.parametrize(
    ("value", "path", "code"),
    [
        ({"a": [1, {"b": "x\x00"}]}, "$.a[1].b", "invalid_character"),
        ({"a\x00": 1}, '$["a\\u0000"]', "invalid_character"),
        ({"k": "\ud800"}, "$.k", "invalid_character"),
        ({"n": float("nan")}, "$.n", "invalid_number"),
        ([float("inf")], "$[0]", "invalid_number"),
        ({"deep": nested(MAX_DEPTH)}, "$.deep" + "[0]" * (MAX_DEPTH - 1), "too_deep"),
    ],
)
def test_the_first_problem_is_found_with_its_path(value: Any, path: str, code: str) -> None:
    problem = problem_of(value)
    assert problem is not None and (problem.path, problem.code) == (path, code)
    assert first_problem(value) == (problem.path, problem.message)


def test_a_value_deeper_than_the_stack_is_walked_without_recursion() -> None:
    problem = problem_of(nested(50_000))
    assert problem is not None and problem.code == "too_deep"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"a": NaN}', "invalid_number"),
        ("[Infinity]", "invalid_number"),
        ("[-Infinity]", "invalid_number"),
        ("[1e999]", "invalid_number"),
        ("1" * 5_000, "invalid_number"),
        ('"\\u0000"', "invalid_character"),
        ('{"\\u0000": 1}', "invalid_character"),
        ('"\\udc00"', "invalid_character"),
        ("[" * 1_200 + "]" * 1_200, "too_deep"),
        ("[" * 100_000 + "]" * 100_000, "too_deep"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "too_deep"),
        ("{not json", "invalid_json"),
        ("", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
    ],
)
def test_loads_refuses_with_a_code(text: str | bytes, code: str) -> None:
    with pytest.raises(InputRejected) as refused:
        loads(text)
    assert refused.value.code == code and refused.value.message
