"""BOS project package: settings, the Celery app and the URL map."""

from __future__ import annotations

from bos_project.celery import app as celery_app

__all__ = ["celery_app"]
