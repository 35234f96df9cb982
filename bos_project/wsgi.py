"""WSGI entry point for the BOS web service."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bos_project.settings")

application = get_wsgi_application()

from orchestrator.observability.metrics import start_process_metrics  # noqa: E402 - needs Django set up

start_process_metrics("web")
