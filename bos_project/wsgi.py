"""WSGI entry point for the BOS web service."""

from __future__ import annotations

import os

import django
from django.core.handlers.wsgi import WSGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bos_project.settings")
django.setup(set_prefix=False)  # what get_wsgi_application() does, then:

from orchestrator.observability import tracing  # noqa: E402
from orchestrator.observability.metrics import start_process_metrics  # noqa: E402 - needs Django set up

# Traces, when OTEL_EXPORTER_OTLP_ENDPOINT is set, before the handler loads the middleware
# (Django's instrumentation adds its own). Under gunicorn each worker imports this module
# after the fork (bos_project/gunicorn_conf.py: the app is not preloaded); under runserver,
# the serving process does.
tracing.setup("web")

application = WSGIHandler()
start_process_metrics("web")
