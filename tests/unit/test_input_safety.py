"""The rules of what PostgreSQL can store, for every JSON value that comes in."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest

from orchestrator.input_safety import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    ProblemKind,
    UnsafeJSON,
    find_problem,
    loads,
    nesting_depth,
)

pytestmark = pytest.mark.unit


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "kind", "path"),
    [
        ('{"a": NaN}', ProblemKind.NON_FINITE, "a"),
        ('{"a": [1, Infinity]}', ProblemKind.NON_FINITE, "a[1]"),
        ('{"a": {"b": -Infinity}}', ProblemKind.NON_FINITE, "a.b"),
        ('{"a": 1e400}', ProblemKind.NON_FINITE, "a"),
        ('{"a": -1e400}', ProblemKind.NON_FINITE, "a"),
        ('{"a": "x\\u0000y"}', ProblemKind.NUL, "a"),
        ('{"items": [{"key": "\\u0000"}]}', ProblemKind.NUL, "items[0].key"),
        ('{"k\\u0000": 1}', ProblemKind.NUL, '["k\\u0000"]'),
        ('{"a": "\\ud800"}', ProblemKind.SURROGATE, "a"),
        ('{"a": "\\udfff tail"}', ProblemKind.SURROGATE, "a"),
        ('{"n": ' + "9" * (MAX_INT_DIGITS + 1) + "}", ProblemKind.LONG_INTEGER, "n"),
        ('{"n": -' + "9" * (MAX_INT_DIGITS + 1) + "}", ProblemKind.LONG_INTEGER, "n"),
        (nested(MAX_DEPTH + 1), ProblemKind.TOO_DEEP, "message"),
        (nested(1200), ProblemKind.TOO_DEEP, "message"),
        (nested(1_000_000), ProblemKind.TOO_DEEP, "message"),
        ('{"a": ' * 1200 + "1" + "}" * 1200, ProblemKind.TOO_DEEP, "message"),
    ],
)
def test_loads_refuses_what_postgres_cannot_store_naming_the_path(
    text: str, kind: ProblemKind, path: str
) -> None:
    with pytest.raises(UnsafeJSON) as err:
        loads(text)
    assert err.value.problem.kind is kind
    assert err.value.problem.path == path
    assert str(err.value) == f"{path}: {err.value.problem.rule}"


def test_the_first_problem_in_document_order_is_the_one_reported() -> None:
    with pytest.raises(UnsafeJSON) as err:
        loads('{"first": [1, {"x": NaN}], "second": "\\u0000"}')
    assert err.value.problem.path == "first[1].x"


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1.5, "b": -0.0, "c": 1e300, "d": [true, false, null]}',
        '{"emoji": "\\ud83d\\ude00", "accents": "é ü", "raw": "日本"}',
        '{"escaped backslash": "\\\\u0000 is text here"}',
        '{"brackets in strings": "[[[[{{{{", "quote": "\\"[["}',
        '{"n": ' + "9" * MAX_INT_DIGITS + "}",
        nested(MAX_DEPTH),
        '"just a string"',
        "42",
    ],
)
def test_loads_reads_ordinary_json_like_json_loads(text: str) -> None:
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text)


def test_text_that_is_not_json_raises_what_json_loads_raises() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads("{not json")
    with pytest.raises(UnicodeDecodeError):
        loads(b"\xff\xfe")
    with pytest.raises(json.JSONDecodeError):
        loads('"raw \x00 nul"')  # a raw control character is not JSON


def test_a_raw_lone_surrogate_in_a_str_is_refused() -> None:
    with pytest.raises(UnsafeJSON) as err:
        loads('{"a": "\ud800"}')
    assert err.value.problem.kind is ProblemKind.SURROGATE


def test_the_depth_limit_can_be_chosen_by_the_caller() -> None:
    assert loads(nested(3), max_depth=3) == [[[]]]
    with pytest.raises(UnsafeJSON) as err:
        loads(nested(4), max_depth=3, root="body")
    assert err.value.problem.path == "body"
    assert "more than 3 levels" in err.value.problem.rule


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('{"a": "]]]]"}', 1),
        ('["\\"[[["]', 1),
        (nested(5000), 5000),
    ],
)
def test_nesting_depth_counts_containers_not_brackets_in_strings(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth


@pytest.mark.parametrize(
    ("value", "kind", "path"),
    [
        ({"a": float("nan")}, ProblemKind.NON_FINITE, "a"),
        ({"a": [math.inf]}, ProblemKind.NON_FINITE, "a[0]"),
        ({"a": Decimal("NaN")}, ProblemKind.NON_FINITE, "a"),
        ({"meta": {"x y": "\x00"}}, ProblemKind.NUL, 'meta["x y"]'),
        ({"\ud800": 1}, ProblemKind.SURROGATE, '["\\ud800"]'),
        (("a", ("b", "\x00")), ProblemKind.NUL, "[1][1]"),
    ],
)
def test_find_problem_checks_values_parsed_elsewhere(value: Any, kind: ProblemKind, path: str) -> None:
    problem = find_problem(value)
    assert problem is not None
    assert (problem.kind, problem.path) == (kind, path)
    path.encode("ascii")  # always printable, whatever the key held


def test_find_problem_walks_any_depth_without_recursing() -> None:
    value: list[Any] = []
    for _ in range(50_000):
        value = [value]
    problem = find_problem(value)
    assert problem is not None and problem.kind is ProblemKind.TOO_DEEP
    assert problem.path == "[0]" * MAX_DEPTH
    assert find_problem(value, max_depth=100_000) is None


def test_find_problem_passes_a_clean_value() -> None:
    assert find_problem({"items": [{"key": "a", "payload": {"text": "é", "n": 1.5, "ok": True}}]}) is None
    assert find_problem(None) is None
