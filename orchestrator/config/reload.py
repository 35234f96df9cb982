"""Each process's copy of the runtime configuration, and how it stays current.

`runtime(key)` is a dict lookup. At most every `BOS_CONFIG_RELOAD_SECONDS` — and at
once after a change is announced on Redis pub/sub (`invalidation`) — a call also reads
the current `{"version", "values"}` from Redis (one GET) and adopts it when it differs. When Redis holds none (a new or flushed Redis), the database — the
source of truth — is read and published. When Redis cannot be reached the process keeps
its last good values and `status()` says so (`/readyz`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError

from orchestrator.config import invalidation
from orchestrator.config.flags import Flag, is_flag_key, key_of, parse_flag
from orchestrator.config.registry import RUNTIME, ConfigInvalid
from orchestrator.config.scopes import is_tenant_key, tenant_key

log = logging.getLogger(__name__)


class _Cache:
    def __init__(self) -> None:
        self.version = -1  # never loaded
        self.values: dict[str, Any] = {}
        self.has_tenant_values = False
        self.slugs: dict[int, str] | None = None  # tenant id → slug, for per-tenant values
        self.next_check = 0.0
        self.error = ""
        self.error_since: float | None = None
        self.lock = threading.Lock()


_cache = _Cache()


def runtime(key: str, *, tenant: str | int | None = None) -> Any:
    """The current value of the runtime setting `key` (registry.RUNTIME) — for `tenant`
    (a slug or a tenant id) its own value when it has one and the setting's scope is
    `tenant`, else the global value."""
    if time.monotonic() >= _cache.next_check:
        refresh()
    if tenant is not None and _cache.has_tenant_values:
        slug = tenant if isinstance(tenant, str) else _slug_of(tenant)
        if slug is not None:
            own = _cache.values.get(tenant_key(slug, key))
            if own is not None:
                return own
    try:
        return _cache.values[key]
    except KeyError:
        return getattr(settings, RUNTIME[key].env)


def _slug_of(tenant_id: int) -> str | None:
    """The slug of a tenant id, from a map made once per adopted version (one query, only
    when a version holds per-tenant values)."""
    if _cache.slugs is None:
        from orchestrator.models import Tenant

        try:
            _cache.slugs = dict(Tenant.objects.values_list("id", "slug"))
        except DatabaseError as exc:
            log.warning("per-tenant configuration: tenants unreadable (%s); using global values", exc)
            return None
    slug = _cache.slugs.get(tenant_id)
    if slug is None:  # a tenant made since: read again next time
        _cache.slugs = None
    return slug


def runtime_flag(name: str) -> Flag | None:
    """The flag `name` as this process knows it now (None: no such flag)."""
    if time.monotonic() >= _cache.next_check:
        refresh()
    raw = _cache.values.get(key_of(name))
    if raw is None:
        return None
    try:
        return parse_flag(name, raw)
    except ConfigInvalid:
        log.warning("feature flag %s: stored value %r is invalid; treated as off", name, raw)
        return None


def _known(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in values.items()
        if key in RUNTIME or is_flag_key(key) or is_tenant_key(key)
    }


def adopt(version: int, values: dict[str, Any]) -> None:
    """Use `values` (the overrides of `version`) from now on."""
    if version != _cache.version:
        log.info("runtime configuration version %s adopted (was %s)", version, _cache.version)
    _cache.values = _known(values)
    _cache.has_tenant_values = any(is_tenant_key(key) for key in _cache.values)
    _cache.slugs = None
    _cache.version = version


def note_redis_error(error: str) -> None:
    if not _cache.error:
        log.warning("runtime configuration: Redis unreachable, keeping version %s: %s", _cache.version, error)
        _cache.error_since = time.monotonic()
    _cache.error = error


def expire() -> None:
    """Make the next read look at Redis (a change was announced)."""
    _cache.next_check = 0.0


def refresh(*, force: bool = False) -> None:
    """Look for a new version now (at most one thread at a time; others keep going)."""
    invalidation.ensure_listening(expire)
    if not _cache.lock.acquire(blocking=force):
        return
    try:
        _cache.next_check = time.monotonic() + settings.BOS_CONFIG_RELOAD_SECONDS
        from orchestrator.config import store

        try:
            raw = store.client().get(store.REDIS_KEY)
        except redis.RedisError as exc:
            note_redis_error(str(exc))
            return
        _cache.error, _cache.error_since = "", None
        if raw is not None:
            doc = json.loads(raw)
            # The values too: a database restored from a backup (or a test's truncated
            # one) numbers its versions again, and a process must not keep old values
            # because their number came back.
            if doc["version"] != _cache.version or _known(doc["values"]) != _cache.values:
                adopt(int(doc["version"]), doc["values"])
            return
        try:
            version, values = store.stored()
        except DatabaseError as exc:
            log.warning(
                "runtime configuration: database unreachable, keeping version %s: %s", _cache.version, exc
            )
            return
        adopt(version, values)
        try:
            store.publish(version, values)
        except redis.RedisError as exc:
            note_redis_error(str(exc))
    finally:
        _cache.lock.release()


def status() -> dict[str, Any]:
    """This process's view, for /readyz: its version and whether it is current (stale:
    Redis could not be reached at the last check, so it keeps its last good values)."""
    if time.monotonic() >= _cache.next_check:
        refresh()
    body: dict[str, Any] = {"version": _cache.version, "stale": bool(_cache.error)}
    if _cache.error:
        since = _cache.error_since or time.monotonic()
        body["error"] = _cache.error
        body["stale_for_seconds"] = round(time.monotonic() - since, 1)
    return body


def reset() -> None:
    """Forget every value (tests: a new database)."""
    _cache.version, _cache.values, _cache.next_check = -1, {}, 0.0
    _cache.has_tenant_values, _cache.slugs = False, None
    _cache.error, _cache.error_since = "", None
