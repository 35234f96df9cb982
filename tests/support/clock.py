"""Moving the clock for code that takes `now`: the same code path, at the defaults."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone


def after_lease(periods: float = 1.0, *, extra: float = 1.0) -> datetime:
    """A moment `periods` lease periods (BOS_LEASE_SECONDS) from now, and a second more."""
    return timezone.now() + timedelta(seconds=settings.BOS_LEASE_SECONDS * periods + extra)


def days_later(days: float, *, extra_seconds: float = 0.0) -> datetime:
    """A moment `days` days (and `extra_seconds`) from now: retention's cut-offs at their defaults."""
    return timezone.now() + timedelta(days=days, seconds=extra_seconds)
