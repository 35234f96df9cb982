"""Security settings (docs/security.md): the shared cache, API rate limits, admin login
lockout (django-axes), hashed API tokens (django-rest-knox), the metrics token, and the
response headers, HTTPS-only in production."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured

from bos_project.settings.environment import bos_env, env, positive_int, required_url
from orchestrator.security.rates import parse_rate

_ENV = bos_env()


def _rate(name: str, default: str) -> str:
    value = str(env.str(name, default=default)).strip()
    try:
        parse_rate(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from exc
    return value


def _bounded(name: str, default: int, maximum: int) -> int:
    value = positive_int(name, default)
    if value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}")
    return value


# --- The shared cache: Redis, for every process (rate-limit counters, de-duplication keys) ---
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": required_url("REDIS_URL", ("redis", "rediss")),
        "KEY_PREFIX": "bos",
        "TIMEOUT": 300,
    }
}

# --- API rate limits (orchestrator/api/throttles.py; CONTRACT §1 for the defaults) ---
BOS_API_RATE_USER = _rate("BOS_API_RATE_USER", "1200/min")
BOS_API_RATE_TENANT = _rate("BOS_API_RATE_TENANT", "6000/min")
BOS_API_RATE_WRITE = _rate("BOS_API_RATE_WRITE", "300/min")

# --- Admin logins: lockout by username and client address (django-axes, orchestrator/security/logins.py) ---
BOS_LOGIN_FAILURE_LIMIT = _bounded("BOS_LOGIN_FAILURE_LIMIT", 5, 1000)
BOS_LOGIN_COOLOFF_MINUTES = _bounded("BOS_LOGIN_COOLOFF_MINUTES", 15, 10080)
AXES_FAILURE_LIMIT = BOS_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=BOS_LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "orchestrator.security.logins.client_ip"
AXES_LOCKOUT_CALLABLE = "orchestrator.security.logins.lockout_response"
AXES_RESET_ON_SUCCESS = True
# Lockouts are lifted with `manage.py axes_reset_username <name>` (or axes_reset_ip); axes'
# own admin pages would be three more models outside BOS's access rules.
AXES_ENABLE_ADMIN = False
# Failed attempts are BOS's audit records (login_failed); axes keeps only its counters.
AXES_ENABLE_ACCESS_FAILURE_LOG = False
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False
AUTHENTICATION_BACKENDS = [
    "orchestrator.security.backends.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# --- API tokens: hashed, expiring (django-rest-knox, orchestrator/security/tokens.py) ---
BOS_API_TOKEN_TTL_DAYS = _bounded("BOS_API_TOKEN_TTL_DAYS", 90, 3650)
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=BOS_API_TOKEN_TTL_DAYS),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}

# --- /metrics (and BOS_METRICS_PORT) behind a bearer token when set ---
BOS_METRICS_TOKEN = str(env.str("BOS_METRICS_TOKEN", default="")).strip() or None

# --- Response headers (Django's SecurityMiddleware, XFrameOptionsMiddleware; CSP: orchestrator/security/headers.py) ---
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if _ENV == "production":
    # HTTPS only. Probes reach health and metrics over plain HTTP inside the network.
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = 365 * 24 * 3600
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if env.list("BOS_TRUSTED_PROXIES", default=[]):
        # The TLS-terminating proxy says the original scheme; only trusted proxies sit in front.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SILENCED_SYSTEM_CHECKS = [
    # security.W021 (SECURE_HSTS_PRELOAD): asking browsers to preload the domain binds the
    # domain and every subdomain to HTTPS for months; that is the domain owner's decision,
    # made at hstspreload.org, not the service's default.
    "security.W021",
]
# --- end of security settings ---
