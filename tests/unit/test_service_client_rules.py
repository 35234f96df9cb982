"""Service clients, the pure parts: configuration, masking, retry rules, cache keys."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ImproperlyConfigured

from orchestrator.classify import ErrorClass, classify
from orchestrator.service_clients.cache import cache_key
from orchestrator.service_clients.config import ServiceConfig, parse_services, services_setting
from orchestrator.service_clients.errors import (
    CircuitOpen,
    ServiceFailed,
    ServiceRejected,
    ServiceTimeout,
    ServiceUnavailable,
)
from orchestrator.service_clients.masking import MASK, mask_body, mask_headers, mask_url
from orchestrator.service_clients.retries import parse_retry_after, should_retry, wait_seconds
from orchestrator.service_clients.scoring_service import score_text

pytestmark = pytest.mark.unit

CONFIG = ServiceConfig(url="http://svc", retries=2, backoff=0.2, backoff_cap=2.0, retry_after_cap=5.0)


def test_a_service_needs_only_its_url_and_gets_validated_defaults() -> None:
    services = parse_services('{"scoring": {"url": "http://127.0.0.1:8010/"}}')
    config = services["scoring"]
    assert config.url == "http://127.0.0.1:8010"
    assert (config.timeout, config.retries, config.cache_ttl, config.headers) == (5.0, 2, 0, {})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "BOS_SERVICES must be a JSON object"),
        ("[1, 2]", "BOS_SERVICES must be a JSON object"),
        ('{"Scoring!": {"url": "http://x"}}', "is not a valid service name"),
        ('{"scoring": "http://x"}', 'scoring must be an object {"url": …}'),
        ('{"scoring": {}}', "BOS_SERVICES: scoring: url: Field required"),
        ('{"scoring": {"url": "ftp://x"}}', "url: Value error, must be an http:// or https:// URL"),
        ('{"scoring": {"url": "http://x", "timeout": 0}}', "timeout: Input should be greater than 0"),
        (
            '{"scoring": {"url": "http://x", "retries": -1}}',
            "retries: Input should be greater than or equal to 0",
        ),
        ('{"scoring": {"url": "http://x", "colour": "red"}}', "colour: Extra inputs are not permitted"),
        (
            '{"scoring": {"url": "http://x", "headers": {"X": 1}}}',
            "headers.X: Input should be a valid string",
        ),
    ],
)
def test_bad_configuration_names_the_setting_the_service_and_the_field(raw: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured) as error:
        parse_services(raw)
    assert message in str(error.value)


def test_an_empty_setting_means_the_default_and_a_value_replaces_it_whole() -> None:
    default = {"scoring": {"url": "http://127.0.0.1:8010"}}
    assert set(services_setting("", default=default)) == {"scoring"}
    assert set(services_setting('{"pricing": {"url": "https://p"}}', default=default)) == {"pricing"}


def test_secret_headers_are_masked_and_the_rest_kept() -> None:
    masked = mask_headers(
        {
            "Authorization": "Bearer abc",
            "cookie": "sid=1",
            "X-Api-Key": "k",
            "X-Auth-Token": "t",
            "Idempotency-Key": "score-1",
            "X-Correlation-ID": "c-1",
        }
    )
    assert masked == {
        "Authorization": MASK,
        "cookie": MASK,
        "X-Api-Key": MASK,
        "X-Auth-Token": MASK,
        "Idempotency-Key": "score-1",
        "X-Correlation-ID": "c-1",
    }


def test_secret_query_values_and_credentials_in_a_url_are_masked() -> None:
    url = "https://bob:hunter2@svc.example/v1/x?q=rivers&token=abc&API_KEY=k&page=2&client_secret=s"
    masked = mask_url(url)
    assert "hunter2" not in masked and "abc" not in masked and "=k&" not in masked and "=s" not in masked
    assert masked == "https://***@svc.example/v1/x?q=rivers&token=***&API_KEY=***&page=2&client_secret=***"
    assert mask_url("http://svc/x") == "http://svc/x"


def test_secret_body_keys_are_masked_at_any_depth() -> None:
    body = {
        "text": "hi",
        "password": "pw",
        "auth": {"apiKey": "k", "session_id": "s"},
        "items": [{"token": "t"}],
    }
    assert mask_body(body) == {
        "text": "hi",
        "password": MASK,
        "auth": {"apiKey": MASK, "session_id": MASK},
        "items": [{"token": MASK}],
    }
    assert mask_body("plain") == "plain"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Sun, 29 Nov 2026 10:00:07 GMT", now=now) == 7.0
    assert parse_retry_after("Sun, 29 Nov 2026 09:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def _error(
    cls: type, *, maybe_sent: bool = True, retry_after: float | None = None, status: int | None = None
) -> Exception:
    exc = cls("svc", "down") if issubclass(cls, ServiceUnavailable) else cls("failed")
    return exc.describe(
        service="svc",
        method="GET",
        url="http://svc",
        status_code=status,
        retry_after=retry_after,
        maybe_sent=maybe_sent,
    )


@pytest.mark.parametrize(
    ("exc", "method", "key", "retried"),
    [
        (_error(ServiceTimeout), "GET", None, True),
        (_error(ServiceFailed, status=503), "GET", None, True),
        (_error(ServiceUnavailable), "PUT", None, True),
        (_error(ServiceRejected, status=404), "GET", None, False),
        (_error(CircuitOpen, maybe_sent=False), "GET", None, False),
        # Not idempotent: only with a key, or when the request surely never left.
        (_error(ServiceFailed, status=503), "POST", None, False),
        (_error(ServiceTimeout), "POST", None, False),
        (_error(ServiceFailed, status=503), "POST", "k-1", True),
        (_error(ServiceUnavailable, maybe_sent=False), "POST", None, True),
        # A Retry-After longer than the cap is left to the engine's backoff.
        (_error(ServiceFailed, status=429, retry_after=3), "GET", None, True),
        (_error(ServiceFailed, status=429, retry_after=30), "GET", None, False),
        (ValueError("a bug"), "GET", None, False),
    ],
)
def test_what_is_retried(exc: Exception, method: str, key: str | None, retried: bool) -> None:
    assert should_retry(exc, config=CONFIG, method=method, idempotency_key=key) is retried


def test_waits_grow_exponentially_within_the_cap_and_honour_retry_after() -> None:
    waits = [wait_seconds(CONFIG.model_copy(update={"jitter": 0}), n, None) for n in (1, 2, 3, 4, 5)]
    assert waits == [0.2, 0.4, 0.8, 1.6, 2.0]
    jittered = wait_seconds(CONFIG, 3, None)
    assert 0.4 <= jittered <= 0.8
    assert wait_seconds(CONFIG, 1, _error(ServiceFailed, status=429, retry_after=3)) == 3


def test_client_errors_classify_as_the_engine_expects() -> None:
    assert classify(_error(ServiceTimeout)) == ErrorClass.TIMEOUT
    assert classify(_error(ServiceFailed, status=503)) == ErrorClass.TRANSIENT
    assert classify(_error(ServiceUnavailable)) == ErrorClass.DEPENDENCY_UNAVAILABLE
    assert classify(_error(CircuitOpen)) == ErrorClass.DEPENDENCY_UNAVAILABLE
    assert classify(_error(ServiceRejected, status=422)) == ErrorClass.PERMANENT


def test_cache_keys_ignore_parameter_order_but_not_values_or_paths() -> None:
    a = cache_key("svc", "GET", "http://svc/x?a=1&b=2", None)
    assert a == cache_key("svc", "GET", "http://svc/x?b=2&a=1", None)
    assert a == cache_key("svc", "GET", "http://svc/x", {"b": "2", "a": "1"})
    assert a != cache_key("svc", "GET", "http://svc/x?a=1&b=3", None)
    assert a != cache_key("svc", "GET", "http://svc/y?a=1&b=2", None)
    assert a != cache_key("other", "GET", "http://svc/x?a=1&b=2", None)


def test_the_demo_score_is_deterministic_and_within_range() -> None:
    text = "Rivers carve valleys over many years. Their water shapes the land."
    assert score_text(text) == score_text(text)
    assert 0.0 <= score_text(text) <= 1.0
    assert score_text(text) != score_text(text + " Floods follow heavy rain.")
    assert score_text("") == 0.0
