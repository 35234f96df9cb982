"""The dashboard's pure parts: windows and their buckets, number formatting, probes
with a deadline."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from orchestrator.dashboard import formatting
from orchestrator.dashboard.probes import Probes
from orchestrator.dashboard.windows import DEFAULT_WINDOW, WINDOWS, UnknownWindow, parse_window, ratio_series
from orchestrator.kafka.groups import BrokerUnavailable

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 2, 10, 17, 42, tzinfo=UTC)


@pytest.mark.parametrize(
    ("key", "first", "count"),
    [
        ("1h", datetime(2026, 12, 2, 9, 18, tzinfo=UTC), 60),
        ("6h", datetime(2026, 12, 2, 4, 20, tzinfo=UTC), 72),
        ("24h", datetime(2026, 12, 1, 10, 30, tzinfo=UTC), 48),
        ("7d", datetime(2026, 11, 25, 12, 0, tzinfo=UTC), 56),
    ],
)
def test_a_window_ends_with_the_bucket_holding_now(key: str, first: datetime, count: int) -> None:
    window = WINDOWS[key]

    buckets = window.buckets(NOW)

    assert len(buckets) == count == window.buckets_count
    assert buckets[0] == window.start(NOW) == first
    assert buckets[-1] <= NOW < buckets[-1] + window.step == window.end(NOW)
    assert all(b - a == window.step for a, b in zip(buckets, buckets[1:], strict=False))


def test_a_window_aligns_its_buckets_in_utc_whatever_the_zone_of_now() -> None:
    elsewhere = NOW.astimezone(ZoneInfo("Asia/Kolkata"))  # +05:30

    assert WINDOWS["24h"].buckets(elsewhere) == WINDOWS["24h"].buckets(NOW)


def test_a_series_has_a_value_per_bucket_and_zero_where_nothing_happened() -> None:
    window = WINDOWS["1h"]
    last = window.buckets(NOW)[-1]

    series = window.series(NOW, {last: 5, last - timedelta(minutes=2): 3, last + timedelta(hours=1): 99})

    assert len(series) == 60 and series[-1] == 5 and series[-3] == 3 and sum(series) == 8


def test_a_ratio_series_leaves_out_buckets_with_nothing_to_judge() -> None:
    assert ratio_series([1, 0, 0], [4, 0, 2]) == [25.0, None, 0.0]


def test_the_range_parameter_names_a_window_or_is_refused() -> None:
    assert parse_window(None) is parse_window("") is DEFAULT_WINDOW
    assert parse_window("7d") is WINDOWS["7d"]
    with pytest.raises(UnknownWindow, match=r"range must be one of 1h, 6h, 24h, 7d; got '1y'"):
        parse_window("1y")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "–"),
        (0.042, "42 ms"),
        (4.25, "4.2 s"),
        (60, "1 min"),
        (185, "3 min 5 s"),
        (7300, "2 h 1 min"),
        (7200, "2 h"),
        (90000, "1 d 1 h"),
        (-304, "−5 min 4 s"),
        (float("nan"), "–"),
    ],
)
def test_durations_read_as_people_say_them(seconds: float | None, text: str) -> None:
    assert formatting.duration(seconds) == text


def test_numbers_rates_and_percentages_are_formatted_for_people() -> None:
    assert formatting.number(12345) == "12,345"
    assert formatting.number(0.456, digits=2) == "0.46"
    assert formatting.number(None) == "–"
    assert [formatting.compact(v) for v in (950, 12_300, 4_500_000, 2_000, 1.5)] == [
        "950",
        "12.3k",
        "4.5M",
        "2k",
        "1.5",
    ]
    assert [formatting.rate(v) for v in (0.0016, 0.05, 2.345, 1234.5, 0)] == [
        "0.0016",
        "0.050",
        "2.3",
        "1,234",
        "0",
    ]
    assert formatting.percent(0.125) == "12.5 %" and formatting.percent(None) == "–"


def test_probes_give_each_answer_or_why_there_is_none_by_one_deadline() -> None:
    release = threading.Event()

    def hangs() -> int:
        release.wait(10)
        return 1

    def broker_down() -> int:
        raise BrokerUnavailable("no Kafka broker answered at 127.0.0.1:1 (NoBrokersAvailable)")

    def breaks() -> int:
        raise RuntimeError("boom")

    probes = Probes(
        {"fast": lambda: 7, "hangs": hangs, "down": broker_down, "breaks": breaks}, timeout=0.3
    ).start()
    try:
        found = probes.results()
    finally:
        release.set()

    assert found["fast"].ok and found["fast"].value == 7
    assert found["hangs"].error == "no answer within 0.3 s"
    assert found["down"].error == "no Kafka broker answered at 127.0.0.1:1 (NoBrokersAvailable)"
    assert found["breaks"].error == "RuntimeError: boom"
