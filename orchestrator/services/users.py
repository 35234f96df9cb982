"""API users, their tenant memberships and their admin login.

Each grant issues a new API token (orchestrator/security/tokens.py): tokens are stored hashed,
so an existing one cannot be shown again; earlier tokens stay valid until they expire or are
revoked (`manage.py revoke_api_tokens`). The grant is audited (`user.create`,
`membership.create` / `membership.update`, `token.create`) as the acting context: the
commands act as `system:<command>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from orchestrator import audit
from orchestrator.errors import InvalidRequest
from orchestrator.models import Membership, Tenant
from orchestrator.security import tokens


@dataclass(frozen=True)
class ApiGrant:
    """What a grant did; `key` is the new token's secret, shown once."""

    username: str
    tenant: str
    role: str
    key: str
    expiry: datetime | None


def api_user_grant(*, username: str, tenant: str, role: str, password: str | None = None) -> ApiGrant:
    """Create the user if needed and give them `role` in `tenant`; issue them a new token.

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
        if created:
            audit.record(
                "user.create",
                object_type="user",
                object_id=username,
                detail={"username": username, "admin_login": password is not None},
            )
        tenant_row, _ = Tenant.objects.get_or_create(slug=tenant)
        before = (
            Membership.objects.filter(user=user, tenant=tenant_row).values_list("role", flat=True).first()
        )
        membership, _ = Membership.objects.update_or_create(
            user=user, tenant=tenant_row, defaults={"role": role}
        )
        if before != role:
            audit.record(
                "membership.create" if before is None else "membership.update",
                object_type="membership",
                object_id=membership.pk,
                tenant=tenant_row,
                detail={"username": username, "role": role, "previous_role": before},
            )
        token = tokens.issue(user)
    return ApiGrant(username=username, tenant=tenant, role=role, key=token.key, expiry=token.expiry)
