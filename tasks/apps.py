"""Django app configuration for the Celery tasks and phase handlers."""

from __future__ import annotations

from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "BOS tasks"
