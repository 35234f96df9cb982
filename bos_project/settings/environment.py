"""Reading and validating BOS configuration from the environment (CONTRACT §1).

Values come from the process environment first, then from `.bos/services.env`, which
`python -m bos_project.devservices up` writes so every command finds the same services.
Invalid values stop start-up with one `ImproperlyConfigured` naming the variable.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
BOS_HOME = Path(os.environ.get("BOS_HOME", BASE_DIR / ".bos"))
SERVICES_ENV = BOS_HOME / "services.env"

ENVIRONMENTS = ("development", "test", "production")

env = environ.Env()
if SERVICES_ENV.exists():
    # overwrite=False: a variable set in the environment always wins over the file.
    environ.Env.read_env(str(SERVICES_ENV), overwrite=False)


def bos_env() -> str:
    value = str(env.str("BOS_ENV", default="development"))
    if value not in ENVIRONMENTS:
        raise ImproperlyConfigured(f"BOS_ENV must be one of {', '.join(ENVIRONMENTS)}; got {value!r}")
    return value


def required_url(name: str, schemes: tuple[str, ...]) -> str:
    """Return the URL in `name`, or stop with a message saying how to get one."""
    value = str(env.str(name, default=""))
    if not value:
        raise ImproperlyConfigured(
            f"{name} is not set and no embedded service is running: start BOS with "
            "`make run` / `make test`, or run `python -m bos_project.devservices up`."
        )
    scheme = urlparse(value).scheme
    if scheme not in schemes:
        raise ImproperlyConfigured(f"{name} must be a URL with scheme {' or '.join(schemes)}; got {value!r}")
    return value


def kafka_bootstrap() -> list[str]:
    value = env.str("KAFKA_BOOTSTRAP_SERVERS", default="")
    if not value:
        raise ImproperlyConfigured(
            "KAFKA_BOOTSTRAP_SERVERS is not set and no embedded broker is running: "
            "run `python -m bos_project.devservices up`."
        )
    servers = [s.strip() for s in value.split(",") if s.strip()]
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise ImproperlyConfigured(
                f"KAFKA_BOOTSTRAP_SERVERS must be a comma-separated list of host:port; got {value!r}"
            )
    return servers


def _dev_secret(name: str, filename: str, make: object, environment: str) -> str:
    """A secret from the environment, or (outside production) one generated once under .bos/."""
    value = str(env.str(name, default=""))
    if value:
        return value
    if environment == "production":
        raise ImproperlyConfigured(f"{name} must be set when BOS_ENV=production")
    path = BOS_HOME / filename
    if path.exists():
        return path.read_text().strip()
    assert callable(make)
    value = str(make())
    BOS_HOME.mkdir(parents=True, exist_ok=True)
    path.write_text(value)
    path.chmod(0o600)
    if environment == "development":
        print(
            f"WARNING: {name} is not set; using a generated development key from {path}. "
            "Never use it in production.",
            file=sys.stderr,
        )
    return value


def secret_key(environment: str) -> str:
    return _dev_secret("BOS_SECRET_KEY", "secret_key", lambda: secrets.token_urlsafe(50), environment)


def flower_login(environment: str) -> tuple[str, str]:
    """Flower's basic-auth user and password (CONTRACT §1): `BOS_FLOWER_USER` (default
    `flower`) and `BOS_FLOWER_PASSWORD`, else (outside production) one generated once
    into `.bos/flower_password`, which `make run` prints with the admin login."""
    user = str(env.str("BOS_FLOWER_USER", default="flower")).strip()
    if not user or ":" in user:
        raise ImproperlyConfigured("BOS_FLOWER_USER must be a non-empty name without ':'")
    password = _dev_secret(
        "BOS_FLOWER_PASSWORD", "flower_password", lambda: secrets.token_urlsafe(12), environment
    )
    return user, password


def encryption_keys(environment: str) -> list[str]:
    raw = _dev_secret(
        "BOS_ENCRYPTION_KEYS",
        "encryption_keys",
        lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        environment,
    )
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    for key in keys:
        try:
            valid = len(base64.urlsafe_b64decode(key.encode())) == 32
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            raise ImproperlyConfigured(
                "BOS_ENCRYPTION_KEYS must be comma-separated Fernet keys "
                "(url-safe base64 of 32 bytes), newest first"
            )
    if environment == "production" and set(keys) & _dev_encryption_keys():
        raise ImproperlyConfigured(
            f"BOS_ENCRYPTION_KEYS holds the generated development key of {BOS_HOME / 'encryption_keys'}: "
            "generate production keys (docs/encryption.md)"
        )
    return keys


def _dev_encryption_keys() -> set[str]:
    """The keys of the generated development file, if there is one (never valid in production)."""
    path = BOS_HOME / "encryption_keys"
    try:
        text = path.read_text()
    except OSError:
        return set()
    return {k.strip() for k in text.split(",") if k.strip()}


def port(name: str, default: int) -> int:
    try:
        value = int(env.int(name, default=default))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a port number") from exc
    if not 0 < value < 65536:
        raise ImproperlyConfigured(f"{name} must be a port number between 1 and 65535")
    return value


def metrics_dir() -> Path:
    """The machine's metrics folder (docs/observability.md): BOS_METRICS_DIR, else
    BOS_HOME/metrics. BOS sets prometheus_client's PROMETHEUS_MULTIPROC_DIR from it."""
    return Path(str(env.str("BOS_METRICS_DIR", default=str(BOS_HOME / "metrics")))).resolve()


def positive_int(name: str, default: int) -> int:
    try:
        value = int(env.int(name, default=default))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer") from exc
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be a positive integer")
    return value


def choice(name: str, choices: tuple[str, ...], default: str) -> str:
    value = str(env.str(name, default=default)).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def json_value(name: str, default: Any) -> Any:
    try:
        return env.json(name, default=default)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ImproperlyConfigured(f"{name} must be valid JSON: {exc}") from exc


def trusted_proxies() -> list[str]:
    """`BOS_TRUSTED_PROXIES`: addresses or CIDR networks, each checked at start-up."""
    import ipaddress

    values = [v.strip() for v in env.list("BOS_TRUSTED_PROXIES", default=[]) if v.strip()]
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"BOS_TRUSTED_PROXIES: {value!r} is not an IP address or CIDR network"
            ) from exc
    return values
