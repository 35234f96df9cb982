"""Failed service calls, as the handler error types the engine already knows how to treat.

| failure (after the client's own retries) | raised | engine |
|---|---|---|
| could not connect, connection dropped, breaker open | `ServiceUnavailable` (`DependencyUnavailable`) | retried, counts against the breaker |
| timed out | `ServiceTimeout` (`TransientError`, class `timeout`) | retried, counts |
| 5xx, 429, 408, 425 | `ServiceFailed` (`TransientError`) | retried, counts |
| any other 4xx | `ServiceRejected` (`PermanentError`) | the item fails at once |
| an answer that is not what the client expects | `ServiceBadResponse` (`PermanentError`) | fails at once |

So a handler that lets a client's error through gets the right retries from the engine
for free. Each carries `service`, `method`, `url` (masked), `status_code` (or None) and,
for 429/503, the `retry_after` the service asked for.
"""

from __future__ import annotations

from orchestrator.handlers import DependencyUnavailable, PermanentError, TransientError


class ServiceCallError(Exception):
    """What every failed call carries; catch this to catch any client failure."""

    service: str = ""
    method: str = ""
    url: str = ""
    status_code: int | None = None
    retry_after: float | None = None
    # The request may have reached the service (a POST without an idempotency key is
    # then never retried: the service may have acted on it).
    maybe_sent: bool = True

    def describe(
        self,
        *,
        service: str,
        method: str,
        url: str,
        status_code: int | None = None,
        retry_after: float | None = None,
        maybe_sent: bool = True,
    ) -> ServiceCallError:
        self.service, self.method, self.url = service, method, url
        self.status_code, self.retry_after, self.maybe_sent = status_code, retry_after, maybe_sent
        return self


class ServiceTimeout(ServiceCallError, TransientError):
    bos_error_class = "timeout"


class ServiceFailed(ServiceCallError, TransientError):
    """The service answered with a status that may go away (5xx, 429, 408, 425)."""


class ServiceRejected(ServiceCallError, PermanentError):
    """The service refused the request itself (4xx): trying again cannot help."""


class ServiceBadResponse(ServiceCallError, PermanentError):
    """The service answered 2xx with something the client cannot use."""


class ServiceUnavailable(ServiceCallError, DependencyUnavailable):
    """Not reachable, or its circuit breaker is open."""

    def __init__(self, service: str, message: str = "") -> None:
        DependencyUnavailable.__init__(self, service, message)


class CircuitOpen(ServiceUnavailable):
    """Failed fast: the service's circuit breaker is open; nothing was sent."""

    maybe_sent = False
