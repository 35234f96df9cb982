"""Beat's schedules as configuration: declared in `CELERY_BEAT_SCHEDULE` (the defaults,
from `BOS_*_INTERVAL_SECONDS`), overridden at runtime in the configuration versions under
`schedule.<name>` — so a change is versioned, in the history, rolled back and applied
like any setting — and written to django-celery-beat's tables, which the one active beat
reads (`orchestrator.beat.SingleBeatScheduler`).

A value: `{"every_seconds": 20, "enabled": true}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from orchestrator.config.registry import ConfigInvalid

PREFIX = "schedule."
FIELDS = ("every_seconds", "enabled")
MIN_SECONDS, MAX_SECONDS = 1, 86_400
# Marks the periodic tasks BOS owns, so one no longer declared is removed.
OWNER = "bos: declared in CELERY_BEAT_SCHEDULE"


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    every_seconds: int
    enabled: bool
    expires: float | None

    def as_value(self) -> dict[str, Any]:
        return {"every_seconds": self.every_seconds, "enabled": self.enabled}


def is_schedule_key(key: str) -> bool:
    return key.startswith(PREFIX)


def key_of(name: str) -> str:
    return PREFIX + name


def declared() -> dict[str, Schedule]:
    """Every declared schedule at its default (the environment's interval, enabled)."""
    schedules = {}
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        seconds = float(entry["schedule"])  # type: ignore[arg-type]
        options = entry.get("options") or {}
        schedules[name] = Schedule(
            name=name,
            task=str(entry["task"]),
            every_seconds=max(MIN_SECONDS, round(seconds)),
            enabled=True,
            expires=options.get("expires") if isinstance(options, dict) else None,
        )
    return schedules


def parse_schedule(name: str, raw: Any) -> Schedule:
    """`raw` as a change of the declared schedule `name`; ConfigInvalid otherwise."""
    key = key_of(name)
    base = declared().get(name)
    if base is None:
        raise ConfigInvalid(
            key, "known_schedule", f"is not a schedule; known: {', '.join(sorted(declared()))}"
        )
    if not isinstance(raw, Mapping) or set(raw) - set(FIELDS):
        raise ConfigInvalid(key, "type", f"a schedule is an object with {', '.join(FIELDS)}; got {raw!r}")
    every = raw.get("every_seconds", base.every_seconds)
    if isinstance(every, bool) or not isinstance(every, int):
        raise ConfigInvalid(key, "type", f"every_seconds must be a whole number; got {every!r}")
    if not MIN_SECONDS <= every <= MAX_SECONDS:
        raise ConfigInvalid(
            key, "bounds", f"every_seconds must be within {MIN_SECONDS}–{MAX_SECONDS}; got {every}"
        )
    enabled = raw.get("enabled", base.enabled)
    if not isinstance(enabled, bool):
        raise ConfigInvalid(key, "type", f"enabled must be true or false; got {enabled!r}")
    return Schedule(name, base.task, every, enabled, base.expires)


def effective(values: Mapping[str, Any]) -> dict[str, Schedule]:
    """Each declared schedule as the configuration `values` (the stored overrides) set it;
    an override of a schedule no longer declared is ignored."""
    schedules = declared()
    for name in list(schedules):
        raw = values.get(key_of(name))
        if raw is not None:
            schedules[name] = parse_schedule(name, raw)
    return schedules


def apply(values: Mapping[str, Any]) -> None:
    """Write the effective schedules to django-celery-beat's tables (idempotent); beat
    notices the change at its next tick (PeriodicTasks.last_update)."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    wanted = effective(values)
    with transaction.atomic():
        for schedule in wanted.values():
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=schedule.every_seconds, period=IntervalSchedule.SECONDS
            )
            fields = {
                "task": schedule.task,
                "interval": interval,
                "enabled": schedule.enabled,
                "expire_seconds": int(schedule.expires) if schedule.expires else None,
                "description": OWNER,
            }
            row = PeriodicTask.objects.filter(name=schedule.name).first()
            if row is None:
                PeriodicTask.objects.create(name=schedule.name, **fields)
            elif any(getattr(row, f) != v for f, v in fields.items()):
                for f, v in fields.items():
                    setattr(row, f, v)
                row.save()
        PeriodicTask.objects.filter(description=OWNER).exclude(name__in=list(wanted)).delete()
