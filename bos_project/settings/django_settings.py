"""Django, DRF and drf-spectacular settings."""

from __future__ import annotations

from bos_project.settings.environment import (
    BASE_DIR,
    bos_env,
    env,
    port,
    required_url,
    secret_key,
)

BOS_ENV = bos_env()
SECRET_KEY = secret_key(BOS_ENV)
# Off unless asked for, in development too (docs/security.md#hardened-edges): Django's debug
# pages show SQL, settings and the caller's tenants to whoever triggers an error, and
# `make run` serves on an address others may reach. Tracebacks still go to the log.
DEBUG = env.bool("BOS_DEBUG", default=False)
if DEBUG and BOS_ENV == "production":
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("BOS_DEBUG must not be on when BOS_ENV=production")
ALLOWED_HOSTS = env.list("BOS_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
BOS_HTTP_PORT = port("BOS_HTTP_PORT", 8000)
BOS_FLOWER_PORT = port("BOS_FLOWER_PORT", 5555)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # API tokens stored hashed, with expiry (orchestrator/security/tokens.py).
    "knox",
    # Admin login lockout (orchestrator/security/logins.py).
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    # Task results in PostgreSQL (orchestrator/task_results.py); before orchestrator,
    # whose admin replaces django-celery-results' own.
    "django_celery_results",
    "orchestrator",
    "tasks",
]

MIDDLEWARE = [
    # First, so it times (and counts the queries of) everything below it.
    "orchestrator.observability.http_metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "orchestrator.observability.middleware.CorrelationIdMiddleware",
    # Who acts, from where, for the audit log (orchestrator/audit/).
    "orchestrator.audit.middleware.AuditContextMiddleware",
    # JSON, never an HTML or debug page, on the API's paths (orchestrator/api/middleware.py).
    "orchestrator.api.middleware.ApiErrorMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Content-Security-Policy on the admin and dashboard pages (orchestrator/security/headers.py).
    "orchestrator.security.headers.ContentSecurityPolicyMiddleware",
    # Last: refuses locked-out logins with its lockout page (django-axes).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "bos_project.urls"
WSGI_APPLICATION = "bos_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        **env.db_url_config(required_url("DATABASE_URL", ("postgres", "postgresql", "pgsql"))),
        "CONN_MAX_AGE": env.int("BOS_DB_CONN_MAX_AGE", default=60),
        "CONN_HEALTH_CHECKS": True,
    }
}
# BOS's queries are small and indexed: starting parallel workers for them costs more
# (milliseconds) than the query. Merged into any options the URL carries.
DATABASES["default"].setdefault("OPTIONS", {})
DATABASES["default"]["OPTIONS"]["options"] = (
    DATABASES["default"]["OPTIONS"].get("options", "") + " -c max_parallel_workers_per_gather=0"
).strip()
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL, the only database engine")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Times to the second on every page (bos_project/formats/en/formats.py).
FORMAT_MODULE_PATH = "bos_project.formats"
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
# Serve static files (admin, API docs) straight from the apps; no collectstatic needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # `Authorization: Token <key>` against hashed, expiring tokens (django-rest-knox).
        "orchestrator.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "orchestrator.api.pagination.BatchPagination",
    # JSON bodies only, size-capped, refusing NaN, U+0000 and deep nesting.
    "DEFAULT_PARSER_CLASSES": ["orchestrator.api.parsers.StrictJSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "orchestrator.api.schema.ResourceTaggedSchema",
    "EXCEPTION_HANDLER": "orchestrator.api.errors.exception_handler",
    "PAGE_SIZE": 50,
    # Per user, per tenant, and writes (orchestrator/api/throttles.py; rates in security_settings).
    "DEFAULT_THROTTLE_CLASSES": [
        "orchestrator.api.throttles.UserRateThrottle",
        "orchestrator.api.throttles.TenantRateThrottle",
        "orchestrator.api.throttles.WriteRateThrottle",
    ],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "BOS — Batch Orchestrator Service",
    "DESCRIPTION": "Submit batches, follow them through their pipeline, steer them.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from the package, not a CDN: works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Phases and items have `state` fields too: name the batch's enum, not by a hash.
    "ENUM_NAME_OVERRIDES": {"BatchStateEnum": "orchestrator.contracts.batch_state_choices"},
    # One tag per resource (orchestrator/api/schema.py tags by path; some views explicitly).
    "TAGS": [
        {
            "name": "batches",
            "description": "Submit batches, follow them, steer them (cancel, retry, roll back).",
        },
        {"name": "pipelines", "description": "Pipeline definitions, their versions, statistics and graphs."},
        {"name": "config", "description": "Runtime settings and their history (superusers)."},
        {
            "name": "flags",
            "description": "Feature flags: a sticky percentage of batches, by tenant and pipeline.",
        },
        {"name": "errors", "description": "Error fingerprints and alerts of your tenants."},
        {"name": "audit", "description": "The audit log: every operation, who, from where, how it ended."},
        {"name": "health", "description": "The service's dependencies: circuit breakers."},
    ],
}
