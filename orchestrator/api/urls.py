"""URL map of `/api/v1/`."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import DefaultRouter

from orchestrator.api.views import BatchViewSet, PipelineViewSet, breakers_view

router = DefaultRouter()
router.register("batches", BatchViewSet, basename="batch")
router.register("pipelines", PipelineViewSet, basename="pipeline")
urlpatterns = [path("breakers/", breakers_view, name="breakers"), *router.urls]
