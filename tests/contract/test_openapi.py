"""The committed OpenAPI schema (schemas/openapi.yaml) is the one the code generates, and valid.

A change to the API changes the generated schema; committing it with the change makes
the API's change visible in review. `make schemas` regenerates it.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from openapi_spec_validator import validate

from orchestrator.contracts import SCHEMA_DIR

pytestmark = pytest.mark.contract

COMMITTED = SCHEMA_DIR / "openapi.yaml"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("openapi") / "openapi.yaml"
    # --fail-on-warn: a new warning (an unnamed enum, an untyped field) fails here too.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return path.read_text()


def test_the_committed_openapi_schema_is_the_generated_one(generated: str) -> None:
    committed = COMMITTED.read_text()
    if committed != generated:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                "schemas/openapi.yaml (committed)",
                "schemas/openapi.yaml (generated)",
            )
        )
        pytest.fail(
            f"The API's OpenAPI schema changed: run `make schemas` and commit schemas/openapi.yaml "
            f"(if the change breaks clients, see docs/contracts.md).\n{diff}",
            pytrace=False,
        )


def test_the_committed_openapi_schema_is_a_valid_openapi_document() -> None:
    spec = yaml.safe_load(COMMITTED.read_text())
    validate(spec)
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/batches/" in spec["paths"]
    assert "BatchStateEnum" in spec["components"]["schemas"]


def _operations() -> list[tuple[str, str, dict[str, object]]]:
    spec = yaml.safe_load(COMMITTED.read_text())
    return [(method, path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def test_every_operation_has_a_resource_tag_a_summary_and_a_description() -> None:
    resources = {"batches", "pipelines", "config", "flags", "errors", "health", "audit"}
    for method, path, op in _operations():
        assert op.get("tags") and set(op["tags"]) <= resources, (method, path, op.get("tags"))
        assert op.get("summary") and op.get("description"), (method, path)
    assert {tag for _, _, op in _operations() for tag in op["tags"]} == resources  # type: ignore[attr-defined]


def test_the_operator_actions_explain_their_body_and_their_409() -> None:
    spec = yaml.safe_load(COMMITTED.read_text())
    for action in ("cancel", "retry", "retry-items", "rollback"):
        op = spec["paths"][f"/api/v1/batches/{{id}}/{action}/"]["post"]
        assert "reason" in op["description"] and "optional" in op["description"].lower(), action
        assert "409" in op["responses"] and "invalid_transition" in op["responses"]["409"]["description"]
        body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert spec["components"]["schemas"][body]["properties"]["reason"]["description"], action
    create = spec["paths"]["/api/v1/batches/"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "items" in spec["components"]["schemas"][body]["required"]
