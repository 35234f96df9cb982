"""Rates in DRF's syntax (`600/min`), parsed once for settings and throttles. Pure Python."""

from __future__ import annotations

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """`600/min` → (600, 60): `<n>/<s|sec|m|min|h|hour|d|day>` with n ≥ 1."""
    number, _, period = str(rate).strip().partition("/")
    period = period.strip()
    if not number.strip().isdigit() or int(number) < 1 or not period or period[0] not in PERIODS:
        raise ValueError(f"{rate!r} is not a rate like 600/min (a positive number / sec, min, hour or day)")
    return int(number), PERIODS[period[0]]
