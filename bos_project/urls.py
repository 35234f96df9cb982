"""URL map: the API, its schema and docs, health, metrics, the dashboard and the admin."""

from __future__ import annotations

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from orchestrator.admin import breakers_page
from orchestrator.api.health import healthz, readyz
from orchestrator.api.metrics import metrics

urlpatterns = [
    path("favicon.ico", RedirectView.as_view(url=static("orchestrator/favicon.svg"), permanent=True)),
    path("api/v1/", include("orchestrator.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("dashboard/", include("orchestrator.dashboard.urls")),
    path("admin/bos/breakers/", admin.site.admin_view(breakers_page), name="admin-breakers"),
    path("admin/", admin.site.urls),
]
