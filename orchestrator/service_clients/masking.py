"""Secrets out of what is logged: header values, query parameters and body fields.

Masked by name, case-insensitively: the headers `Authorization`, `Proxy-Authorization`,
`Cookie`, `Set-Cookie`, `X-Api-Key`, and any header, query parameter or body key whose
name contains `token`, `password`, `passwd`, `secret`, `api_key` / `api-key` / `apikey`,
`private_key`, `authorization`, `credential`, `session` or `signature`. A masked value keeps
nothing of the secret, not even its length.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
SECRET_KEY = re.compile(
    r"token|passw(or)?d|secret|api[-_]?key|authorization|credential|session|signature|private[-_]?key",
    re.IGNORECASE,
)
# How deep a body is walked; deeper values are masked whole (they are rare in logs anyway).
MAX_DEPTH = 8


def is_secret_key(name: str) -> bool:
    return bool(SECRET_KEY.search(name))


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: MASK if name.lower() in SECRET_HEADERS or is_secret_key(name) else value
        for name, value in headers.items()
    }


def mask_url(url: str) -> str:
    """The URL with secret query values and any user:password in it masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    if not parts.query:
        return urlunsplit(parts._replace(netloc=netloc))
    query = [(k, MASK if is_secret_key(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def mask_body(body: Any, _depth: int = 0) -> Any:
    """A JSON-like body with the values of secret keys masked, at any depth."""
    if _depth > MAX_DEPTH:
        return MASK
    if isinstance(body, Mapping):
        return {
            key: MASK if isinstance(key, str) and is_secret_key(key) else mask_body(value, _depth + 1)
            for key, value in body.items()
        }
    if isinstance(body, list | tuple):
        return [mask_body(value, _depth + 1) for value in body]
    return body
