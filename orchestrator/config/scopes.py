"""Per-tenant values of runtime settings whose scope is `tenant` (registry: `Scope.TENANT`).

Stored in the configuration versions beside the global values, under
`tenant.<slug>.<key>` (a slug has no dots), so a tenant's value is versioned, in the
history, rolled back and hot reloaded like any other. A tenant without a value of its
own gets the global one.
"""

from __future__ import annotations

from orchestrator.config.registry import RUNTIME, Scope

PREFIX = "tenant."


def tenant_key(slug: str, key: str) -> str:
    return f"{PREFIX}{slug}.{key}"


def split_tenant_key(stored: str) -> tuple[str, str] | None:
    """`(slug, key)` of a per-tenant value's stored key; None for anything else."""
    if not stored.startswith(PREFIX):
        return None
    slug, _, key = stored.removeprefix(PREFIX).partition(".")
    setting = RUNTIME.get(key)
    if not slug or setting is None or setting.scope is not Scope.TENANT:
        return None
    return slug, key


def is_tenant_key(stored: str) -> bool:
    return split_tenant_key(stored) is not None
