"""`BOS_SERVICES`: the downstream services, one validated `ServiceConfig` each.

The setting is JSON, `{"scoring": {"url": "http://127.0.0.1:8010", "timeout": 2,
"retries": 2, "cache_ttl": 60, "headers": {"X-Api-Key": "…"}}}`; every field but `url`
has a default. It is read and checked once, when the settings load: a bad value stops
start-up with one message naming `BOS_SERVICES`, the service and the field.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class ServiceConfig(BaseModel):
    """How to call one service. Times are in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    # Whole-request timeout (connect, read, write, pool), per attempt.
    timeout: float = Field(default=5.0, gt=0, le=300)
    # Connecting may have a shorter limit of its own (None: `timeout`).
    connect_timeout: float | None = Field(default=None, gt=0, le=300)
    # Further tries after the first, for transient failures only.
    retries: int = Field(default=2, ge=0, le=10)
    # Exponential backoff between tries: backoff · 2^(n−1), at most backoff_cap, jittered.
    backoff: float = Field(default=0.2, ge=0, le=60)
    backoff_cap: float = Field(default=2.0, ge=0, le=300)
    jitter: float = Field(default=0.5, ge=0, le=1)
    # A 429/503 asking (Retry-After) for a longer wait than this is not waited for here:
    # the call fails transiently and the engine's own, longer backoff takes over.
    retry_after_cap: float = Field(default=5.0, ge=0, le=300)
    # Seconds a 2xx answer to a GET is cached in Redis; 0: no cache.
    cache_ttl: int = Field(default=0, ge=0, le=7 * 24 * 3600)
    # Sent with every request (e.g. an API key; masked in logs).
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def parse_services(raw: str | dict[str, Any], *, name: str = "BOS_SERVICES") -> dict[str, ServiceConfig]:
    """The services of a `BOS_SERVICES` value (JSON text or already a dict), validated."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{name} must be a JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise ImproperlyConfigured(f'{name} must be a JSON object {{"service": {{"url": …}}}}')
    services = {}
    for service, values in data.items():
        if not SERVICE_NAME.match(str(service)):
            raise ImproperlyConfigured(
                f"{name}: {service!r} is not a valid service name (lowercase letters, digits, - and _)"
            )
        if not isinstance(values, dict):
            raise ImproperlyConfigured(f'{name}: {service} must be an object {{"url": …}}')
        try:
            services[service] = ServiceConfig(**values)
        except ValidationError as exc:
            problems = "; ".join(_problem(e) for e in exc.errors())
            raise ImproperlyConfigured(f"{name}: {service}: {problems}") from exc
    return services


def services_setting(raw: str, *, default: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What settings hold: `raw` (or `default` when it is empty), validated, as plain dicts."""
    services = parse_services(raw if raw.strip() else default)
    return {name: config.model_dump() for name, config in services.items()}


def service_config(service: str) -> ServiceConfig:
    """The configuration of `service` from settings."""
    from django.conf import settings

    try:
        values = settings.BOS_SERVICES[service]
    except KeyError:
        known = ", ".join(sorted(settings.BOS_SERVICES)) or "none"
        raise ImproperlyConfigured(
            f"service {service!r} is not configured in BOS_SERVICES (configured: {known})"
        ) from None
    return ServiceConfig(**values)


def configured_services() -> list[str]:
    from django.conf import settings

    return sorted(getattr(settings, "BOS_SERVICES", {}))
