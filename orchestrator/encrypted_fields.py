"""`EncryptedJSONField`: a JSON value the ORM reads and writes in clear, stored encrypted.

The column is `text` holding a Fernet token (or, for rows written before migration 0012,
the plain JSON text); `orchestrator.payloads` does the encryption. Being a text column,
it offers no JSON lookups: data the database cannot read is not searched, filtered or
ordered by (a `metadata__course` filter is a FieldError, not a silent full scan).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from orchestrator import payloads


class EncryptedJSONField(models.TextField):  # type: ignore[type-arg]
    description = "A JSON value, stored encrypted (orchestrator.payloads)"
    # django-stubs: the attribute holds (and takes) any JSON value, as a JSONField does.
    _pyi_private_set_type: Any
    _pyi_private_get_type: Any

    def from_db_value(self, value: str | None, expression: Any, connection: BaseDatabaseWrapper) -> Any:
        return payloads.decrypt(value)

    def to_python(self, value: Any) -> Any:
        # What the ORM holds is the clear value already (forms give it parsed, below).
        return value

    def get_prep_value(self, value: Any) -> Any:
        if hasattr(value, "resolve_expression"):
            return value
        return payloads.encrypt(value)

    def value_to_string(self, obj: models.Model) -> Any:
        """The clear value, for serializers (`dumpdata`), as JSONField gives it."""
        return self.value_from_object(obj)

    def formfield(self, **kwargs: Any) -> Any:
        return super().formfield(**{"form_class": forms.JSONField, **kwargs})
