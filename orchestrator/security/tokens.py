"""API tokens: stored hashed (django-rest-knox), expiring, revocable, watched for misuse.

A token is shown once, when issued (`create_api_user`, `bos_bootstrap`): the database keeps
only its SHA-512 digest and its first 15 characters (knox's lookup key). It expires
`BOS_API_TOKEN_TTL_DAYS` after its creation; an expired token is refused and deleted.
`revoke()` (`manage.py revoke_api_tokens <username>`) deletes a user's tokens, audited as
`token.revoke`.

Misuse: the addresses a token is used from are kept in a Redis set per token (kept as long
as the token lives); the first address is its home, a later new one is suspicious: an audit
record `token.new_address`, `bos_security_events_total{kind="token_new_address"}`, and an `Alert` of kind
`security.token_new_address` (at most one an hour per token, so a token spread over many
addresses cannot flood the alerts). Each process remembers the (token, address) pairs it has
seen, so a request from a known address costs no Redis round trip at all.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from knox.models import AuthToken

from orchestrator import audit
from orchestrator.audit import who as actors
from orchestrator.models import Alert
from orchestrator.observability import metrics
from orchestrator.security import shared_redis

logger = logging.getLogger(__name__)

NEW_ADDRESS_ALERT = "security.token_new_address"
ALERT_EVERY_SECONDS = 3600
# Per process: (token id, address) pairs known to be in their token's set already.
_SEEN_MAX = 10_000
_seen: set[tuple[str, str]] = set()
_seen_lock = threading.Lock()


@dataclass(frozen=True)
class IssuedToken:
    """A new token: `key` is the only copy of its secret, shown once."""

    key: str
    expiry: datetime | None
    token_id: str


def ttl() -> timedelta:
    return timedelta(days=settings.BOS_API_TOKEN_TTL_DAYS)


def token_id(token: AuthToken) -> str:
    """A short public name of a token, safe for logs and audit records (a digest prefix)."""
    return str(token.digest)[:16]


def issue(user: Any) -> IssuedToken:
    """A new token for `user`, valid for BOS_API_TOKEN_TTL_DAYS; audited as `token.create`."""
    instance, key = AuthToken.objects.create(user=user, expiry=ttl())
    audit.record(
        "token.create",
        object_type="token",
        object_id=token_id(instance),
        detail={
            "username": user.get_username(),
            "expires": instance.expiry.isoformat() if instance.expiry else None,
        },
    )
    return IssuedToken(key=key, expiry=instance.expiry, token_id=token_id(instance))


def revoke(user: Any) -> int:
    """Delete every token of `user`; audited as `token.revoke` with how many."""
    ids = [token_id(t) for t in AuthToken.objects.filter(user=user)]
    AuthToken.objects.filter(user=user).delete()
    audit.record(
        "token.revoke",
        object_type="user",
        object_id=user.get_username(),
        detail={"username": user.get_username(), "revoked": len(ids), "tokens": ids},
    )
    return len(ids)


def _addresses_key(tid: str) -> str:
    return cache.make_key(f"token-addresses:{tid}")


def note_address(token: AuthToken, address: str | None) -> None:
    """Remember that `token` was used from `address`; a new address after the first is flagged."""
    if not address:
        return
    tid = token_id(token)
    pair = (tid, address)
    if pair in _seen:
        return
    key = _addresses_key(tid)
    pipe = shared_redis.client().pipeline(transaction=False)
    pipe.sadd(key, address)
    pipe.scard(key)
    pipe.expire(key, int(ttl().total_seconds()) + 86400)
    added, count, _ = pipe.execute()
    with _seen_lock:
        if len(_seen) >= _SEEN_MAX:
            _seen.clear()
        _seen.add(pair)
    if added and int(count) > 1:
        _new_address(token, tid, address, int(count))


def _new_address(token: AuthToken, tid: str, address: str, count: int) -> None:
    username = token.user.get_username()
    metrics.security_event("token_new_address")
    detail = {"username": username, "token": tid, "address": address, "addresses_seen": count}
    audit.record(
        "token.new_address",
        outcome=audit.Outcome.OK,
        object_type="token",
        object_id=tid,
        detail=detail,
        who=audit.Who(
            actor=actors.user(username), ip=address, correlation_id=audit.current_who().correlation_id
        ),
    )
    if cache.add(f"token-alert:{tid}", 1, timeout=ALERT_EVERY_SECONDS):
        Alert.objects.create(
            tenant=None,
            kind=NEW_ADDRESS_ALERT,
            message=f"API token {tid} of {username!r} used from a new address {address} "
            f"({count} addresses so far)",
            details=detail,
        )
