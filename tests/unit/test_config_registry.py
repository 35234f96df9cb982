"""The settings' declarations: every bound, every type, every invalid combination, every
alias, and the generated docs listing every declared setting and nothing else."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from orchestrator.config.docs import render
from orchestrator.config.registry import (
    ALIASES,
    RUNTIME,
    SETTINGS,
    Alias,
    ConfigInvalid,
    Kind,
    apply_aliases,
    validate,
)

pytestmark = [pytest.mark.unit]

DEFAULTS = {key: s.default for key, s in RUNTIME.items()}
# Numbers have bounds; the lists of masking (mask_fields, mask_patterns) are checked by
# their own rules (tests/unit/test_masking.py).
NUMERIC = sorted(key for key, s in RUNTIME.items() if s.type in ("int", "float"))
DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def refused(changes: dict[str, object]) -> ConfigInvalid:
    with pytest.raises(ConfigInvalid) as caught:
        validate(changes, DEFAULTS)
    return caught.value


def test_every_runtime_setting_has_a_key_bounds_and_a_default_within_them() -> None:
    assert len(RUNTIME) >= 15
    for key, setting in RUNTIME.items():
        assert key and setting.kind == Kind.RUNTIME and setting.description
        if key in NUMERIC:
            assert setting.min is not None and setting.max is not None, key
        assert validate({key: setting.default}, DEFAULTS)[key] == setting.default


@pytest.mark.parametrize("key", NUMERIC)
def test_every_bound_is_enforced_and_names_the_key_and_rule(key: str) -> None:
    setting = RUNTIME[key]
    assert setting.min is not None and setting.max is not None
    step = 1 if setting.type == "int" else 0.001
    below, above = setting.min - step, setting.max + step
    if setting.type == "int":
        below, above = int(below), int(above)
    error = refused({key: below})
    assert (error.key, error.rule) == (key, "min")
    error = refused({key: above})
    assert (error.key, error.rule) == (key, "max")
    for edge in (setting.min, setting.max):
        value = int(edge) if setting.type == "int" else edge
        assert broken_rule({key: value}) in (None, *COMBINATIONS)  # an edge may break a combination


COMBINATIONS = ("retry_base_seconds <= retry_cap_seconds", "inline_max_items <= max_items")


def broken_rule(changes: dict[str, object]) -> str | None:
    try:
        validate(changes, DEFAULTS)
    except ConfigInvalid as exc:
        return exc.rule
    return None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("chunk_size", "lots"),
        ("chunk_size", 2.5),
        ("chunk_size", True),
        ("lease_seconds", "nan"),
        ("retry_jitter", None),
        ("max_items", [1]),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(key: str, value: object) -> None:
    error = refused({key: value})
    assert (error.key, error.rule) == (key, "type")


def test_numbers_given_as_text_are_read_as_their_type() -> None:
    values = validate({"chunk_size": "250", "lease_seconds": "45.5"}, DEFAULTS)
    assert values["chunk_size"] == 250 and values["lease_seconds"] == 45.5


def test_an_unknown_key_is_refused() -> None:
    error = refused({"chunk_sise": 5})
    assert (error.key, error.rule) == ("chunk_sise", "known_key")


def test_a_retry_base_above_its_cap_is_refused() -> None:
    error = refused({"retry_base_seconds": 90, "retry_cap_seconds": 60})
    assert (error.key, error.rule) == ("retry_base_seconds", "retry_base_seconds <= retry_cap_seconds")
    # Each alone within bounds; together with a raised cap, accepted.
    assert (
        validate({"retry_base_seconds": 90, "retry_cap_seconds": 120}, DEFAULTS)["retry_base_seconds"] == 90
    )


def test_an_inline_threshold_above_the_maximum_items_is_refused() -> None:
    error = refused({"max_items": 5})  # the inline threshold is 10
    assert (error.key, error.rule) == ("inline_max_items", "inline_max_items <= max_items")


def test_a_lease_shorter_than_three_heartbeats_of_a_second_is_refused() -> None:
    error = refused({"lease_seconds": 2.9})
    assert (error.key, error.rule) == ("lease_seconds", "min")


def test_a_removed_setting_warns_and_sets_nothing() -> None:
    environ = {"BOS_STALE_AFTER_SECONDS": "60"}
    with pytest.warns(DeprecationWarning, match="BOS_LEASE_SECONDS"):
        apply_aliases(environ)
    assert environ == {"BOS_STALE_AFTER_SECONDS": "60"}


def test_a_renamed_setting_is_read_from_its_old_name_with_a_warning() -> None:
    renamed = (
        Alias(
            "BOS_OLD_CHUNK",
            since="9.9",
            message="BOS_OLD_CHUNK is now BOS_CHUNK_SIZE",
            replaced_by="BOS_CHUNK_SIZE",
        ),
    )
    environ = {"BOS_OLD_CHUNK": "7"}
    with pytest.warns(DeprecationWarning, match="BOS_CHUNK_SIZE"):
        apply_aliases(environ, renamed)
    assert environ["BOS_CHUNK_SIZE"] == "7"
    environ = {"BOS_OLD_CHUNK": "7", "BOS_CHUNK_SIZE": "9"}  # the new name wins
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        apply_aliases(environ, renamed)
    assert environ["BOS_CHUNK_SIZE"] == "9"


def test_every_alias_names_a_declared_setting_or_none_and_is_not_declared_itself() -> None:
    declared = {s.env for s in SETTINGS}
    for alias in ALIASES:
        assert alias.old not in declared
        assert not alias.replaced_by or alias.replaced_by in declared


def test_the_docs_list_every_declared_setting_and_nothing_else() -> None:
    text = DOCS.read_text()
    assert text == render(), "docs/configuration.md is stale: run `make docs`"
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| (?:start-up|runtime)", text, flags=re.M)
    assert sorted(rows) == sorted(s.env for s in SETTINGS)
    assert len(rows) == len(set(rows))
    for alias in ALIASES:
        assert f"`{alias.old}`" in text


def test_every_variable_the_settings_modules_read_is_declared() -> None:
    settings_dir = Path(__file__).resolve().parents[2] / "bos_project" / "settings"
    read: set[str] = set()
    for module in settings_dir.glob("*.py"):
        source = module.read_text()
        read |= set(
            re.findall(
                r"""(?:env\.\w+|positive_int|port|choice|json_value|required_url)\(\s*"([A-Z][A-Z0-9_]+)\"""",
                source,
            )
        )
    read |= {"BOS_HOME", "BOS_SECRET_KEY", "BOS_ENCRYPTION_KEYS", "KAFKA_BOOTSTRAP_SERVERS"}
    assert read - {s.env for s in SETTINGS} == set()
