"""`SingleBeatScheduler`: django-celery-beat's database scheduler, with exactly one beat
active at a time.

Every beat process may run (on several machines, for availability); each tick, a beat
takes or renews a lease in Redis (`SET bos:beat:leader:<queue> <owner> NX PX`, renewed only by its
owner) and sends due tasks only while it holds it. A standby checks every few seconds;
when the active beat dies (even with `kill -9`) its lease expires after
`BOS_BEAT_LOCK_SECONDS` and a standby takes over. A leader that cannot reach Redis stops
sending before its lease could have expired, so two beats never send at once.

At start-up the scheduler writes BOS's declared schedules, with their runtime overrides
(`orchestrator.config.schedules`), to the database: the database, not a local file, is
what every beat reads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

import redis
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lock_key() -> str:
    """One leader per deployment: deployments sharing a Redis differ by queue prefix."""
    return f"bos:beat:leader:{settings.QUEUE_ORCHESTRATION}"


class LeaderLease:
    """The lease that makes one beat the active one."""

    def __init__(self, client: redis.Redis, seconds: float) -> None:
        self.client = client
        self.seconds = seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.valid_until = 0.0  # monotonic: how long this process may trust its lease

    def hold(self) -> bool:
        """Take or renew the lease; True while this process may act as the active beat."""
        started = time.monotonic()
        try:
            held = bool(self.client.eval(_RENEW, 1, lock_key(), self.owner, int(self.seconds * 1000)))
        except redis.RedisError as exc:
            # Unreachable: trust the lease only for the time it surely still has.
            still = time.monotonic() < self.valid_until
            log.warning("beat: Redis unreachable (%s); %s", exc, "still active" if still else "standing by")
            return still
        # Measured from before the call: the lease may have started expiring then.
        self.valid_until = started + self.seconds * 0.8 if held else 0.0
        return held

    def release(self) -> None:
        with contextlib.suppress(redis.RedisError):  # else it expires by itself
            self.client.eval(_RELEASE, 1, lock_key(), self.owner)


class SingleBeatScheduler(DatabaseScheduler):  # type: ignore[misc]
    """The database scheduler, active only while it holds the leader lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        seconds = float(settings.BOS_BEAT_LOCK_SECONDS)
        self.lease = LeaderLease(redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2), seconds)
        self.standby_interval = min(5.0, seconds / 3)
        self.active = False
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        from orchestrator.config import schedules, store

        schedules.apply(store.stored()[1])
        self.install_default_entries(self.schedule)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        holding = self.lease.hold()
        if holding != self.active:
            self.active = holding
            log.info(
                "beat: %s (%s)", "active: sending scheduled tasks" if holding else "standby", self.lease.owner
            )
            if holding:
                # Taking over: read the schedule and its last runs afresh from the database.
                self._initial_read = True
                self._heap = None
        if not holding:
            return self.standby_interval
        # Come back before the lease needs renewing, however far the next task is.
        return float(min(super().tick(*args, **kwargs), self.standby_interval))

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.active:
                self.lease.release()
