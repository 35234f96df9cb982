"""The REST API (`/api/v1/`): serializers, filters, views, error mapping, health and metrics."""
