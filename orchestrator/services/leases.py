"""Leases on running work, and the heartbeat that keeps them alive.

A chunk task (or a per-batch phase task) takes a lease on its work before its handler
runs — claim before effect — and a heartbeat thread in the same process renews it every
third of `BOS_LEASE_SECONDS` while the handler runs. The reconciler sends work again only
when its lease expired without a result, so work that is queued or alive is never
doubled, and a worker killed with `kill -9` costs at most one lease period.

Taking a lease fails, and the task does nothing, when the chunk is already recorded, the
phase is no longer running at the task's attempt (a stale task: cancelled batch, retried
phase), or another live holder has it. The same Celery task delivered again (a pool
process died and Celery requeued it, `reject_on_worker_lost`) takes its own lease back at
once: the dead holder cannot renew it anyway.

The heartbeat also tells a running handler to stop: when a renewal finds the lease gone
(the phase was cancelled or the work taken over), `LeaseHandle.lost` turns true and the
item loop stops at the next item boundary. Its writes are fenced anyway (see
`orchestrator.services.bulk`), so stopping is about not wasting work.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.db import close_old_connections, connection
from django.utils import timezone

from orchestrator.config import runtime
from orchestrator.states import BatchState, PhaseState

logger = logging.getLogger(__name__)


class Claim(StrEnum):
    TAKEN = "taken"
    RECORDED = "recorded"  # the chunk's results are already stored: nothing to do
    STALE = "stale"  # the phase is not running at this attempt, or the batch is not running
    HELD = "held"  # another live holder runs it


def owner_name(task_id: str | None) -> str:
    """Who holds a lease: host, process and Celery task id (the id survives redelivery)."""
    return f"{socket.gethostname()}:{os.getpid()}:{task_id or '-'}"[:200]


def _task_of(owner: str) -> str:
    return owner.rsplit(":", 1)[-1]


@dataclass
class LeaseHandle:
    phase_run_id: int
    start: int
    owner: str
    lost: bool = False

    def should_stop(self) -> bool:
        return self.lost


_TAKE = """
WITH phase AS (
    SELECT p.id FROM orchestrator_phaserun p JOIN orchestrator_batch b ON b.id = p.batch_id
    WHERE p.id = %(phase)s AND p.state = %(running)s AND b.state = %(batch_running)s
      AND (%(attempt)s = 0 OR p.attempts = %(attempt)s)
), recorded AS (
    SELECT 1 FROM orchestrator_chunkrun WHERE phase_run_id = %(phase)s AND start = %(start)s
), taken AS (
    INSERT INTO orchestrator_worklease
        (phase_run_id, start, "end", attempt, owner, taken_at, heartbeat_at, leased_until, takeovers)
    SELECT %(phase)s, %(start)s, %(end)s, %(attempt)s, %(owner)s, %(now)s, %(now)s, %(until)s, 0
    WHERE EXISTS (SELECT 1 FROM phase) AND NOT EXISTS (SELECT 1 FROM recorded)
    ON CONFLICT (phase_run_id, start) DO UPDATE SET
        "end" = EXCLUDED."end", attempt = EXCLUDED.attempt, owner = EXCLUDED.owner,
        taken_at = EXCLUDED.taken_at, heartbeat_at = EXCLUDED.heartbeat_at,
        leased_until = EXCLUDED.leased_until,
        takeovers = orchestrator_worklease.takeovers + 1
    WHERE orchestrator_worklease.leased_until < %(now)s
       OR orchestrator_worklease.attempt <> EXCLUDED.attempt
       OR regexp_replace(orchestrator_worklease.owner, '^.*:', '') = %(task)s
    RETURNING 1
)
SELECT (SELECT count(*) FROM phase), (SELECT count(*) FROM recorded), (SELECT count(*) FROM taken)
"""


def lease_take(
    *,
    phase_run_id: int,
    start: int,
    end: int,
    attempt: int,
    owner: str,
    now: datetime | None = None,
) -> Claim:
    """Claim the work [start, end) of a phase at `attempt` (0: whatever attempt runs now)."""
    now = now or timezone.now()
    params: dict[str, Any] = {
        "phase": phase_run_id,
        "start": start,
        "end": end,
        "attempt": attempt,
        "owner": owner,
        "task": _task_of(owner),
        "now": now,
        "until": now + timedelta(seconds=runtime("lease_seconds")),
        "running": PhaseState.RUNNING.value,
        "batch_running": BatchState.RUNNING.value,
    }
    with connection.cursor() as cursor:
        cursor.execute(_TAKE, params)
        phase, recorded, taken = cursor.fetchone()
    if recorded:
        return Claim.RECORDED
    if not phase:
        return Claim.STALE
    return Claim.TAKEN if taken else Claim.HELD


def lease_extend(*, phase_run_id: int, start: int, owner: str, seconds: float) -> None:
    """Keep a lease through a retry's countdown: the same task comes back to it (a retry
    keeps its task id), and meanwhile the reconciler must not send the work again."""
    until = timezone.now() + timedelta(seconds=seconds + runtime("lease_seconds"))
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE orchestrator_worklease SET leased_until = %s"
            " WHERE phase_run_id = %s AND start = %s AND owner = %s",
            [until, phase_run_id, start, owner],
        )


def lease_release(*, phase_run_id: int, start: int, owner: str) -> None:
    """Give a lease back (the work ended without a result to record: a retry is coming)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM orchestrator_worklease WHERE phase_run_id = %s AND start = %s AND owner = %s",
            [phase_run_id, start, owner],
        )


_RENEW = """
UPDATE orchestrator_worklease AS l SET heartbeat_at = %s, leased_until = %s
FROM orchestrator_phaserun AS p
WHERE p.id = l.phase_run_id AND p.state = %s AND l.owner = %s
  AND (l.phase_run_id, l.start) IN ({pairs})
RETURNING l.phase_run_id, l.start
"""


class Heartbeat:
    """The leases this process holds, renewed by one daemon thread.

    Started lazily in the process that takes a lease (a Celery pool child after the fork),
    with its own database connection (Django's are per thread).
    """

    def __init__(self) -> None:
        self._held: dict[tuple[int, int], LeaseHandle] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, handle: LeaseHandle) -> LeaseHandle:
        with self._lock:
            self._held[(handle.phase_run_id, handle.start)] = handle
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="bos-lease-heartbeat", daemon=True)
                self._thread.start()
        return handle

    def drop(self, handle: LeaseHandle) -> None:
        with self._lock:
            if self._held.get((handle.phase_run_id, handle.start)) is handle:
                del self._held[(handle.phase_run_id, handle.start)]

    def held(self) -> list[LeaseHandle]:
        with self._lock:
            return list(self._held.values())

    def _run(self) -> None:
        interval = runtime("lease_seconds") / 3
        while True:
            threading.Event().wait(interval)
            try:
                self.renew()
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease has slack for two
                logger.warning("lease heartbeat failed; trying again in %.0f s", interval, exc_info=True)
                close_old_connections()
            finally:
                if not self.held():
                    # Idle: hold no database connection (a test database must be droppable,
                    # and a pool must not keep one per idle worker process).
                    connection.close()

    def renew(self, now: datetime | None = None) -> None:
        """Extend every held lease; mark those that could not be renewed as lost."""
        held = self.held()
        if not held:
            return
        now = now or timezone.now()
        until = now + timedelta(seconds=runtime("lease_seconds"))
        by_owner: dict[str, list[LeaseHandle]] = {}
        for handle in held:
            by_owner.setdefault(handle.owner, []).append(handle)
        for owner, handles in by_owner.items():
            pairs = ",".join(["(%s, %s)"] * len(handles))
            params: list[Any] = [now, until, PhaseState.RUNNING.value, owner]
            params += [v for h in handles for v in (h.phase_run_id, h.start)]
            with connection.cursor() as cursor:
                cursor.execute(_RENEW.format(pairs=pairs), params)
                renewed = {(row[0], row[1]) for row in cursor.fetchall()}
            for handle in handles:
                if (handle.phase_run_id, handle.start) not in renewed:
                    handle.lost = True


HEARTBEAT = Heartbeat()
