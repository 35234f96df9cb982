"""The one access point to the data clients send and handlers produce, at rest.

Item payloads, item results, batch metadata, batch reports and per-batch phase outputs
are stored as Fernet tokens (docs/encryption.md): JSON, encrypted with the newest of
`settings.BOS_ENCRYPTION_KEYS` and read with any of them (`MultiFernet`). Everything
that stores or reads them goes through here: the ORM through `EncryptedJSONField`
(orchestrator/encrypted_fields.py), the raw-SQL hot paths (orchestrator/services/bulk.py)
and key rotation (`manage.py bos_rotate_keys`) by calling these functions.

A stored value is either a token or, for a row written before encryption existed
(migration 0013_encryption turned the jsonb columns into text), the plain JSON text: a JSON text
never starts like a token, so each is told apart; rotation encrypts the plain ones.
Python `None` is SQL NULL (no value, or one purged by retention), never a token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

# Every Fernet token starts with the version byte 0x80 and a 64-bit timestamp whose top
# bits are zero until 2106: url-safe base64 of that is "gAAAAA". A JSON text never
# starts with "g" (it starts with {, [, ", a digit, -, t, f, n or white space).
FERNET_START = "gAAAAA"


class UnreadableData(Exception):
    """A stored token that none of BOS_ENCRYPTION_KEYS opens (a key was dropped too soon)."""


class _Keys:
    """The MultiFernet of the configured keys, built once per value of the setting."""

    def __init__(self, source: Sequence[str]) -> None:
        self.source = source
        self.keys = tuple(source)
        self.fernets = [Fernet(key) for key in self.keys]
        self.all = MultiFernet(self.fernets)
        self.newest = self.fernets[0]


_current: _Keys | None = None


def _keys() -> _Keys:
    """The keys of `settings.BOS_ENCRYPTION_KEYS`, rebuilt when the setting changes
    (another object, as under `override_settings`, or other keys)."""
    global _current
    source = settings.BOS_ENCRYPTION_KEYS
    keys = _current
    if keys is not None and keys.source is source:
        return keys
    if keys is None or keys.keys != tuple(source):
        if not source:
            raise UnreadableData("BOS_ENCRYPTION_KEYS holds no key")
        keys = _current = _Keys(source)
    keys.source = source
    return keys


def is_token(stored: str) -> bool:
    """Whether a stored value is a Fernet token (else: plain JSON text of a legacy row)."""
    return stored.startswith(FERNET_START)


def encrypt(value: Any) -> str | None:
    """The token stored for `value` (any JSON value); None for None (SQL NULL)."""
    if value is None:
        return None
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return _keys().all.encrypt(text.encode()).decode()


def decrypt(stored: str | None) -> Any:
    """The value stored as `stored`: a token (under any configured key) or legacy JSON text."""
    if stored is None:
        return None
    if not is_token(stored):
        return json.loads(stored)
    try:
        text = _keys().all.decrypt(stored.encode())
    except InvalidToken as exc:
        raise UnreadableData(
            "stored data is encrypted with a key that is not in BOS_ENCRYPTION_KEYS"
        ) from exc
    return json.loads(text)


def under_newest_key(stored: str) -> bool:
    """Whether `stored` is a token that the newest key alone opens (Fernet tokens carry no
    key id, so trying it is the only way to know)."""
    if not is_token(stored):
        return False
    try:
        _keys().newest.decrypt(stored.encode())
    except InvalidToken:
        return False
    return True


def reencrypt(stored: str) -> str | None:
    """`stored` under the newest key: a token re-encrypted (`MultiFernet.rotate`), a legacy
    plain JSON text encrypted (a legacy JSON `null` becomes SQL NULL, as None is stored now)."""
    if not is_token(stored):
        return encrypt(json.loads(stored))
    try:
        return _keys().all.rotate(stored.encode()).decode()
    except InvalidToken as exc:
        raise UnreadableData(
            "stored data is encrypted with a key that is not in BOS_ENCRYPTION_KEYS"
        ) from exc
