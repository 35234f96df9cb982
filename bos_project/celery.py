"""The Celery application, configured from Django settings (namespace CELERY)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bos_project.settings")

app = Celery("bos")
app.config_from_object("django.conf:settings", namespace="CELERY")


@task_prerun.connect
def _drop_broken_connections(**kwargs: Any) -> None:
    """Before a task, close database connections that saw an error and no longer work.

    Workers keep connections across tasks (CELERY_DB_REUSE_MAX), so after PostgreSQL
    went away the dead connection must be dropped, or every retry would reuse it.
    Healthy connections are left alone: no extra round trip per task.
    """
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.errors_occurred:
            conn.close_if_unusable_or_obsolete()
