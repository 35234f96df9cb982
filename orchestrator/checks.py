"""Django system checks of BOS settings that can only be judged after settings load.

Registered when the app is ready (orchestrator/apps.py), so `manage.py check` and every
command that runs checks (runserver, publish_outbox, consume_batches, ...) refuse to start
on a bad setting with one error naming it.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register

from orchestrator.kafka.routing import check_event_routes


@register("bos")
def event_routes_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    problem = check_event_routes()
    if problem is None:
        return []
    return [
        Error(
            problem,
            hint='BOS_EVENT_ROUTES is a JSON list of {"event_types": [globs], "tenants": [slugs], "topic": name}; '
            "see docs/events.md",
            id="bos.E020",
        )
    ]
