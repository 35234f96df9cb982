"""The dashboard's time windows and their buckets (pure: no Django).

A window is a span of time ending with the bucket that holds "now", cut into buckets
of one step each: a chart has one bar or point per bucket, zeros included, so
quiet periods show as quiet rather than as gaps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    """A time range of the dashboard: `key` in the URL (`?range=24h`), `label` for people."""

    key: str
    label: str  # "the last 24 hours": what an empty panel says is missing
    span: timedelta
    step: timedelta

    @property
    def buckets_count(self) -> int:
        return int(self.span / self.step)

    def end(self, now: datetime) -> datetime:
        """The end of the bucket holding `now` (buckets are aligned on the epoch, in UTC)."""
        elapsed = now.astimezone(UTC) - _EPOCH
        return _EPOCH + (elapsed // self.step + 1) * self.step

    def start(self, now: datetime) -> datetime:
        """The start of the first bucket: what the window's queries read from."""
        return self.end(now) - self.span

    def buckets(self, now: datetime) -> list[datetime]:
        """The start of every bucket, oldest first."""
        first = self.start(now)
        return [first + i * self.step for i in range(self.buckets_count)]

    def series(self, now: datetime, values: Mapping[datetime, float]) -> list[float]:
        """One value per bucket, from `values` keyed by bucket start (missing: 0)."""
        return [float(values.get(at, 0)) for at in self.buckets(now)]


WINDOWS: dict[str, Window] = {
    w.key: w
    for w in (
        Window("1h", "the last hour", timedelta(hours=1), timedelta(minutes=1)),
        Window("6h", "the last 6 hours", timedelta(hours=6), timedelta(minutes=5)),
        Window("24h", "the last 24 hours", timedelta(hours=24), timedelta(minutes=30)),
        Window("7d", "the last 7 days", timedelta(days=7), timedelta(hours=3)),
    )
}
DEFAULT_WINDOW = WINDOWS["24h"]


class UnknownWindow(ValueError):
    def __init__(self, raw: str) -> None:
        super().__init__(f"range must be one of {', '.join(WINDOWS)}; got {raw!r}")


def parse_window(raw: str | None) -> Window:
    """The window a `?range=` names (the default when absent or empty)."""
    if not raw:
        return DEFAULT_WINDOW
    try:
        return WINDOWS[raw]
    except KeyError:
        raise UnknownWindow(raw[:40]) from None


def ratio_series(part: Iterable[float], whole: Iterable[float]) -> list[float | None]:
    """part / whole per bucket, in percent (None where nothing happened: no point drawn)."""
    return [round(100.0 * p / w, 2) if w else None for p, w in zip(part, whole, strict=True)]
