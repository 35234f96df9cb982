"""Beat's schedules as configuration, and exactly one beat active: two real `celery beat`
processes, one sends, the other stands by and takes over when the first is killed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django_celery_beat.models import PeriodicTask

from bos_project.settings.environment import BASE_DIR
from orchestrator.config import schedules, store
from orchestrator.config.store import InvalidConfig
from tests.conftest import database_url
from tests.support.processes import stop
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db")]

SENT = re.compile(r"Sending due task (\S+)")


def every(name: str) -> int:
    return int(PeriodicTask.objects.get(name=name).interval.every)


def test_schedules_are_written_to_the_database_and_follow_versions_and_rollbacks() -> None:
    store.schedule_set(name="snapshots", value={"every_seconds": 45}, actor="test", reason="less often")
    assert every("snapshots") == 45
    assert every("reconcile") == schedules.declared()["reconcile"].every_seconds
    store.schedule_set(
        name="snapshots", value={"every_seconds": 45, "enabled": False}, actor="t", reason="off"
    )
    assert PeriodicTask.objects.get(name="snapshots").enabled is False

    store.config_rollback(version=0, actor="test", reason="defaults")
    task = PeriodicTask.objects.get(name="snapshots")
    assert task.enabled and task.interval.every == schedules.declared()["snapshots"].every_seconds
    assert set(
        PeriodicTask.objects.filter(description=schedules.OWNER).values_list("name", flat=True)
    ) == set(settings.CELERY_BEAT_SCHEDULE)


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("reconcile", {"every_seconds": 0}, "bounds"),
        ("reconcile", {"every_seconds": 2.5}, "type"),
        ("reconcile", {"enabled": "no"}, "type"),
        ("reconcile", {"when": "now"}, "type"),
        ("nightly-report", {"every_seconds": 60}, "known_schedule"),
    ],
)
def test_a_bad_schedule_is_refused_naming_it_and_the_rule(
    name: str, value: dict[str, object], rule: str
) -> None:
    with pytest.raises(InvalidConfig) as refused:
        store.schedule_set(name=name, value=value, actor="test", reason="x")
    assert refused.value.details == {"key": f"schedule.{name}", "rule": rule}


class Beat:
    def __init__(self, name: str, log_dir: Path) -> None:
        self.log = log_dir / f"beat-{name}.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url(),
            "BOS_LOG_FORMAT": "console",
            "BOS_LOG_LEVEL": "DEBUG",  # beat says "Sending due task" at DEBUG (HousekeepingAtDebug)
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bos_project", "beat", "-l", "debug", "--pidfile="],
            cwd=BASE_DIR,
            env=env,
            stdout=open(self.log, "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def sent(self) -> list[str]:
        return SENT.findall(self.text())

    def active(self) -> bool:
        return "beat: active" in self.text()

    def standby(self) -> bool:
        return "beat: standby" in self.text() or (not self.active() and "beat: " in self.text())


@pytest.fixture
def two_beats(tmp_path: Path) -> Iterator[tuple[Beat, Beat]]:
    # Often enough to see within seconds which beat sends (a runtime change, versioned).
    store.schedule_set(name="reconcile", value={"every_seconds": 1}, actor="test", reason="see it often")
    beats = (Beat("a", tmp_path), Beat("b", tmp_path))
    try:
        yield beats
    finally:
        for beat in beats:
            stop(beat.proc, timeout=20)  # type: ignore[arg-type]


def test_two_beats_one_sends_and_the_standby_takes_over_when_it_is_killed(
    two_beats: tuple[Beat, Beat],
) -> None:
    a, b = two_beats
    wait_for(lambda: a.active() or b.active(), timeout=60, what="one beat to become active")
    leader, standby = (a, b) if a.active() else (b, a)
    wait_for(lambda: len(leader.sent()) >= 3, timeout=30, what="the active beat to send reconcile")
    assert standby.sent() == [], "the standby sent tasks while the other beat was active"
    assert not standby.active()

    leader.proc.send_signal(signal.SIGKILL)  # no clean release: the lease must expire
    killed_at = time.monotonic()
    leader.proc.wait(timeout=10)
    wait_for(standby.active, timeout=settings.BOS_BEAT_LOCK_SECONDS + 30, what="the standby to take over")
    took = time.monotonic() - killed_at
    # Every 1 s: the new active beat reads the schedules afresh from the database.
    wait_for(lambda: standby.sent().count("reconcile") >= 2, timeout=30, what="the new active beat to send")
    assert took <= settings.BOS_BEAT_LOCK_SECONDS + 10, f"took {took:.0f} s"
