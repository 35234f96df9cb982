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
        # Security: deploy checks, and logins, failures and lockouts into the audit log.
        import_module("orchestrator.security.checks")
        import_module("orchestrator.security.logins").connect()
        _hide_beat_tables_from_the_admin()


def _hide_beat_tables_from_the_admin() -> None:
    """django-celery-beat's own admin would change schedules outside the configuration
    versions; BOS's schedules are changed with `bos_config schedule` (or the runtime
    configuration's admin page) instead, versioned and applied by one function."""
    from django.contrib import admin
    from django_celery_beat import models as beat

    for model in (
        beat.PeriodicTask,
        beat.IntervalSchedule,
        beat.CrontabSchedule,
        beat.SolarSchedule,
        beat.ClockedSchedule,
    ):
        if admin.site.is_registered(model):
            admin.site.unregister(model)
