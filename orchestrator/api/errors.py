"""One place mapping errors to JSON `{code, message}` responses: never a 500 for bad input."""

from __future__ import annotations

from typing import Any

from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from orchestrator.api import audit_trail
from orchestrator.errors import OrchestrationError

# The code of an error response that no view wrote (Django's own 404, 500, …).
STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "throttled",
    500: "server_error",
}


def error_response(code: str, message: str, status: int) -> JsonResponse:
    """The API's error body `{code, message}`, for the layers below DRF (middleware)."""
    return JsonResponse({"code": code, "message": message}, status=status)


def _first_message(detail: Any) -> str:
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        return f"{key}: {_first_message(value)}"
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = _response_for(exc, context)
    if response is not None:
        audit_trail.refusal(exc, context, response)
    return response


def _response_for(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, OrchestrationError):
        body: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.details:
            body["details"] = exc.details
        return Response(body, status=exc.status)
    if isinstance(exc, Http404):
        return Response({"code": "not_found", "message": "not found"}, status=status.HTTP_404_NOT_FOUND)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {
            "code": "invalid_request",
            "message": _first_message(exc.detail),
            "details": exc.detail,
        }
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response.data = {
            "code": codes if isinstance(codes, str) else "error",
            "message": _first_message(exc.detail),
        }
    return response
