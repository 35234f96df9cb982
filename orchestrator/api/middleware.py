"""API paths answer in JSON, whatever happens: never an HTML page, never Django's debug page.

On `/api/`, `/healthz`, `/readyz` and `/metrics` (CONTRACT §5):
- a path, query string or header with U+0000 is a 400 `invalid_character` before any view
  runs (PostgreSQL cannot even compare such a value: a token, a session key, a name), a
  declared body over the size limit a 413 `too_large` before it is read;
- an exception no view handled gets Django's own handling (its log line, its
  `got_request_exception` signal), and a body too large is a 413;
- an error response that Django rather than a DRF view wrote (its 404 for an unknown path,
  its 400 or 500 pages, their DEBUG variants) is replaced by `{code, message}` JSON.
DRF's own responses are left alone, so the browsable API still shows its errors.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponseBase
from rest_framework.response import Response

from orchestrator.api.errors import STATUS_CODES, error_response
from orchestrator.api.parsers import body_limit, too_large

API_PREFIXES = ("/api/", "/healthz", "/readyz", "/metrics")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def _is_json(response: HttpResponseBase) -> bool:
    return str(response.get("Content-Type", "")).startswith("application/json")


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not is_api_path(request.path_info):
            return self.get_response(request)
        refused = self._refuse_early(request)
        if refused is not None:
            return refused
        response = self.get_response(request)
        if response.status_code >= 400 and not isinstance(response, Response) and not _is_json(response):
            return self._as_json(response)
        return response

    def _refuse_early(self, request: HttpRequest) -> HttpResponseBase | None:
        if "\x00" in request.path_info:
            return error_response("invalid_character", "the path contains U+0000 (NUL)", 400)
        for key, value in request.META.items():
            if (key.startswith("HTTP_") or key == "CONTENT_TYPE") and "\x00" in str(value):
                header = key.removeprefix("HTTP_").replace("_", "-").title()
                return error_response("invalid_character", f"header {header} contains U+0000 (NUL)", 400)
        try:
            query = request.GET.lists()
        except SuspiciousOperation as exc:  # e.g. more than DATA_UPLOAD_MAX_NUMBER_FIELDS parameters
            return error_response("bad_request", str(exc), 400)
        for name, values in query:
            if "\x00" in name or any("\x00" in v for v in values):
                return error_response(
                    "invalid_character", f"query parameter {name!r} contains U+0000 (NUL)", 400
                )
        limit = body_limit()
        declared = request.META.get("CONTENT_LENGTH") or ""
        if limit is not None and declared.isdigit() and int(declared) > limit:
            refusal = too_large(int(declared), limit)
            return error_response(refusal.code, refusal.message, refusal.status)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        if is_api_path(request.path_info) and isinstance(exception, RequestDataTooBig):
            limit = body_limit() or 0
            refusal = too_large(f"more than {limit}", limit)
            return error_response(refusal.code, refusal.message, refusal.status)
        # Everything else: Django logs it and answers; __call__ turns the answer into JSON.
        return None

    def _as_json(self, response: HttpResponseBase) -> HttpResponseBase:
        status = response.status_code
        code = STATUS_CODES.get(status, "server_error" if status >= 500 else "error")
        message = {
            "not_found": "no such API path",
            "server_error": "internal error; it has been logged",
        }.get(code, response.reason_phrase.lower())
        replaced = error_response(code, message, status)
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if header in response:
                replaced[header] = response[header]
        return replaced
