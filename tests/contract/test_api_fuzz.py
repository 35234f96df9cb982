"""Schemathesis over the whole committed OpenAPI schema: no input is a server error, and
every 4xx is JSON with a `code` (CONTRACT §5).

Every operation of schemas/openapi.yaml gets valid and invalid parameters and bodies
(U+0000 included), sent through the real WSGI stack (middleware, DRF, the database) as a
real user with a token, an operator of tenant `acme`. Path ids are now and then those of a
real batch and pipeline, so the detail actions run past their 404; a 2xx must match its
response schema. Bounded (MAX_EXAMPLES per operation, plus the schema's examples and
schemathesis' coverage cases) and derandomized, so CI sees the same cases every run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from orchestrator.contracts import SCHEMA_DIR
from orchestrator.services.batches import batch_create
from orchestrator.services.users import api_user_grant
from tests.support.factories import batch_request, publish_essay_pipeline

pytestmark = [pytest.mark.contract, pytest.mark.usefixtures("held_batches")]

MAX_EXAMPLES = 25

schema = schemathesis.openapi.from_path(SCHEMA_DIR / "openapi.yaml")
schema.app = get_wsgi_application()
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")

# What the current test's fixtures created: ids the path parameters sometimes take.
REAL: dict[str, str] = {}


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    # Empty while schemathesis builds the cases of the schema's examples (at collection).
    real = {
        name: REAL[name]
        for name in ("id", "name", "version")
        if name in (path_parameters or {}) and name in REAL
    }
    if not real:
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, **real}])


@pytest.fixture
def auth(db: None) -> Iterator[dict[str, str]]:
    """An operator's token header, a published pipeline and a batch to act on."""
    publish_essay_pipeline()
    token = api_user_grant(username="fuzzer", tenant="acme", role="operator")
    batch = batch_create(request=batch_request(tenant="acme"), actor="test").batch
    REAL.update(id=str(batch.id), name="essay-analysis", version="1")
    # As Django's test client does: the request's end must not close the test's connection
    # (and its transaction) under the test.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield {"Authorization": f"Token {token.key}"}
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)
    REAL.clear()


@schema.parametrize()
@hypothesis.settings(
    suppress_health_check=[
        hypothesis.HealthCheck.function_scoped_fixture,
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.filter_too_much,
        hypothesis.HealthCheck.data_too_large,
    ],
)
def test_no_input_is_a_server_error_and_every_4xx_is_json_with_a_code(
    case: Any, auth: dict[str, str]
) -> None:
    response = case.call(headers=auth)
    status = response.status_code
    where = f"{status} for:\n{case.as_curl_command(headers=auth)}\n{response.text[:500]}"
    assert status < 500, where
    if 400 <= status < 500:
        assert response.headers.get("content-type", [""])[0].startswith("application/json"), where
        body = json.loads(response.text)
        assert isinstance(body, dict) and isinstance(body.get("code"), str) and body["code"], where
        assert isinstance(body.get("message"), str), where
    if status < 300:
        case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])
