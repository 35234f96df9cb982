"""`ServiceClient`: the base of every client of a downstream service.

A client names its service (its entry in `BOS_SERVICES`) and adds typed methods:

    class PricingClient(ServiceClient):
        service = "pricing"

        def price(self, sku: str) -> float:
            return float(self.json(self.get("/prices", params={"sku": sku}))["price"])

`request()` (and `get`/`post`/`put`/`patch`/`delete`) gives each call, in order: a
cached answer (a GET, when the service has a `cache_ttl`); else a fast failure when the
service's circuit breaker is open; else the request, with the service's timeout and
headers, the correlation id and the idempotency key, retried on transient failures;
one masked log line and one health count per attempt; the call's success or failure
counted once against the breaker; failures raised as the handler error types.
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import httpx
import pybreaker
import redis

from orchestrator.breakers import breaker, seconds_until_probe
from orchestrator.classify import RETRYABLE_STATUS
from orchestrator.service_clients import cache as answers
from orchestrator.service_clients import context, health
from orchestrator.service_clients.config import ServiceConfig, service_config
from orchestrator.service_clients.errors import (
    CircuitOpen,
    ServiceBadResponse,
    ServiceCallError,
    ServiceFailed,
    ServiceRejected,
    ServiceTimeout,
    ServiceUnavailable,
)
from orchestrator.service_clients.masking import mask_body, mask_headers, mask_url
from orchestrator.service_clients.retries import parse_retry_after, retrying

logger = logging.getLogger("bos.service_clients")

CORRELATION_HEADER = "X-Correlation-ID"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_ERROR_BODY = 200

Params = Mapping[str, str | int | float | bool | None] | None


class ServiceClient:
    """A client of one service. Thread-safe (httpx's pool is); `shared()` is one per process."""

    service: ClassVar[str] = ""

    _shared: ClassVar[dict[tuple[type, str, int], ServiceClient]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        service: str | None = None,
        *,
        config: ServiceConfig | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        name = service or type(self).service
        if not name:
            raise ValueError("a ServiceClient needs a service name (class attribute `service` or argument)")
        self.name = name
        self.config = config or service_config(name)
        timeout = httpx.Timeout(
            self.config.timeout, connect=self.config.connect_timeout or self.config.timeout
        )
        self._http = httpx.Client(
            base_url=self.config.url, timeout=timeout, headers=self.config.headers, transport=transport
        )

    @classmethod
    def shared(cls, service: str | None = None) -> Self:
        """This process's instance (a forked worker makes its own: sockets are not shared)."""
        key = (cls, service or cls.service, os.getpid())
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(service)
            return cls._shared[key]  # type: ignore[return-value]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the verbs -------------------------------------------------------------------

    def get(self, path: str, *, params: Params = None, cache: bool = True, **kw: Any) -> httpx.Response:
        return self.request("GET", path, params=params, cache=cache, **kw)

    def post(
        self, path: str, *, json: Any = None, idempotency_key: str | None = None, **kw: Any
    ) -> httpx.Response:
        return self.request("POST", path, json=json, idempotency_key=idempotency_key, **kw)

    def put(self, path: str, *, json: Any = None, **kw: Any) -> httpx.Response:
        return self.request("PUT", path, json=json, **kw)

    def patch(
        self, path: str, *, json: Any = None, idempotency_key: str | None = None, **kw: Any
    ) -> httpx.Response:
        return self.request("PATCH", path, json=json, idempotency_key=idempotency_key, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    def json(self, response: httpx.Response) -> Any:
        """The response's JSON body, or `ServiceBadResponse` (a permanent failure)."""
        try:
            return response.json()
        except ValueError as exc:
            raise ServiceBadResponse(
                f"{self.name} answered {response.request.method} {response.request.url.path} with a body that is not JSON"
            ).describe(
                service=self.name,
                method=response.request.method,
                url=mask_url(str(response.request.url)),
                status_code=response.status_code,
            ) from exc

    # --- one call --------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        cache: bool = True,
        timeout: float | None = None,
        retries: int | None = None,
        correlation_id: str | None = None,
    ) -> httpx.Response:
        """Call the service; a 2xx or 3xx answer is returned, anything else raised
        (`errors`). `retries` and `timeout` override the service's for this call."""
        method = method.upper()
        cid = context.correlation_id(correlation_id)
        extra_headers = {CORRELATION_HEADER: cid, **(headers or {})}
        if idempotency_key:
            extra_headers[IDEMPOTENCY_HEADER] = idempotency_key
        request = self._http.build_request(
            method,
            path,
            params=params,
            json=json,
            headers=extra_headers,
            timeout=httpx.Timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        url = mask_url(str(request.url))
        cache_key = None
        if method == "GET" and cache and self.config.cache_ttl > 0:
            cache_key = _cache_key(self.name, request)
            if (hit := _cached(cache_key, request)) is not None:
                self._log(
                    logging.DEBUG,
                    request,
                    json,
                    cid,
                    status=str(hit.status_code),
                    ms=0.0,
                    attempt=0,
                    note="cache hit",
                )
                health.record(self.name, "cache_hit")
                return hit

        counted_by_caller = self.name in context.current().counted_breakers
        if not counted_by_caller and (wait := _breaker_wait(self.name)) > 0:
            self._log(logging.WARNING, request, json, cid, status="circuit_open", ms=0.0, attempt=0)
            health.record(self.name, "circuit_open")
            raise CircuitOpen(
                self.name, f"circuit breaker open for {wait:.0f} s more, nothing sent"
            ).describe(service=self.name, method=method, url=url, maybe_sent=False)

        attempts = 0

        def attempt() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            return self._attempt(request, json, cid, attempts)

        try:
            response = retrying(self.config, method=method, idempotency_key=idempotency_key, retries=retries)(
                attempt
            )
        except ServiceCallError as exc:
            if not counted_by_caller:
                self._count(exc)
            raise
        if not counted_by_caller:
            self._count(None)
        if cache_key is not None:
            answers.put(cache_key, response, self.config.cache_ttl)
        return response

    def _attempt(self, request: httpx.Request, body: Any, cid: str, attempt: int) -> httpx.Response:
        method, url = request.method, mask_url(str(request.url))
        where = f"{self.name} {method} {request.url.path}"
        started = time.perf_counter()
        error: ServiceCallError
        try:
            response = self._http.send(request)
        except httpx.TimeoutException as exc:
            seconds = time.perf_counter() - started
            error = ServiceTimeout(
                f"{where} timed out after {seconds:.2f} s ({type(exc).__name__})"
            ).describe(
                service=self.name,
                method=method,
                url=url,
                maybe_sent=not isinstance(exc, httpx.ConnectTimeout),
            )
            self._failed(request, body, cid, attempt, seconds, "timeout", error)
            raise error from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            seconds = time.perf_counter() - started
            error = ServiceUnavailable(self.name, f"{where}: {type(exc).__name__}: {exc}").describe(
                service=self.name, method=method, url=url, maybe_sent=not isinstance(exc, httpx.ConnectError)
            )
            self._failed(request, body, cid, attempt, seconds, "unreachable", error)
            raise error from exc
        seconds = time.perf_counter() - started
        status = response.status_code
        if status < 400:
            self._log(
                logging.INFO, request, body, cid, status=str(status), ms=seconds * 1000, attempt=attempt
            )
            health.record(self.name, "ok", seconds)
            return response
        message = f"{where} answered {status} {response.reason_phrase}{_error_body(response)}"
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        if status in RETRYABLE_STATUS:
            error = ServiceFailed(message)
            outcome = "rate_limited" if status == 429 else "server_error"
        else:
            error = ServiceRejected(message)
            outcome = "client_error" if status < 500 else "server_error"
        error.describe(service=self.name, method=method, url=url, status_code=status, retry_after=retry_after)
        self._failed(request, body, cid, attempt, seconds, outcome, error)
        raise error

    # --- bookkeeping -----------------------------------------------------------------

    def _failed(
        self,
        request: httpx.Request,
        body: Any,
        cid: str,
        attempt: int,
        seconds: float,
        outcome: str,
        error: ServiceCallError,
    ) -> None:
        status = str(error.status_code) if error.status_code else outcome
        self._log(logging.WARNING, request, body, cid, status=status, ms=seconds * 1000, attempt=attempt)
        health.record(self.name, outcome, seconds, error=str(error))

    def _count(self, exc: ServiceCallError | None) -> None:
        """The call's outcome, once, against the service's breaker (a 4xx counts as alive)."""

        def outcome() -> None:
            if exc is not None:
                raise exc

        try:
            breaker(self.name).call(outcome)
        except pybreaker.CircuitBreakerError:
            logger.warning("service=%s circuit breaker is open", self.name)
        except ServiceCallError:
            pass
        except redis.RedisError as error:
            logger.warning("service=%s breaker not updated: %s", self.name, error)

    def _log(
        self,
        level: int,
        request: httpx.Request,
        body: Any,
        cid: str,
        *,
        status: str,
        ms: float,
        attempt: int,
        note: str = "",
    ) -> None:
        if not logger.isEnabledFor(level):
            return
        fields = {
            "service": self.name,
            "method": request.method,
            "url": mask_url(str(request.url)),
            "status": status,
            "ms": round(ms, 1),
            "attempt": attempt,
            "correlation_id": cid,
        }
        line = " ".join(f"{k}={v}" for k, v in fields.items())
        if note:
            line += f" ({note})"
        if logger.isEnabledFor(logging.DEBUG):
            # The headers and body, for debugging: secrets masked, body truncated.
            headers = mask_headers(dict(request.headers))
            shown = jsonlib.dumps(mask_body(body), default=str)[:500] if body is not None else "-"
            line += f" headers={jsonlib.dumps(headers)} body={shown}"
        logger.log(level, line, extra={f"svc_{k}": v for k, v in fields.items()})


def _cache_key(service: str, request: httpx.Request) -> str:
    return answers.cache_key(service, request.method, str(request.url), None)


def _cached(key: str, request: httpx.Request) -> httpx.Response | None:
    try:
        return answers.get(key, request)
    except (ValueError, KeyError) as exc:  # an entry written by another version
        logger.warning("unreadable cache entry %s ignored: %s", key, exc)
        return None


def _breaker_wait(service: str) -> float:
    try:
        return seconds_until_probe(service)
    except redis.RedisError as exc:
        logger.warning("service=%s breaker state unknown, calling anyway: %s", service, exc)
        return 0.0


def _error_body(response: httpx.Response) -> str:
    """A short, masked excerpt of an error answer, for the item's error message."""
    try:
        shown = jsonlib.dumps(mask_body(response.json()))
    except ValueError:
        shown = response.text
    shown = " ".join(shown.split())[:MAX_ERROR_BODY]
    return f": {shown}" if shown else ""
