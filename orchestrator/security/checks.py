"""`manage.py check --deploy` checks of BOS's own security settings (docs/security.md)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register


@register(Tags.security, deploy=True)
def metrics_token_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if settings.BOS_ENV == "production" and not settings.BOS_METRICS_TOKEN:
        return [
            Warning(
                "BOS_METRICS_TOKEN is not set: /metrics (tenant and pipeline names, queue depths) "
                "answers anyone who reaches it",
                hint="set BOS_METRICS_TOKEN and give Prometheus the same token "
                "(docs/monitoring/prometheus.yml, authorization.credentials_file)",
                id="bos.W101",
            )
        ]
    return []
