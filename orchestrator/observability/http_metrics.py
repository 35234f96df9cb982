"""HTTP request metrics: count, latency and database use per view (route name, not path).

`RequestMetricsMiddleware` sits first in MIDDLEWARE, so it times everything the other
middleware do too. The `view` label is the URL pattern's name (`batch-detail`,
`admin:index`), or `unmatched` for a path no pattern matched: never the path itself, so
ids in URLs cannot multiply the series.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from orchestrator.observability import metrics
from orchestrator.observability.queries import metered

UNMATCHED = "unmatched"


def view_label(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED
    return match.view_name or match.route or UNMATCHED


class RequestMetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        status = 500
        try:
            with metered("http", lambda: view_label(request)):
                response = self.get_response(request)
            status = response.status_code
            return response
        finally:
            metrics.record_http_request(
                view=view_label(request),
                method=request.method or "",
                status=status,
                seconds=time.perf_counter() - started,
            )
