"""Django app configuration for the orchestrator domain."""

from __future__ import annotations

from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class OrchestratorConfig(AppConfig):
    name = "orchestrator"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Batch orchestration"

    def ready(self) -> None:
        # Phase handlers register themselves on import; every process needs them all.
        for module in settings.BOS_HANDLER_MODULES:
            import_module(module)
        import_module("orchestrator.checks")  # registers the system checks of BOS settings
