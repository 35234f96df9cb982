"""URL map of `/dashboard/`."""

from __future__ import annotations

from django.urls import path

from orchestrator.dashboard.views import batch_graph_page, dashboard

app_name = "dashboard"
urlpatterns = [
    path("", dashboard, name="home"),
    path("batches/<uuid:batch_id>/graph/", batch_graph_page, name="batch-graph"),
]
