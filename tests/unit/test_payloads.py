"""orchestrator.payloads: values stored as Fernet tokens under the newest key, read under any,
legacy plain JSON read as it is; and how key rotation tells stored values apart."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.test import override_settings

from orchestrator import payloads
from orchestrator.key_rotation import kind

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.mark.parametrize(
    "value",
    [
        {"text": "an essay", "n": 3, "nested": {"list": [1, 2.5, None, True]}},
        ["a", "b"],
        "gAAAAA looks like a token but is a payload",
        0,
        False,
        {"unicode": "ünïcødé — 漢字"},
    ],
)
def test_every_json_value_round_trips_through_a_token(value: object) -> None:
    stored = payloads.encrypt(value)
    assert stored is not None and payloads.is_token(stored)
    assert payloads.decrypt(stored) == value


def test_the_token_does_not_hold_the_clear_text() -> None:
    stored = payloads.encrypt({"text": "zqxmarkerwordq"})
    assert stored is not None and "zqxmarkerwordq" not in stored
    assert payloads.encrypt({"text": "zqxmarkerwordq"}) != stored  # a fresh IV every time


def test_none_is_sql_null_not_a_token() -> None:
    assert payloads.encrypt(None) is None
    assert payloads.decrypt(None) is None


def test_plain_json_of_a_legacy_row_reads_as_it_is() -> None:
    assert payloads.decrypt('{"text": "written before encryption"}') == {"text": "written before encryption"}
    assert payloads.decrypt('"gAAAAA in quotes is JSON"') == "gAAAAA in quotes is JSON"
    assert not payloads.is_token('{"a": 1}')


def test_a_value_under_an_older_key_reads_and_rotates_to_the_newest() -> None:
    with override_settings(BOS_ENCRYPTION_KEYS=[OLD]):
        stored = payloads.encrypt({"v": 1})
        assert stored is not None and payloads.under_newest_key(stored)
    with override_settings(BOS_ENCRYPTION_KEYS=[NEW, OLD]):
        assert payloads.decrypt(stored) == {"v": 1}
        assert not payloads.under_newest_key(stored)
        assert kind(stored) == "older"
        rotated = payloads.reencrypt(stored)
        assert rotated is not None and payloads.under_newest_key(rotated)
        assert kind(rotated) == "newest"
    with override_settings(BOS_ENCRYPTION_KEYS=[NEW]):
        assert payloads.decrypt(rotated) == {"v": 1}
        with pytest.raises(payloads.UnreadableData):
            payloads.decrypt(stored)
        assert kind(stored) == "unreadable"


def test_rotation_encrypts_legacy_plain_json() -> None:
    assert kind('{"a": 1}') == "plaintext"
    rotated = payloads.reencrypt('{"a": 1}')
    assert rotated is not None and payloads.under_newest_key(rotated)
    assert payloads.decrypt(rotated) == {"a": 1}
    assert payloads.reencrypt("null") is None


def test_new_values_are_encrypted_with_the_newest_key() -> None:
    with override_settings(BOS_ENCRYPTION_KEYS=[NEW, OLD]):
        stored = payloads.encrypt({"v": 2})
    assert stored is not None
    Fernet(NEW.encode()).decrypt(stored.encode())


def test_the_keys_are_built_once_per_setting() -> None:
    first = payloads._keys()
    assert payloads._keys() is first
    with override_settings(BOS_ENCRYPTION_KEYS=[NEW]):
        assert payloads._keys() is not first
        assert payloads._keys().keys == (NEW,)
