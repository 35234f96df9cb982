"""Page-number pagination with a client-chosen `page_size` (capped)."""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination


class BatchPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
