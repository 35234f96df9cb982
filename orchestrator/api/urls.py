"""URL map of `/api/v1/`."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from orchestrator.api.views import BatchViewSet, PipelineViewSet

router = DefaultRouter()
router.register("batches", BatchViewSet, basename="batch")
router.register("pipelines", PipelineViewSet, basename="pipeline")
urlpatterns = router.urls
