"""URL map of `/api/v1/`."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import DefaultRouter

from orchestrator.api.audit_views import AuditListView
from orchestrator.api.config_views import (
    config_history_view,
    config_list_view,
    config_rollback_view,
    config_set_view,
)
from orchestrator.api.flag_views import flag_list_view, flag_set_view
from orchestrator.api.views import BatchViewSet, PipelineViewSet, alerts_view, breakers_view, errors_view


class JsonRouter(DefaultRouter):
    """No `.json` format-suffix routes: JSON is the API's format (`Accept` chooses the
    browsable page), and the suffix routes of custom actions answered 500."""

    include_format_suffixes = False


router = JsonRouter()
router.register("batches", BatchViewSet, basename="batch")
router.register("pipelines", PipelineViewSet, basename="pipeline")
urlpatterns = [
    path("audit/", AuditListView.as_view(), name="audit"),
    path("breakers/", breakers_view, name="breakers"),
    path("errors/", errors_view, name="errors"),
    path("alerts/", alerts_view, name="alerts"),
    path("config/", config_list_view, name="config"),
    path("config/history/", config_history_view, name="config-history"),
    path("config/rollback/", config_rollback_view, name="config-rollback"),
    path("config/<str:key>/", config_set_view, name="config-set"),
    path("flags/", flag_list_view, name="flags"),
    path("flags/<str:name>/", flag_set_view, name="flag-set"),
    *router.urls,
]
