"""Runtime configuration: the database holds every version, Redis the current one.

`config_set` and `config_rollback` write a new `ConfigVersion` under one lock, then (on
commit) publish `{"version", "values"}` to Redis, where every process's cache looks for it
(`orchestrator.config.reload`). A stale publish never overwrites a newer one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from orchestrator import audit
from orchestrator.audit.operations import as_actor
from orchestrator.config import flags, invalidation, schedules, scopes
from orchestrator.config.registry import RUNTIME, ConfigInvalid, Scope, check_combinations, parse, validate
from orchestrator.errors import InvalidRequest, NotFound
from orchestrator.models import ConfigVersion, Tenant
from orchestrator.selectors import tenant_id_of

log = logging.getLogger(__name__)

REDIS_KEY = "bos:config:current"
# Any 64-bit number of our own: the transaction lock that orders versions.
_LOCK_ID = 0x0B05C0F1

# Set only when the stored version is older: two publishers racing never go backwards.
_PUBLISH = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, doc = pcall(cjson.decode, cur)
  if ok and tonumber(doc['version']) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""
# Replace exactly the document that was read (a newer publish in between wins).
_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class InvalidConfig(InvalidRequest):
    """A refused value: HTTP 400 `invalid_config` naming the key and the rule."""

    def __init__(self, error: ConfigInvalid) -> None:
        super().__init__("invalid_config", str(error), key=error.key, rule=error.rule)


_clients: dict[tuple[int, str], redis.Redis] = {}


def client() -> redis.Redis:
    """This process's Redis client (a forked worker child makes its own)."""
    key = (os.getpid(), settings.REDIS_URL)
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    return _clients[key]


def defaults() -> dict[str, Any]:
    """Each runtime key's value from the environment (its setting)."""
    return {key: getattr(settings, s.env) for key, s in RUNTIME.items()}


def current_values() -> dict[str, Any]:
    """Every runtime key's effective value, from the database."""
    return {**defaults(), **stored()[1]}


def latest() -> ConfigVersion | None:
    return ConfigVersion.objects.order_by("-version").first()


def stored() -> tuple[int, dict[str, Any]]:
    """The current version and its overridden values, from the database."""
    row = latest()
    return (row.version, dict(row.values)) if row else (0, {})


def publish(version: int, values: Mapping[str, Any]) -> bool:
    """Make `version` the one processes see, unless Redis already holds a newer one.

    Newer by number, and one this database has: after a restore from a backup the
    versions are numbered again from the backup's last, and the number Redis holds from
    before would otherwise refuse every change until the new numbers caught up.
    """
    doc = json.dumps({"version": version, "values": dict(values)}, sort_keys=True)
    redis_client = client()
    if redis_client.eval(_PUBLISH, 1, REDIS_KEY, version, doc):
        return True
    held = redis_client.get(REDIS_KEY)
    if held is None or not _foreign(held):
        return False
    log.warning(
        "runtime configuration: Redis held a version this database does not have "
        "(restored from a backup?); version %s replaces it",
        version,
    )
    return bool(redis_client.eval(_REPLACE, 1, REDIS_KEY, held, doc))


def _foreign(raw: bytes | str) -> bool:
    """Whether a published document is not a version of this database's history."""
    try:
        doc = json.loads(raw)
        number = int(doc["version"])
    except (ValueError, KeyError, TypeError):
        return True
    values = ConfigVersion.objects.filter(version=number).values_list("values", flat=True).first()
    return values is None or dict(values) != doc.get("values")


def _write(
    *, values: dict[str, Any], actor: str, reason: str, rollback_of: int | None = None
) -> ConfigVersion:
    """A new version whose overrides are `values` (already validated). Caller holds the lock."""
    number, old = stored()
    base = defaults()  # a flag has no default: absent is None
    changes = {
        key: {"old": old.get(key, base.get(key)), "new": values.get(key, base.get(key))}
        for key in sorted(set(old) | set(values))
        if old.get(key, base.get(key)) != values.get(key, base.get(key))
    }
    row = ConfigVersion.objects.create(
        version=number + 1,
        actor=actor,
        reason=reason,
        changes=changes,
        values=values,
        rollback_of=rollback_of,
    )
    audit.record(
        _audit_action(changes, rollback_of),
        object_type="config",
        object_id=row.version,
        tenant=_tenant_of(changes),
        detail={"changes": changes, "reason": reason, "rollback_of": rollback_of},
        who=as_actor(actor),
    )
    transaction.on_commit(lambda: _publish_and_adopt(row.version, values))
    return row


def _audit_action(changes: Mapping[str, Any], rollback_of: int | None) -> str:
    """`config.rollback`, `flag.set`, `schedule.set` or `config.set` (settings, or a mix)."""
    if rollback_of is not None:
        return "config.rollback"
    for prefix in ("flag", "schedule"):
        if changes and all(key.startswith(f"{prefix}.") for key in changes):
            return f"{prefix}.set"
    return "config.set"


def _tenant_of(changes: Mapping[str, Any]) -> int | None:
    """The tenant whose own values alone changed (`tenant.<slug>.<key>`), else None."""
    keys = list(changes)
    if not keys or not all(key.startswith("tenant.") and key.count(".") >= 2 for key in keys):
        return None
    slugs = {key.split(".")[1] for key in keys}
    if len(slugs) != 1:
        return None
    return tenant_id_of(next(iter(slugs)))


def _publish_and_adopt(version: int, values: dict[str, Any]) -> None:
    from orchestrator.config import reload

    reload.adopt(version, values)
    try:
        publish(version, values)
        invalidation.announce(version, client())
    except redis.RedisError:
        # Other processes still see it: their cache reads the database when Redis is back
        # without this version (reload.refresh), and the next change publishes again.
        reload.note_redis_error("publish failed")
    try:
        schedules.apply(values)  # beat's tables follow the version (idempotent)
    except DatabaseError as exc:
        # The active beat writes them again when it starts; say so now.
        log.warning("beat schedules of configuration version %s not written: %s", version, exc)


def _lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_ID])


def config_set(
    *, changes: Mapping[str, Any], actor: str, reason: str, tenant: str | None = None
) -> ConfigVersion:
    """Set runtime keys (raw values are parsed) — globally, or for one `tenant` (a slug)
    where the setting's scope is `tenant`; InvalidConfig names the key and rule."""
    if not reason.strip():
        raise InvalidRequest("invalid_request", "a reason is required")
    with transaction.atomic():
        _lock()
        _, old = stored()
        try:
            if tenant is None:
                merged = validate(changes, _effective(old))
                values = {**old, **{key: merged[key] for key in changes}}
            else:
                _check_tenant(tenant, changes)
                merged = validate(changes, {**_effective(old), **_tenant_values(old, tenant)})
                values = {**old, **{scopes.tenant_key(tenant, key): merged[key] for key in changes}}
            _check_every_tenant(values)
        except ConfigInvalid as exc:
            raise InvalidConfig(exc) from exc
        return _write(values=values, actor=actor, reason=reason)


def _effective(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every runtime key's global value under the stored overrides `values`."""
    return {**defaults(), **{k: v for k, v in values.items() if k in RUNTIME}}


def _tenant_values(values: Mapping[str, Any], tenant: str) -> dict[str, Any]:
    own = {}
    for stored_key, value in values.items():
        split = scopes.split_tenant_key(stored_key)
        if split is not None and split[0] == tenant:
            own[split[1]] = value
    return own


def _check_tenant(tenant: str, changes: Mapping[str, Any]) -> None:

    for key in changes:
        setting = RUNTIME.get(key)
        if setting is not None and setting.scope is not Scope.TENANT:
            raise ConfigInvalid(key, "scope", "is global: it has no per-tenant value")
    if not Tenant.objects.filter(slug=tenant).exists():
        raise ConfigInvalid(next(iter(changes), "tenant"), "known_tenant", f"no tenant {tenant!r}")


def _check_every_tenant(values: Mapping[str, Any]) -> None:
    """A global change must leave every tenant's combination valid too (a lower global
    `max_items` under a tenant's `inline_max_items`, say)."""
    base = _effective(values)
    tenants = {split[0] for k in values if (split := scopes.split_tenant_key(k)) is not None}
    for tenant in sorted(tenants):
        try:
            check_combinations({**base, **_tenant_values(values, tenant)})
        except ConfigInvalid as exc:
            raise ConfigInvalid(exc.key, exc.rule, f"for tenant {tenant}: {exc}") from exc


def config_rollback(*, version: int, actor: str, reason: str) -> ConfigVersion:
    """Every key back to its value at `version`, as a new version."""
    if not reason.strip():
        raise InvalidRequest("invalid_request", "a reason is required")
    with transaction.atomic():
        _lock()
        if version == 0:
            target: dict[str, Any] = {}
        else:
            row = ConfigVersion.objects.filter(version=version).first()
            if row is None:
                raise NotFound("not_found", f"no configuration version {version}")
            target = dict(row.values)
        try:
            validate({k: v for k, v in target.items() if k in RUNTIME}, defaults())
            for key, value in target.items():
                if flags.is_flag_key(key):
                    flags.parse_flag(key.removeprefix(flags.PREFIX), value)
            for key, value in target.items():
                split = scopes.split_tenant_key(key)
                if split is not None:
                    parse(RUNTIME[split[1]], value)
            _check_every_tenant(target)
            # A schedule no longer declared is ignored (schedules.effective); others are checked.
            schedules.effective(target)
        except ConfigInvalid as exc:
            raise InvalidConfig(exc) from exc
        return _write(values=target, actor=actor, reason=reason, rollback_of=version)


def config_items() -> list[dict[str, Any]]:
    """Every runtime setting: its value now (from the database), default and metadata."""
    row = latest()
    values = dict(row.values) if row else {}
    changed = _last_changes()
    base = defaults()
    items = []
    for key, setting in sorted(RUNTIME.items()):
        last = changed.get(key)
        items.append(
            {
                "key": key,
                "value": values.get(key, base[key]),
                "default": base[key],
                "type": setting.type,
                "description": setting.description,
                "scope": setting.scope.value,
                "bounds": setting.bounds,
                "env": setting.env,
                "version": last.version if last else 0,
                "changed_by": last.actor if last else None,
                "changed_at": last.at if last else None,
                "tenant_values": {
                    split[0]: value
                    for stored_key, value in sorted(values.items())
                    if (split := scopes.split_tenant_key(stored_key)) is not None and split[1] == key
                },
            }
        )
    return items


def flag_set(*, name: str, value: Mapping[str, Any], actor: str, reason: str) -> ConfigVersion:
    """Create or change the flag `name` (a new configuration version); InvalidConfig
    names the flag's key and the rule a field broke."""
    return _set_one(
        key=flags.key_of(name),
        parse=lambda: flags.parse_flag(name, value).as_value(),
        actor=actor,
        reason=reason,
    )


def _set_one(*, key: str, parse: Callable[[], Any], actor: str, reason: str) -> ConfigVersion:
    """A new version with one stored key set to what `parse` makes of the request."""
    if not reason.strip():
        raise InvalidRequest("invalid_request", "a reason is required")
    try:
        stored_value = parse()
    except ConfigInvalid as exc:
        raise InvalidConfig(exc) from exc
    with transaction.atomic():
        _lock()
        _, old = stored()
        return _write(values={**old, key: stored_value}, actor=actor, reason=reason)


def _last_changes() -> dict[str, ConfigVersion]:
    """Each stored key's latest version that changed it."""
    changed: dict[str, ConfigVersion] = {}
    for version in ConfigVersion.objects.order_by("version"):
        for key in version.changes:
            changed[key] = version
    return changed


def flag_items() -> list[dict[str, Any]]:
    """Every flag: its value now (from the database) and its last change."""
    row = latest()
    values = dict(row.values) if row else {}
    changed = _last_changes()
    items = []
    for key in sorted(k for k in values if flags.is_flag_key(k)):
        flag = flags.parse_flag(key.removeprefix(flags.PREFIX), values[key])
        last = changed.get(key)
        items.append(
            {
                "name": flag.name,
                **flag.as_value(),
                "version": last.version if last else 0,
                "changed_by": last.actor if last else None,
                "changed_at": last.at if last else None,
            }
        )
    return items


def schedule_set(*, name: str, value: Mapping[str, Any], actor: str, reason: str) -> ConfigVersion:
    """Change beat's schedule `name` (interval, enabled) as a new configuration version;
    the active beat picks it up at its next tick."""
    return _set_one(
        key=schedules.key_of(name),
        parse=lambda: schedules.parse_schedule(name, value).as_value(),
        actor=actor,
        reason=reason,
    )


def schedule_items() -> list[dict[str, Any]]:
    """Every declared schedule as it is now (its default, or its runtime value)."""
    _, values = stored()
    base = schedules.declared()
    return [
        {
            "name": s.name,
            "task": s.task,
            "every_seconds": s.every_seconds,
            "enabled": s.enabled,
            "default_every_seconds": base[s.name].every_seconds,
        }
        for s in sorted(schedules.effective(values).values(), key=lambda s: s.name)
    ]


def validate_change(key: str, value: Any, *, tenant: str | None = None) -> None:
    """Check one change as `change` would make it, writing nothing; ConfigInvalid names
    the key and the rule (the admin's form shows it before anything is saved)."""
    if flags.is_flag_key(key):
        flags.parse_flag(key.removeprefix(flags.PREFIX), value)
    elif schedules.is_schedule_key(key):
        schedules.parse_schedule(key.removeprefix(schedules.PREFIX), value)
    elif tenant is not None:
        _check_tenant(tenant, {key: value})
        _, old = stored()
        validate({key: value}, {**_effective(old), **_tenant_values(old, tenant)})
    else:
        _, old = stored()
        validate({key: value}, _effective(old))


def change(*, key: str, value: Any, actor: str, reason: str, tenant: str | None = None) -> ConfigVersion:
    """One change of any kind — a setting (globally or for a tenant), a flag
    (`flag.<name>`) or a schedule (`schedule.<name>`) — as a new version."""
    if flags.is_flag_key(key):
        return flag_set(name=key.removeprefix(flags.PREFIX), value=value, actor=actor, reason=reason)
    if schedules.is_schedule_key(key):
        return schedule_set(name=key.removeprefix(schedules.PREFIX), value=value, actor=actor, reason=reason)
    return config_set(changes={key: value}, actor=actor, reason=reason, tenant=tenant)
