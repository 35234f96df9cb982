"""Who may do what on whose objects: the one answer for the admin and the API.

A user holds a role in each of their tenants (`Membership`); roles are ordered
viewer < operator < admin, and each kind of operation needs a least role:

- `Do.READ` (viewer): see the tenant's batches, items, history, errors, alerts, events;
- `Do.OPERATE` (operator): batch actions (cancel, retry, retry items, roll back);
- `Do.ADMINISTER` (admin): the tenant's own settings and audit log.

A superuser may do everything on every tenant's objects, and alone may touch what
belongs to no tenant (pipelines' definitions, breakers, system events). A user with no
membership may do nothing, whatever Django model permissions they hold: permissions are
per tenant here, and Django's are per model, so Django's are not consulted.

A user's roles are read once per user object (one query), which for a web request is
once per request.
"""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Model, QuerySet

from orchestrator.models import Membership

M = TypeVar("M", bound=Model)
User = AbstractBaseUser | AnonymousUser

_CACHE = "_bos_tenant_roles"


class Role(IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def of(cls, name: str) -> Role:
        return cls[name.upper()]


class Do(Enum):
    """An operation, by the least role it needs."""

    READ = Role.VIEWER
    OPERATE = Role.OPERATOR
    ADMINISTER = Role.ADMIN


def is_superuser(user: User) -> bool:
    return bool(user.is_authenticated and user.is_active and getattr(user, "is_superuser", False))


def roles(user: User) -> dict[int, Role]:
    """tenant id → the user's role there (empty for anonymous or inactive users)."""
    if not (user.is_authenticated and user.is_active):
        return {}
    cached: dict[int, Role] | None = getattr(user, _CACHE, None)
    if cached is None:
        cached = {
            tenant_id: Role.of(role)
            for tenant_id, role in Membership.objects.filter(user_id=user.pk).values_list("tenant_id", "role")
        }
        setattr(user, _CACHE, cached)
    return cached


def tenant_ids(user: User, do: Do = Do.READ) -> list[int] | None:
    """The tenants where `user` may `do`; None means every tenant (a superuser)."""
    if is_superuser(user):
        return None
    return sorted(t for t, role in roles(user).items() if role >= do.value)


def may(user: User, do: Do, tenant_id: int | None) -> bool:
    """May `user` `do` on an object of tenant `tenant_id` (None: of no tenant)?"""
    if is_superuser(user):
        return True
    if tenant_id is None:
        return False
    role = roles(user).get(tenant_id)
    return role is not None and role >= do.value


def may_somewhere(user: User, do: Do) -> bool:
    """May `user` `do` in at least one tenant (whether to offer an operation at all)?"""
    return is_superuser(user) or any(role >= do.value for role in roles(user).values())


def scope(queryset: QuerySet[M], user: User, tenant_field: str, do: Do = Do.READ) -> QuerySet[M]:
    """`queryset` cut down to the objects whose `tenant_field` is a tenant where `user`
    may `do`. Objects of no tenant (a null `tenant_field`) stay only for a superuser."""
    ids = tenant_ids(user, do)
    if ids is None:
        return queryset
    return queryset.filter(**{f"{tenant_field}__in": ids})


def tenant_of(obj: Any, tenant_field: str) -> int | None:
    """The tenant id of `obj` by its `tenant_field` path (`tenant_id`, `phase_run__tenant_id`)."""
    value: Any = obj
    for part in tenant_field.split("__"):
        value = getattr(value, part, None)
        if value is None:
            return None
    return int(value)
