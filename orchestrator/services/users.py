"""API users, their tenant memberships and their admin login."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction
from rest_framework.authtoken.models import Token

from orchestrator.errors import InvalidRequest
from orchestrator.models import Membership, Tenant


def api_user_grant(*, username: str, tenant: str, role: str, password: str | None = None) -> Token:
    """Create the user if needed and give them `role` in `tenant`; return their token.

    With a `password`, the user may also log in to the admin (`is_staff`); what they see
    and may do there follows their roles (`orchestrator.access`), not Django model
    permissions, so none are granted. Without one, an existing login is left as it is.
    """
    if role not in Membership.Role.values:
        raise InvalidRequest("invalid_role", f"role must be one of {', '.join(Membership.Role.values)}")
    try:
        validate_slug(tenant)
    except ValidationError as exc:
        raise InvalidRequest(
            "invalid_tenant", f"tenant {tenant!r} is not a slug (letters, digits, - and _)"
        ) from exc
    if password is not None and not password:
        raise InvalidRequest("invalid_password", "the password must not be empty")
    with transaction.atomic():
        user, created = get_user_model().objects.get_or_create(username=username)
        if password is not None:
            user.set_password(password)
            user.is_staff = True
            user.save(update_fields=["password", "is_staff"])
        elif created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        tenant_row, _ = Tenant.objects.get_or_create(slug=tenant)
        Membership.objects.update_or_create(user=user, tenant=tenant_row, defaults={"role": role})
        token, _ = Token.objects.get_or_create(user=user)
    return token
