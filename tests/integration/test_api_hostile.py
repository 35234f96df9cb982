"""Hostile REST input: each is a JSON 4xx with a stable code, stores nothing, and never a 500
or an HTML page (CONTRACT §5), also with DEBUG on."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from rest_framework.test import APIClient

from orchestrator.api.input_rules import MAX_DEPTH
from orchestrator.api.middleware import ApiErrorMiddleware
from orchestrator.api.parsers import StrictJSONParser, body_limit
from orchestrator.errors import OrchestrationError
from orchestrator.models import Batch, BatchItem
from orchestrator.services.batches import batch_create
from orchestrator.services.users import api_user_grant
from tests.support.factories import batch_request, publish_essay_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("held_batches")]


@pytest.fixture
def api(db: None) -> APIClient:
    publish_essay_pipeline()
    token = api_user_grant(username="op", tenant="acme", role="operator")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def body_text(payload: str = '{"text": "An essay."}', **overrides: Any) -> str:
    """A valid batch body as JSON text with `payload` spliced in as the item's payload."""
    data: dict[str, Any] = {
        "tenant": "acme",
        "external_id": "hostile-1",
        "pipeline": "essay-analysis",
        "items": [{"key": "essay-1", "payload": "PAYLOAD"}],
        **overrides,
    }
    return json.dumps(data).replace('"PAYLOAD"', payload)


def post_text(api: APIClient, text: str) -> Any:
    return api.post("/api/v1/batches/", text, content_type="application/json")


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    payload: dict[str, Any] = json.loads(response.content)
    assert payload["code"] == code, payload
    assert payload["message"]
    return payload


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "code", "where"),
    [
        (body_text('{"text": "a\\u0000b"}'), "invalid_character", "$.items[0].payload.text"),
        (body_text('{"a\\u0000": 1}'), "invalid_character", '$.items[0].payload["a\\u0000"]'),
        (body_text(metadata={"course": "EN\u0000101"}), "invalid_character", "$.metadata.course"),
        (body_text(metadata={"cou\u0000rse": 1}), "invalid_character", "$.metadata"),
        (body_text(external_id="x\u0000"), "invalid_character", "$.external_id"),
        (body_text('"\\ud800"'), "invalid_character", "$.items[0].payload"),
        (body_text('{"n": NaN}'), "invalid_number", "NaN"),
        (body_text('{"n": Infinity}'), "invalid_number", "Infinity"),
        (body_text("[-Infinity]"), "invalid_number", "$.items[0].payload[0]"),
        (body_text('{"n": 1e999}'), "invalid_number", "$.items[0].payload.n"),
        (body_text(nested(1_200)), "too_deep", f"{MAX_DEPTH} levels"),
        (body_text(nested(100_000)), "too_deep", f"{MAX_DEPTH} levels"),
        (body_text(nested(MAX_DEPTH - 2)), "too_deep", f"{MAX_DEPTH} levels"),
        ('{"tenant": "acme", "priority": NaN, "items": [{"key": "k"}]}', "invalid_number", "NaN"),
        ("{not json", "parse_error", "line 1"),
        ('{"a": "\xff"}'.encode("latin-1"), "parse_error", "UTF-8"),
    ],
    ids=[
        "nul-in-payload",
        "nul-in-payload-key",
        "nul-in-metadata",
        "nul-in-metadata-key",
        "nul-in-external-id",
        "lone-surrogate",
        "nan",
        "infinity",
        "minus-infinity",
        "overflowing-float",
        "nested-1200",
        "nested-100000",
        "nested-just-past-the-cap",
        "nan-priority",
        "not-json",
        "not-utf8",
    ],
)
def test_a_hostile_body_is_a_400_with_a_code_and_stores_nothing(
    api: APIClient, text: str | bytes, code: str, where: str
) -> None:
    payload = assert_error(post_text(api, text), 400, code)  # type: ignore[arg-type]
    assert where in payload["message"]
    assert not Batch.objects.exists() and not BatchItem.objects.exists()


def test_nesting_up_to_the_cap_is_accepted(api: APIClient) -> None:
    # The body, `items` and the item are 3 levels: the payload's own make MAX_DEPTH.
    created = post_text(api, body_text(nested(MAX_DEPTH - 3)))
    assert created.status_code == 201, created.json()
    assert BatchItem.objects.get().payload == json.loads(nested(MAX_DEPTH - 3))


def test_a_body_over_the_limit_is_a_json_413_too_large(api: APIClient) -> None:
    big = body_text(json.dumps({"text": "a" * 10_000_000}))
    payload = assert_error(post_text(api, big), 413, "too_large")
    assert str(body_limit()) in payload["message"]
    assert not Batch.objects.exists()


def test_an_item_over_the_item_limit_is_a_400_item_too_large_and_one_at_it_is_taken(api: APIClient) -> None:
    limit = settings.BOS_MAX_ITEM_BYTES
    assert limit == 256 * 1024  # the default, under the body's limit: a body can hold such an item
    at_limit = json.dumps({"text": "a" * (limit - len('{"text":""}'))}, separators=(",", ":"))
    assert len(at_limit) == limit
    over = json.dumps({"text": "a" * (limit - len('{"text":""}') + 1)}, separators=(",", ":"))
    payload = assert_error(post_text(api, body_text(over)), 400, "item_too_large")
    assert "'essay-1'" in payload["message"] and str(limit) in payload["message"]
    assert not Batch.objects.exists()
    assert post_text(api, body_text(at_limit, external_id="at-limit")).status_code == 201


def test_the_parser_reads_no_more_than_the_limit_whatever_the_header_says() -> None:
    limit = body_limit()
    assert limit is not None
    stream = io.BytesIO(b" " * (limit + 10))
    with pytest.raises(OrchestrationError) as raised:
        StrictJSONParser().parse(stream)
    assert (raised.value.status, raised.value.code) == (413, "too_large")
    assert stream.tell() == limit + 1


def test_a_body_too_big_found_while_reading_is_a_json_413(rf: Any) -> None:
    # Without a Content-Length (chunked), Django finds out only as it reads the body.
    middleware = ApiErrorMiddleware(lambda request: HttpResponse())
    response = middleware.process_exception(rf.post("/api/v1/batches/"), RequestDataTooBig("too big"))
    assert response is not None
    assert_error(response, 413, "too_large")
    assert middleware.process_exception(rf.post("/admin/"), RequestDataTooBig("too big")) is None


def test_a_form_body_is_a_415(api: APIClient) -> None:
    response = api.post("/api/v1/batches/", {"tenant": "acme"}, format="multipart")
    assert_error(response, 415, "unsupported_media_type")


ODD_OFFSET = "created_after=2026-01-01T00:00:00%2B17:00"


def test_a_date_time_with_any_offset_filters_the_list_in_utc(api: APIClient) -> None:
    batch_create(request=batch_request(external_id="recent"), actor="test")
    listed = api.get(f"/api/v1/batches/?{ODD_OFFSET}")
    assert listed.status_code == 200, listed.json()
    assert [b["external_id"] for b in listed.json()["results"]] == ["recent"]
    # 2100-01-01T00:00:00-17:00 is 2100-01-01T17:00Z: after everything.
    later = api.get("/api/v1/batches/?created_after=2100-01-01T00:00:00-17:00").json()
    assert later["count"] == 0
    early = api.get("/api/v1/batches/?created_before=2026-01-01T00:00:00%2B23:59").json()
    assert early["count"] == 0


@pytest.mark.parametrize(
    "query",
    ["created_after=0001-01-01T00:00:00%2B17:00", "created_before=9999-12-31T23:59:59-17:00"],
)
def test_a_date_time_out_of_range_in_utc_is_a_400(api: APIClient, query: str) -> None:
    payload = assert_error(api.get(f"/api/v1/batches/?{query}"), 400, "invalid_request")
    assert list(payload["details"]) == [query.split("=")[0]]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "", 200),
        ("get", "history/", 200),
        ("get", "items/", 200),
        ("get", "graph/", 200),
        ("post", "cancel/", 200),
        # An accepted batch can be neither retried nor rolled back: the state decides, not the filters.
        ("post", "retry/", 409),
        ("post", "retry-items/", 409),
        ("post", "rollback/", 409),
    ],
)
def test_detail_actions_ignore_the_list_filters(api: APIClient, method: str, path: str, status: int) -> None:
    batch = batch_create(request=batch_request(), actor="test").batch
    url = f"/api/v1/batches/{batch.id}/{path}?{ODD_OFFSET}&state=completed&created_before=garbage"
    response = getattr(api, method)(url)
    assert response.status_code == status, response.content[:300]
    if status == 409:
        assert response.json()["code"] == "invalid_state"


def test_an_impossible_since_is_a_400(api: APIClient) -> None:
    assert_error(api.get("/api/v1/errors/?since=2026-02-30T00:00:00"), 400, "invalid_since")
    assert_error(api.get("/api/v1/errors/?since=0001-01-01T00:00:00%2B17:00"), 400, "invalid_since")
    assert api.get("/api/v1/errors/?since=2026-01-01T00:00:00%2B17:00").status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/pipelines/a%00b/",
        "/api/v1/pipelines/a%00b/versions/",
        "/api/v1/batches/?external_id=a%00b",
        "/api/v1/batches/?pipeline=%00",
        "/api/v1/errors/?since=%00",
        "/api/v1/batches/?a%00=1",
    ],
)
def test_nul_in_a_path_or_query_is_a_400(api: APIClient, url: str) -> None:
    assert_error(api.get(url), 400, "invalid_character")


@pytest.mark.parametrize(
    "header",
    [
        {"HTTP_AUTHORIZATION": "Token a\x00b"},
        {"HTTP_COOKIE": "sessionid=abcdefgh\x00ij"},
        {"HTTP_X_ANY": "\x00"},
    ],
    ids=["token", "session-cookie", "any-header"],
)
def test_nul_in_a_header_is_a_400(api: APIClient, header: dict[str, str]) -> None:
    client = APIClient()
    assert_error(client.get("/api/v1/batches/", **header), 400, "invalid_character")


def test_too_many_query_parameters_is_a_json_400(api: APIClient) -> None:
    query = "&".join(f"p{i}=1" for i in range(1_001))
    assert_error(api.get(f"/api/v1/batches/?{query}"), 400, "bad_request")


def test_an_unknown_api_path_is_a_json_404(api: APIClient) -> None:
    assert_error(api.get("/api/v1/nothing-here/"), 404, "not_found")
    assert_error(api.get("/api/v2/"), 404, "not_found")


class TestWithDebugOn:
    """DEBUG=True (the default in development) never shows Django's debug page on API paths."""

    @pytest.fixture(autouse=True)
    def debug(self, settings: Any) -> None:
        settings.DEBUG = True

    def test_an_unknown_api_path_is_a_json_404(self, api: APIClient) -> None:
        assert_error(api.get("/api/v1/nothing-here/"), 404, "not_found")
        assert_error(api.get("/healthz/nothing"), 404, "not_found")

    def test_a_host_not_allowed_is_a_json_400(self, api: APIClient) -> None:
        assert_error(api.get("/api/v1/batches/", HTTP_HOST="evil.example"), 400, "bad_request")

    def test_each_hostile_input_is_still_json(self, api: APIClient) -> None:
        assert_error(post_text(api, body_text('{"text": "\\u0000"}')), 400, "invalid_character")
        assert_error(post_text(api, body_text(nested(1_200))), 400, "too_deep")
        assert_error(api.get("/api/v1/pipelines/a%00b/"), 400, "invalid_character")
        assert_error(post_text(api, body_text('"' + "a" * 10_000_000 + '"')), 413, "too_large")

    @pytest.mark.parametrize(
        ("url", "target"),
        [
            ("/api/v1/errors/", "orchestrator.api.views.top_errors"),
            ("/metrics", "orchestrator.api.metrics.generate_latest"),
        ],
    )
    def test_an_uncaught_exception_is_a_logged_json_500(
        self,
        api: APIClient,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
        url: str,
        target: str,
    ) -> None:
        def explode(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug, not an input")

        monkeypatch.setattr(target, explode)
        api.raise_request_exception = False
        with caplog.at_level(logging.ERROR, logger="django.request"):
            response = api.get(url)
        payload = assert_error(response, 500, "server_error")
        assert "a bug" not in json.dumps(payload) and "Traceback" not in response.content.decode()
        logged = [r for r in caplog.records if r.name == "django.request" and r.exc_info]
        assert logged and logged[0].exc_info is not None and logged[0].exc_info[0] is RuntimeError
