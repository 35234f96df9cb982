"""`when:` conditions of pipeline phases, evaluated safely (simpleeval: no `eval`).

A condition is one Python-like expression over four names:

- `metadata` — the batch's metadata (a dict),
- `batch` — `priority`, `tenant`, `external_id`, `pipeline`, `items_total`,
- `items` — `total`, `failed` (items failed so far), `ok` (total − failed),
- `phases` — for each phase: `state`, `output` (a per-batch phase's result),
  `items_failed`.

and one function of the batch: `flag("name")`, whether the batch gets that feature flag
(orchestrator/config/flags.py: sticky per batch).

Keys read as attributes too. Examples: `metadata.grading == True`,
`items.failed == 0`, `batch.priority >= 8`,
`phases.aggregate.output.essays_analysed > 10`, `flag("new-scoring") and batch.priority > 3`. A missing key is an error, so guard
optional ones with `metadata.get("grading")`. No Django here.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Mapping
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

NAMES = ("metadata", "batch", "items", "phases")
FUNCTIONS = {"len": len, "any": any, "all": all, "min": min, "max": max}
# Functions bound to the batch at hand: the caller passes them among the names.
BATCH_FUNCTIONS = ("flag",)


class ConditionError(ValueError):
    """A condition that cannot be parsed or evaluated."""


def _evaluator(names: Mapping[str, Any]) -> EvalWithCompoundTypes:
    bound = {name: names[name] for name in BATCH_FUNCTIONS if name in names}
    values = {k: v for k, v in names.items() if k not in bound}
    # A deep copy: an expression calling a mutating method changes nothing real.
    return EvalWithCompoundTypes(names=copy.deepcopy(values), functions={**FUNCTIONS, **bound})


def check_condition(expression: str) -> None:
    """Raise ConditionError unless `expression` parses and uses only the known names."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionError(f"invalid expression: {exc.msg}") from exc
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in (*NAMES, *FUNCTIONS, *BATCH_FUNCTIONS):
            raise ConditionError(f'unknown name {node.id!r}; use {", ".join(NAMES)} or flag("name")')
        if isinstance(node, (ast.Lambda, ast.comprehension, ast.NamedExpr)):
            raise ConditionError("comprehensions, lambdas and assignments are not allowed")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "flag":
            _check_flag_call(node)


def _check_flag_call(node: ast.Call) -> None:
    args = node.args
    if (
        node.keywords
        or len(args) != 1
        or not isinstance(args[0], ast.Constant)
        or not isinstance(args[0].value, str)
    ):
        raise ConditionError('flag() takes one flag name in quotes: flag("name")')


def evaluate(expression: str, names: Mapping[str, Any]) -> bool:
    """The truth of `expression` over `names`; a failure to evaluate is a ConditionError."""
    try:
        return bool(_evaluator(names).eval(expression.strip()))
    except (
        InvalidExpression,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        ZeroDivisionError,
    ) as exc:
        raise ConditionError(f"{type(exc).__name__}: {exc}") from exc
