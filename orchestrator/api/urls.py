"""URL map of `/api/v1/`."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import DefaultRouter

from orchestrator.api.views import BatchViewSet, PipelineViewSet, alerts_view, breakers_view, errors_view

router = DefaultRouter()
router.register("batches", BatchViewSet, basename="batch")
router.register("pipelines", PipelineViewSet, basename="pipeline")
urlpatterns = [
    path("breakers/", breakers_view, name="breakers"),
    path("errors/", errors_view, name="errors"),
    path("alerts/", alerts_view, name="alerts"),
    *router.urls,
]
