"""The domain's one error type, with a stable `code` that the API maps to HTTP."""

from __future__ import annotations

from typing import Any


class OrchestrationError(Exception):
    """A request the orchestrator refuses. `code` is stable; `message` is for people."""

    status = 400

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class InvalidRequest(OrchestrationError):
    status = 400


class NotFound(OrchestrationError):
    status = 404


class Conflict(OrchestrationError):
    """The batch's state does not allow the operation."""

    status = 409


class PermissionDenied(OrchestrationError):
    status = 403
