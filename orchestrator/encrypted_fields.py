"""`EncryptedJSONField`: a JSON value the ORM reads and writes in clear, stored encrypted.

The column is `text` holding a Fernet token (or, for rows written before migration 0012,
the plain JSON text); `orchestrator.payloads` does the encryption. It is a JSONField to
everything above the database (forms, the admin's display, DRF's ModelSerializer), but it
offers no JSON lookups: data the database cannot read is not searched, filtered or ordered
by (a `metadata__course` filter is a FieldError, not a silent scan of ciphertext).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.lookups import IsNull

from orchestrator import payloads


class EncryptedJSONField(models.JSONField):
    description = "A JSON value, stored encrypted (orchestrator.payloads)"

    def get_internal_type(self) -> str:
        return "TextField"

    def from_db_value(self, value: str | None, expression: Any, connection: BaseDatabaseWrapper) -> Any:
        return payloads.decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        if hasattr(value, "resolve_expression"):
            return value
        return payloads.encrypt(value)

    def get_db_prep_value(self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False) -> Any:
        # The token is the column's text: no jsonb adaptation (JSONField's own).
        return value if prepared else self.get_prep_value(value)

    def get_transform(self, name: str) -> Any:
        return None  # no key transforms into ciphertext

    def get_lookup(self, lookup_name: str) -> Any:
        return IsNull if lookup_name == "isnull" else None
