"""Numbers, durations and rates as the dashboard shows them (pure: no Django)."""

from __future__ import annotations

import math


def number(value: float | int | None, *, digits: int = 0) -> str:
    """12345 → "12,345"; 0.456 with digits=2 → "0.46"; None → "–"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:,.{digits}f}"


def compact(value: float | int | None) -> str:
    """A count for a tile: 950 → "950", 12_300 → "12.3k", 4_500_000 → "4.5M"."""
    if value is None:
        return "–"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
    return number(value, digits=0 if float(value).is_integer() else 1)


def duration(seconds: float | None) -> str:
    """0.042 → "42 ms", 4.2 → "4.2 s", 185 → "3 min 5 s", 7300 → "2 h 1 min", 90000 → "1 d 1 h"."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    sign = "−" if seconds < 0 else ""
    s = abs(seconds)
    if s < 1:
        return f"{sign}{s * 1000:.0f} ms"
    if s < 60:
        return f"{sign}{s:.1f} s"
    whole = round(s)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days} d {hours} h" if hours else f"{sign}{days} d"
    if hours:
        return f"{sign}{hours} h {minutes} min" if minutes else f"{sign}{hours} h"
    return f"{sign}{minutes} min {secs} s" if secs else f"{sign}{minutes} min"


def rate(value: float | None) -> str:
    """A rate with two significant digits below 10: 0.0016 → "0.0016", 2.345 → "2.3", 1234.4 → "1,234"."""
    if value is None or not math.isfinite(value):
        return "–"
    if value == 0 or abs(value) >= 10:
        return number(value)
    digits = max(1, 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


def percent(value: float | None, *, digits: int = 1) -> str:
    """A ratio 0–1 as "12.5 %"."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * 100:.{digits}f} %"
