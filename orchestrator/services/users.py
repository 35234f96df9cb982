"""API users and their tenant memberships."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authtoken.models import Token

from orchestrator.errors import InvalidRequest
from orchestrator.models import Membership, Tenant


def api_user_grant(*, username: str, tenant: str, role: str) -> Token:
    """Create the user if needed and give them `role` in `tenant`; return their token."""
    if role not in Membership.Role.values:
        raise InvalidRequest("invalid_role", f"role must be one of {', '.join(Membership.Role.values)}")
    with transaction.atomic():
        user, _ = get_user_model().objects.get_or_create(username=username)
        tenant_row, _ = Tenant.objects.get_or_create(slug=tenant)
        Membership.objects.update_or_create(user=user, tenant=tenant_row, defaults={"role": role})
        token, _ = Token.objects.get_or_create(user=user)
    return token
