"""Feature flags as pure code: their checked values, sticky buckets and targeting, and
`flag("name")` in `when:` conditions."""

from __future__ import annotations

import random
import uuid

import pytest

from orchestrator.conditions import ConditionError, check_condition, evaluate
from orchestrator.config.flags import Flag, bucket, flag_on, parse_flag
from orchestrator.config.registry import ConfigInvalid

pytestmark = pytest.mark.unit

IDS = [str(uuid.UUID(int=i * 7919 + 13)) for i in range(5000)]


def on(flag: Flag, batch_id: str = IDS[0], tenant: str = "acme", pipeline: str = "p") -> bool:
    return flag_on(flag, batch_id=batch_id, tenant=tenant, pipeline=pipeline)


def test_a_flag_value_is_parsed_with_its_defaults() -> None:
    flag = parse_flag("new-scoring", {"enabled": True, "tenants": ["b", "a", "a"]})
    assert flag == Flag("new-scoring", enabled=True, percent=100, tenants=("a", "b"))
    assert flag.as_value() == {
        "enabled": True,
        "percent": 100,
        "tenants": ["a", "b"],
        "pipelines": [],
        "description": "",
    }


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ({"enabled": "yes"}, "type"),
        ({"enabled": True, "percent": 101}, "bounds"),
        ({"enabled": True, "percent": -1}, "bounds"),
        ({"enabled": True, "percent": 12.5}, "type"),
        ({"enabled": True, "tenants": "acme"}, "type"),
        ({"enabled": True, "colour": "red"}, "known_field"),
        ([True], "type"),
    ],
)
def test_a_bad_flag_value_is_refused_naming_the_flag_and_the_rule(value: object, rule: str) -> None:
    with pytest.raises(ConfigInvalid) as refused:
        parse_flag("exp", value)
    assert refused.value.key == "flag.exp"
    assert refused.value.rule == rule


def test_a_bad_flag_name_is_refused() -> None:
    with pytest.raises(ConfigInvalid) as refused:
        parse_flag("Has Spaces", {"enabled": True})
    assert refused.value.rule == "flag_name"


def test_the_bucket_of_a_batch_is_the_same_every_time() -> None:
    assert [bucket("exp", i) for i in IDS[:50]] == [bucket("exp", i) for i in IDS[:50]]
    assert all(0 <= bucket("exp", i) < 100 for i in IDS)


def test_a_percentage_reaches_about_that_share_of_batches() -> None:
    flag = Flag("exp", enabled=True, percent=10)
    share = sum(on(flag, batch_id=i) for i in IDS) / len(IDS)
    assert 0.08 < share < 0.12


def test_raising_the_percentage_only_adds_batches() -> None:
    low = {i for i in IDS if on(Flag("exp", enabled=True, percent=10), batch_id=i)}
    high = {i for i in IDS if on(Flag("exp", enabled=True, percent=30), batch_id=i)}
    assert low < high


def test_flags_of_different_names_pick_different_batches() -> None:
    a = {i for i in IDS if on(Flag("a", enabled=True, percent=50), batch_id=i)}
    b = {i for i in IDS if on(Flag("b", enabled=True, percent=50), batch_id=i)}
    assert a != b


def test_targeting_by_tenant_and_pipeline() -> None:
    flag = Flag("exp", enabled=True, tenants=("acme",), pipelines=("essays",))
    assert on(flag, tenant="acme", pipeline="essays")
    assert not on(flag, tenant="globex", pipeline="essays")
    assert not on(flag, tenant="acme", pipeline="other")


def test_a_disabled_or_unknown_flag_is_off() -> None:
    assert not on(Flag("exp", enabled=False))
    assert not flag_on(None, batch_id=IDS[0], tenant="acme", pipeline="p")


def test_conditions_may_call_flag_with_one_name() -> None:
    check_condition('flag("new-scoring") and batch.priority > 3')
    for bad in ("flag(x)", 'flag("a", "b")', "flag()", 'flag(name="a")'):
        with pytest.raises(ConditionError):
            check_condition(bad)


def test_a_condition_asks_the_batch_s_flag_function() -> None:
    asked: list[str] = []

    def flag(name: str) -> bool:
        asked.append(name)
        return name == "on"

    names = {"metadata": {}, "batch": {"priority": 5}, "items": {}, "phases": {}, "flag": flag}
    assert evaluate('flag("on") and batch.priority == 5', names)
    assert not evaluate('flag("off")', names)
    assert asked == ["on", "off"]


def test_a_flag_at_30_percent_over_1000_batches_lands_within_5_points_and_is_sticky() -> None:
    rng = random.Random(20261202)
    batches = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(1000)]
    flag = Flag("x", enabled=True, percent=30)
    first = [on(flag, batch_id=b) for b in batches]
    assert 25 <= 100 * sum(first) / len(batches) <= 35
    assert [on(flag, batch_id=b) for b in batches] == first  # the same answer, asked again
