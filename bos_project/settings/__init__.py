"""Django settings for BOS, assembled from one module per concern.

`django_settings` holds Django itself, `celery_settings` the Celery app, `bos` the
orchestrator's own knobs (topics, limits, chunk sizes), `security_settings` the cache,
rate limits, logins, tokens and headers (docs/security.md). All values come from the
environment through `environment`, which validates them at start-up.
"""

from __future__ import annotations

from bos_project.settings.bos import *  # noqa: F403
from bos_project.settings.celery_settings import *  # noqa: F403
from bos_project.settings.django_settings import *  # noqa: F403
from bos_project.settings.logging_settings import *  # noqa: F403
from bos_project.settings.security_settings import *  # noqa: F403
