"""The OpenAPI schema's operations, tagged by resource (`batches`, `pipelines`, `config`):
the first part of the path after `/api/v1/`, so /api/docs/ groups them that way. Operation
ids keep their `v1_` prefix (clients generated from the schema name methods by them)."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema


class ResourceTaggedSchema(AutoSchema):
    def get_tags(self) -> list[str]:
        parts = self._tokenize_path()
        if len(parts) > 1 and parts[0] == "v1":
            return [parts[1]]
        return parts[:1]
