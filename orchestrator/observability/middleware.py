"""HTTP requests in their correlation context: the caller's `X-Correlation-ID`, or a new one.

The id is bound for every log line of the request, stored as a new batch's correlation id
when its body names none (orchestrator/api/views.py), and echoed in the response header.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from orchestrator.observability import context


class CorrelationIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        cid = context.accepted_correlation_id(request.headers.get(context.HTTP_HEADER))
        cid = cid or context.new_correlation_id()
        # A thread serves many requests: nothing bound by an earlier one may leak into this one.
        context.clear()
        with context.bound(correlation_id=cid):
            response = self.get_response(request)
        response[context.HTTP_HEADER] = cid
        return response
