"""Feature flags, as pure code: what a flag is, how its value is checked, and who gets it.

A flag is stored with the runtime configuration (`orchestrator.config.store`), under the
key `flag.<name>`, so it is versioned, audited in the history, rolled back and hot
reloaded exactly like a setting. Its value:

    {"enabled": true, "percent": 10, "tenants": ["acme"], "pipelines": ["essay-analysis"],
     "description": "new scoring phase"}

A batch gets the flag when it is `enabled`, its tenant is in `tenants` (empty: any), its
pipeline in `pipelines` (empty: any), and its bucket is below `percent`. The bucket is
a hash of the flag's name and the batch id, 0–99: the same batch always gets the same
answer — across retries, processes and machines — and raising the percentage only adds
batches. An unknown flag is off.

django-waffle was considered: its percentages are per browser (a cookie) and its values
live in its own tables and cache, not per batch and not in BOS's versioned, hot-reloaded
configuration, so it fits neither the stickiness nor the reload.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.config.registry import ConfigInvalid

PREFIX = "flag."
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
FIELDS = ("enabled", "percent", "tenants", "pipelines", "description")


@dataclass(frozen=True)
class Flag:
    name: str
    enabled: bool = False
    percent: int = 100
    tenants: tuple[str, ...] = ()
    pipelines: tuple[str, ...] = ()
    description: str = ""

    def as_value(self) -> dict[str, Any]:
        """The stored form (without the name, which is in the key)."""
        value = asdict(self)
        value.pop("name")
        value["tenants"], value["pipelines"] = list(self.tenants), list(self.pipelines)
        return value


def key_of(name: str) -> str:
    return PREFIX + name


def is_flag_key(key: str) -> bool:
    return key.startswith(PREFIX)


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise ConfigInvalid(
            key_of(name), "flag_name", "a flag name is lowercase letters, digits, '_', '-', '.'"
        )


def _names(key: str, field: str, raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) and x.strip() for x in raw):
        raise ConfigInvalid(key, "type", f"{field} must be a list of names; got {raw!r}")
    return tuple(sorted({x.strip() for x in raw}))


def parse_flag(name: str, raw: Any) -> Flag:
    """`raw` (a JSON object) as a Flag, every field checked; ConfigInvalid otherwise."""
    check_name(name)
    key = key_of(name)
    if not isinstance(raw, Mapping):
        raise ConfigInvalid(key, "type", f"a flag is an object with {', '.join(FIELDS)}; got {raw!r}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ConfigInvalid(
            key, "known_field", f"unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}"
        )
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigInvalid(key, "type", f"enabled must be true or false; got {enabled!r}")
    percent = raw.get("percent", 100)
    if isinstance(percent, bool) or not isinstance(percent, int | float) or percent != int(percent):
        raise ConfigInvalid(key, "type", f"percent must be a whole number; got {percent!r}")
    if not 0 <= percent <= 100:
        raise ConfigInvalid(key, "bounds", f"percent must be within 0–100; got {percent}")
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 500:
        raise ConfigInvalid(key, "type", "description must be text of at most 500 characters")
    return Flag(
        name=name,
        enabled=enabled,
        percent=int(percent),
        tenants=_names(key, "tenants", raw.get("tenants")),
        pipelines=_names(key, "pipelines", raw.get("pipelines")),
        description=description,
    )


def bucket(name: str, batch_id: str) -> int:
    """0–99, the same for the same flag and batch everywhere (sha256, not Python's hash)."""
    digest = hashlib.sha256(f"{name}:{batch_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def flag_on(flag: Flag | None, *, batch_id: str, tenant: str, pipeline: str) -> bool:
    """Whether a batch gets `flag` (None: an unknown flag, off)."""
    if flag is None or not flag.enabled:
        return False
    if flag.tenants and tenant not in flag.tenants:
        return False
    if flag.pipelines and pipeline not in flag.pipelines:
        return False
    return bucket(flag.name, batch_id) < flag.percent
