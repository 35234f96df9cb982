"""Service clients against real HTTP servers: a scripted flaky one, and the demo's
scoring service as a subprocess; health in Redis, /metrics and /readyz; a batch
through the essay pipeline with scoring on, on a real Celery worker."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from orchestrator.breakers import breaker
from orchestrator.classify import ErrorClass, classify
from orchestrator.models import ItemResult, PhaseRun
from orchestrator.service_clients.client import ServiceClient
from orchestrator.service_clients.config import ServiceConfig
from orchestrator.service_clients.context import call_context
from orchestrator.service_clients.errors import (
    CircuitOpen,
    ServiceFailed,
    ServiceRejected,
    ServiceTimeout,
    ServiceUnavailable,
)
from orchestrator.service_clients.scoring import ScoringClient
from orchestrator.service_clients.store import PREFIX
from orchestrator.service_clients.store import client as redis_client
from orchestrator.services.batches import batch_create
from tests.support.factories import batch_request, essay_items
from tests.support.http_servers import Answer, FlakyServer, flaky_server, scoring_service
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = pytest.mark.integration

FAST = {"timeout": 1.0, "retries": 2, "backoff": 0.01, "backoff_cap": 0.05}


def _forget(service: str) -> None:
    store = redis_client()
    keys = [*store.scan_iter(f"{PREFIX}:*:{service}*"), *store.scan_iter(f"bos:breaker:{service}:*")]
    if keys:
        store.delete(*keys)
    store.zrem(f"{PREFIX}:known", service)


@pytest.fixture
def service() -> Iterator[str]:
    """A service name of the test's own: breakers, caches and figures start empty."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    _forget(name)


@pytest.fixture
def server() -> Iterator[FlakyServer]:
    with flaky_server() as flaky:
        yield flaky


def make_client(service: str, url: str, **config: Any) -> ServiceClient:
    return ServiceClient(service, config=ServiceConfig(url=url, **{**FAST, **config}))


# --- timeouts and retries ------------------------------------------------------------


def test_a_slow_service_times_out_each_attempt_and_fails_as_a_timeout(
    service: str, server: FlakyServer
) -> None:
    server.default = Answer(delay=1.0)
    client = make_client(service, server.url, timeout=0.2, retries=1)
    started = time.monotonic()
    with pytest.raises(ServiceTimeout) as error:
        client.get("/slow")
    assert 0.35 <= time.monotonic() - started < 1.5
    assert server.requests_to("/slow") == 2
    assert classify(error.value) == ErrorClass.TIMEOUT


def test_a_5xx_is_retried_with_backoff_until_it_succeeds(service: str, server: FlakyServer) -> None:
    server.answer(503, 500, Answer(200, {"value": 42}))
    response = make_client(service, server.url).get("/flaky")
    assert response.json() == {"value": 42}
    assert server.requests_to("/flaky") == 3


def test_a_5xx_that_outlasts_the_retries_is_a_transient_error(service: str, server: FlakyServer) -> None:
    server.default = Answer(502, {"code": "bad_gateway"})
    with pytest.raises(ServiceFailed) as error:
        make_client(service, server.url, retries=1).get("/down")
    assert error.value.status_code == 502 and server.requests_to("/down") == 2
    assert classify(error.value) == ErrorClass.TRANSIENT


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_a_4xx_is_never_retried_and_fails_permanently(service: str, server: FlakyServer, status: int) -> None:
    server.default = Answer(status, {"code": "nope", "message": "bad request", "password": "hunter2"})
    with pytest.raises(ServiceRejected) as error:
        make_client(service, server.url).get("/thing")
    assert server.requests_to("/thing") == 1
    assert classify(error.value) == ErrorClass.PERMANENT
    assert f"answered {status}" in str(error.value) and "bad request" in str(error.value)
    assert "hunter2" not in str(error.value)


def test_a_429_waits_for_retry_after_within_the_cap(service: str, server: FlakyServer) -> None:
    server.answer(Answer(429, headers={"Retry-After": "1"}), Answer(200))
    started = time.monotonic()
    make_client(service, server.url, retry_after_cap=2).get("/limited")
    assert time.monotonic() - started >= 0.95
    assert server.requests_to("/limited") == 2


def test_a_429_asking_for_longer_than_the_cap_is_left_to_the_engine(
    service: str, server: FlakyServer
) -> None:
    server.default = Answer(429, headers={"Retry-After": "120"})
    started = time.monotonic()
    with pytest.raises(ServiceFailed) as error:
        make_client(service, server.url, retry_after_cap=2).get("/limited")
    assert time.monotonic() - started < 1 and server.requests_to("/limited") == 1
    assert error.value.retry_after == 120 and classify(error.value) == ErrorClass.TRANSIENT


def test_a_post_is_retried_only_with_an_idempotency_key(service: str, server: FlakyServer) -> None:
    client = make_client(service, server.url)
    server.answer(503)
    with pytest.raises(ServiceFailed):
        client.post("/orders", json={"n": 1})
    assert server.requests_to("/orders") == 1

    server.answer(503, 200)
    assert client.post("/orders", json={"n": 1}, idempotency_key="order-1").status_code == 200
    sent = [s for s in server.seen if s.path == "/orders"][1:]
    assert [s.headers.get("Idempotency-Key") for s in sent] == ["order-1", "order-1"]


def test_a_service_that_refuses_connections_is_unavailable_after_the_retries(
    service: str, caplog: pytest.LogCaptureFixture
) -> None:
    with flaky_server() as gone:
        url = gone.url  # a port that nothing listens on once it is closed
    caplog.set_level(logging.INFO, logger="bos.service_clients")
    with pytest.raises(ServiceUnavailable) as error:
        make_client(service, url).post("/score", json={})  # never sent: retried even without a key
    assert classify(error.value) == ErrorClass.DEPENDENCY_UNAVAILABLE
    attempts = [r for r in caplog.records if r.getMessage().startswith(f"service={service} ")]
    assert [r.svc_attempt for r in attempts] == [1, 2, 3]  # type: ignore[attr-defined]
    assert all(r.svc_status == "unreachable" for r in attempts)  # type: ignore[attr-defined]


# --- the circuit breaker ---------------------------------------------------------------


def test_the_breaker_opens_after_fail_max_calls_fails_fast_then_recovers(
    service: str, server: FlakyServer
) -> None:
    server.default = Answer(503)
    client = make_client(service, server.url, retries=0)
    for _ in range(settings.BOS_BREAKER_FAIL_MAX):
        with pytest.raises(ServiceFailed):
            client.get("/x")
    assert breaker(service).current_state == "open"

    started = time.monotonic()
    with pytest.raises(CircuitOpen) as error:
        client.get("/x")
    assert time.monotonic() - started < 0.1
    assert server.requests_to("/x") == settings.BOS_BREAKER_FAIL_MAX  # nothing sent
    assert classify(error.value) == ErrorClass.DEPENDENCY_UNAVAILABLE

    server.default = Answer(200)
    time.sleep(settings.BOS_BREAKER_RESET_SECONDS + 0.1)
    assert client.get("/x").status_code == 200  # the probe
    assert breaker(service).current_state == "closed"
    assert client.get("/x").status_code == 200


def test_a_4xx_does_not_count_against_the_breaker(service: str, server: FlakyServer) -> None:
    server.default = Answer(404)
    client = make_client(service, server.url, retries=0)
    for _ in range(settings.BOS_BREAKER_FAIL_MAX + 2):
        with pytest.raises(ServiceRejected):
            client.get("/missing")
    assert breaker(service).current_state == "closed"


def test_a_call_the_engine_already_counts_is_not_counted_twice(service: str, server: FlakyServer) -> None:
    server.default = Answer(503)
    client = make_client(service, server.url, retries=0)
    with call_context(counted_breaker=service):
        for _ in range(settings.BOS_BREAKER_FAIL_MAX):
            with pytest.raises(ServiceFailed):
                client.get("/x")
    assert breaker(service).fail_counter == 0 and breaker(service).current_state == "closed"


# --- the GET cache ---------------------------------------------------------------------


def test_a_get_is_served_from_the_cache_within_its_ttl_and_fetched_after(
    service: str, server: FlakyServer
) -> None:
    client = make_client(service, server.url, cache_ttl=1)
    server.answer(Answer(200, {"version": 1}), Answer(200, {"version": 2}))
    assert client.get("/model", params={"a": 1, "b": 2}).json() == {"version": 1}
    hit = client.get("/model", params={"b": 2, "a": 1})  # same entry, whatever the order
    assert hit.json() == {"version": 1} and hit.headers["content-type"] == "application/json"
    assert server.requests_to("/model") == 1
    time.sleep(1.1)
    assert client.get("/model", params={"a": 1, "b": 2}).json() == {"version": 2}
    assert server.requests_to("/model") == 2


def test_cache_false_errors_and_posts_bypass_the_cache(service: str, server: FlakyServer) -> None:
    client = make_client(service, server.url, cache_ttl=60)
    client.get("/a")
    client.get("/a", cache=False)
    assert server.requests_to("/a") == 2
    server.answer(404, 404)
    for _ in range(2):
        with pytest.raises(ServiceRejected):
            client.get("/missing")
    assert server.requests_to("/missing") == 2
    client.post("/a", json={})
    client.post("/a", json={})
    assert server.requests_to("/a") == 4


def test_a_service_without_cache_ttl_is_never_cached(service: str, server: FlakyServer) -> None:
    client = make_client(service, server.url)
    client.get("/a")
    client.get("/a")
    assert server.requests_to("/a") == 2


# --- logging ---------------------------------------------------------------------------


def test_each_attempt_is_logged_once_with_its_correlation_id_and_secrets_masked(
    service: str, server: FlakyServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = ServiceClient(
        service,
        config=ServiceConfig(url=server.url, headers={"X-Api-Key": "config-key-123"}, **FAST),
    )
    server.answer(503, 200)
    client.post(
        "/login",
        params={"token": "query-token-456", "page": 2},
        json={"user": "bob", "password": "body-pw-789", "nested": {"api_key": "nested-key-000"}},
        headers={"Authorization": "Bearer header-secret-111", "Cookie": "sid=cookie-222"},
        idempotency_key="login-1",
        correlation_id="corr-abc",
    )
    text = caplog.text
    for secret in (
        "config-key-123",
        "query-token-456",
        "body-pw-789",
        "nested-key-000",
        "header-secret-111",
        "cookie-222",
    ):
        assert secret not in text, secret
    lines = [r for r in caplog.records if r.name == "bos.service_clients"]
    assert len(lines) == 2
    first, second = (r.getMessage() for r in lines)
    assert first.startswith(
        f"service={service} method=POST url={server.url}/login?token=***&page=2 status=503 "
    )
    assert "attempt=1 correlation_id=corr-abc" in first and lines[0].levelno == logging.WARNING
    assert " status=200 " in second and "attempt=2 correlation_id=corr-abc" in second
    assert '"password": "***"' in second and '"x-api-key": "***"' in second and '"user": "bob"' in second
    # The service got the real values, and the correlation id.
    login = server.seen[-1]
    assert login.headers["X-Api-Key"] == "config-key-123" and login.headers["X-Correlation-ID"] == "corr-abc"


def test_the_correlation_id_comes_from_the_context_when_not_given(service: str, server: FlakyServer) -> None:
    client = make_client(service, server.url)
    with call_context(correlation_id="batch-corr-1"):
        client.get("/a")
    client.get("/b")
    first, second = (s.headers["X-Correlation-ID"] for s in server.seen)
    assert first == "batch-corr-1" and second and second != "batch-corr-1"


# --- health: Redis, /metrics, /readyz ------------------------------------------------


@pytest.mark.django_db
def test_health_figures_show_in_metrics_and_a_degraded_service_in_readyz_without_failing_it(
    service: str, server: FlakyServer, admin_client: Any
) -> None:
    client = make_client(service, server.url, retries=0, cache_ttl=60)
    for _ in range(3):
        client.get("/ok")  # one attempt, then two cache hits
    server.default = Answer(500)
    for _ in range(2):
        with pytest.raises(ServiceFailed):
            client.get("/broken")

    api = APIClient()
    metrics = api.get("/metrics").content.decode()
    assert f'bos_service_requests_total{{outcome="ok",service="{service}"}} 1.0' in metrics
    assert f'bos_service_requests_total{{outcome="cache_hit",service="{service}"}} 2.0' in metrics
    assert f'bos_service_requests_total{{outcome="server_error",service="{service}"}} 2.0' in metrics
    assert f'bos_service_latency_seconds_count{{service="{service}"}} 3.0' in metrics
    assert f'bos_service_latency_seconds_bucket{{le="+Inf",service="{service}"}} 3.0' in metrics
    assert f'bos_service_success_ratio{{service="{service}"}} 0.3333' in metrics

    ready = admin_client.get("/readyz")  # the detail is for staff (docs/security.md)
    assert ready.status_code == 200, ready.json()  # a degraded downstream service never fails it
    detail = ready.json()["services"][service]
    assert detail["status"] == "degraded" and detail["breaker"] == "closed"
    assert (detail["attempts"], detail["failed"], detail["success_ratio"]) == (3, 2, 0.3333)
    assert detail["latency_ms_mean"] is not None and "answered 500" in detail["last_error"]
    assert ready.json()["services"]["scoring"]["status"] in {"idle", "ok", "degraded", "down"}


@pytest.mark.django_db
def test_a_service_whose_breaker_is_open_shows_down_and_bos_stays_ready(
    service: str, server: FlakyServer, admin_client: Any
) -> None:
    server.default = Answer(503)
    client = make_client(service, server.url, retries=0)
    for _ in range(settings.BOS_BREAKER_FAIL_MAX):
        with pytest.raises(ServiceFailed):
            client.get("/x")
    with pytest.raises(CircuitOpen):
        client.get("/x")
    ready = admin_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["services"][service]["status"] == "down"
    metrics = APIClient().get("/metrics").content.decode()
    assert f'bos_service_requests_total{{outcome="circuit_open",service="{service}"}} 1.0' in metrics


# --- the scoring service ---------------------------------------------------------------


SCORING_URL = f"http://127.0.0.1:{settings.BOS_SCORING_PORT}"


@pytest.fixture
def fresh_scoring() -> None:
    """The "scoring" service's breaker closed and its cache empty, as on a new machine."""
    _forget("scoring")


@pytest.fixture
def scoring(fresh_scoring: None) -> Iterator[str]:
    """The demo scoring service, as the Procfile runs it, on this run's BOS_SCORING_PORT
    (where the default BOS_SERVICES, which the test worker has too, points "scoring")."""
    with scoring_service(settings.BOS_SCORING_PORT):
        yield SCORING_URL


def test_the_scoring_service_starts_in_well_under_a_second() -> None:
    with flaky_server() as probe:
        port = int(probe.url.rsplit(":", 1)[1])
    started = time.monotonic()
    with scoring_service(port):
        assert time.monotonic() - started < 0.8


def test_the_scoring_client_scores_deterministically_and_caches_the_model(scoring: str, service: str) -> None:
    client = ScoringClient(service, config=ServiceConfig(url=scoring, cache_ttl=60))
    text = "Rivers carve valleys over many years. Their water shapes the land."
    first, again = client.score(text), client.score(text)
    assert first == again and first["model"] == "demo-1" and 0 <= first["score"] <= 1
    before = httpx.get(f"{scoring}/healthz").json()["requests"].get("/model", 0)
    assert client.model()["model"] == "demo-1"
    assert client.model() == client.model()
    assert httpx.get(f"{scoring}/healthz").json()["requests"].get("/model", 0) == before + 1


def test_the_scoring_service_refuses_bad_input_with_a_4xx(scoring: str, service: str) -> None:
    client = ScoringClient(service, config=ServiceConfig(url=scoring))
    with pytest.raises(ServiceRejected) as error:
        client.post("/score", json={"text": 12})
    assert error.value.status_code == 422 and "invalid_text" in str(error.value)
    with pytest.raises(ServiceRejected) as missing:
        client.get("/nowhere")
    assert missing.value.status_code == 404


@pytest.mark.usefixtures("celery_worker", "essay_pipeline")
def test_a_batch_asking_for_scoring_is_scored_through_the_client(scoring: str) -> None:
    served_before = httpx.get(f"{scoring}/healthz").json()["requests"]
    # 30 items: over the inline limit, so chunks run on the worker.
    request = batch_request(items=essay_items(30, bad={4}), metadata={"scoring": True})
    batch = wait_for_terminal(batch_create(request=request, actor="test").batch.id)

    assert batch.state == "completed_with_errors" and (batch.items_succeeded, batch.items_failed) == (29, 1)
    phases = {p.name: p for p in batch.phases.all()}
    assert phases["score"].state == "succeeded" and phases["grading"].state == "skipped"
    scores = list(
        ItemResult.objects.filter(phase_run=phases["score"], ok=True).values_list("output", flat=True)
    )
    assert len(scores) == 29 and all(out["model"] == "demo-1" and 0 <= out["score"] <= 1 for out in scores)
    assert batch.report["aggregate"]["score_mean"] is not None
    served = httpx.get(f"{scoring}/healthz").json()["requests"]
    assert served.get("/score", 0) - served_before.get("/score", 0) == 29
    # /model is cached in Redis for every worker process: fetched at most once per TTL.
    assert served.get("/model", 0) - served_before.get("/model", 0) <= 1


@pytest.mark.usefixtures("celery_worker", "essay_pipeline", "fresh_scoring")
def test_a_batch_waits_while_the_scoring_service_is_down_and_completes_once_it_is_back() -> None:
    request = batch_request(items=essay_items(12), metadata={"scoring": True})
    batch_id = batch_create(request=request, actor="test").batch.id

    def score_phase() -> PhaseRun:
        return PhaseRun.objects.get(batch_id=batch_id, name="score")

    # Each item fails (the client's retries exhausted); the engine counts them against
    # the "scoring" breaker, which opens: the chunk waits, nothing is recorded as failed.
    waiting = wait_for(lambda: (p := score_phase()).waiting_on == "scoring" and p, timeout=30, what="breaker")
    assert waiting.state == "running" and waiting.items_failed == 0
    assert breaker("scoring").current_state in {"open", "half-open"}

    with scoring_service(settings.BOS_SCORING_PORT):
        batch = wait_for_terminal(batch_id, timeout=60)
    assert batch.state == "completed" and batch.items_succeeded == 12
    assert ItemResult.objects.filter(phase_run=score_phase(), ok=True).count() == 12
    assert breaker("scoring").current_state == "closed"


@pytest.mark.usefixtures("celery_worker", "essay_pipeline")
def test_a_batch_not_asking_for_scoring_skips_it_and_its_report_is_complete() -> None:
    batch = wait_for_terminal(
        batch_create(request=batch_request(items=essay_items(3)), actor="test").batch.id
    )
    assert batch.state == "completed"
    assert batch.phases.get(name="score").state == "skipped"
    assert batch.report["aggregate"]["score_mean"] is None
    assert batch.report["aggregate"]["essays_analysed"] == 3
