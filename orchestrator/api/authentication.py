"""`Authorization: Token <key>` (CONTRACT §5), checked against hashed tokens (django-rest-knox).

knox's TokenAuthentication, plus:
- a key that is not text (bytes outside UTF-8) is a 401 like any wrong key, never a 500;
- every authenticated request notes its client address for its token
  (orchestrator/security/tokens.py: a new address is flagged); Redis trouble there is
  logged and never refuses the request.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.settings import knox_settings
from rest_framework import exceptions
from rest_framework.request import Request

from orchestrator.audit.addresses import client_address
from orchestrator.security import tokens

logger = logging.getLogger(__name__)


class TokenAuthentication(KnoxTokenAuthentication):  # type: ignore[misc]  # knox is untyped
    def authenticate_credentials(self, token: bytes) -> tuple[Any, Any]:
        try:
            token.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("Invalid token.") from exc
        return super().authenticate_credentials(token)  # type: ignore[no-any-return]

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        result = super().authenticate(request)
        if result is not None:
            try:
                tokens.note_address(result[1], client_address(request.META, settings.BOS_TRUSTED_PROXIES))
            except Exception:  # noqa: BLE001 - monitoring never refuses a valid token
                logger.warning("token address not checked", exc_info=True)
        return result  # type: ignore[no-any-return]


class TokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """The OpenAPI schema's `tokenAuth`: the same scheme as before the tokens were hashed."""

    target_class = "orchestrator.api.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        prefix = knox_settings.AUTH_HEADER_PREFIX
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix=prefix)
