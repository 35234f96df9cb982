"""The broker-free parts of consumer-group tooling: lag arithmetic, export files, bars."""

from __future__ import annotations

import json

import pytest

from orchestrator.kafka.groups import EXPORT_FORMAT, GroupError, PartitionLag, bar, read_export

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("committed", "earliest", "end", "lag"),
    [
        (7, 0, 10, 3),
        (None, 0, 10, 10),  # no commit: from the earliest offset
        (None, 4, 10, 6),
        (2, 5, 10, 5),  # committed before the earliest: the consumer resumes there
        (12, 0, 10, 0),  # never negative
        (10, 0, 10, 0),
    ],
)
def test_partition_lag_counts_from_where_the_group_resumes(
    committed: int | None, earliest: int, end: int, lag: int
) -> None:
    assert PartitionLag(partition=0, committed=committed, earliest=earliest, end=end).lag == lag


def test_an_export_file_reads_back_with_integer_partitions() -> None:
    doc = read_export(
        json.dumps(
            {
                "format": EXPORT_FORMAT,
                "version": 1,
                "group": "g",
                "topic": "t",
                "partitions": {"0": 5, "3": 0},
                "exported_at": "2026-11-29T10:00:00Z",
                "broker": "kafka:9092",
            }
        )
    )
    assert doc["partitions"] == {0: 5, 3: 0}
    assert doc["group"] == "g"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json", "invalid JSON"),
        ("[]", "top level"),
        ('{"format": "other", "group": "g", "topic": "t", "partitions": {}}', "format"),
        ('{"version": 2, "group": "g", "topic": "t", "partitions": {}}', "version 2"),
        ('{"topic": "t", "partitions": {}}', "'group'"),
        ('{"group": "g", "topic": "t"}', "'partitions'"),
        ('{"group": "g", "topic": "t", "partitions": {"x": 1}}', "not a number"),
        ('{"group": "g", "topic": "t", "partitions": {"0": "5"}}', "non-negative integer"),
        ('{"group": "g", "topic": "t", "partitions": {"0": true}}', "non-negative integer"),
    ],
)
def test_a_bad_export_file_is_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(GroupError, match="not a BOS group offsets file") as refused:
        read_export(text)
    assert why in refused.value.message
    assert refused.value.code == "bad_offsets_file"


def test_bars_scale_to_the_largest_lag() -> None:
    assert bar(0, 10) == ""
    assert bar(10, 10, width=4) == "████"
    assert bar(5, 10, width=4) == "██"
    assert bar(1, 1000, width=4) == "▏"  # visible however small
