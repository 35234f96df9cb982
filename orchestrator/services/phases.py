"""Services that run and finish phases: a chunk of a per-item phase, a per-batch
phase, and recording a phase's success or failure (which moves the batch on)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from orchestrator.classify import backoff_delay
from orchestrator.models import Batch, ChunkRun, OutboxEvent, PhaseRun, StateTransition
from orchestrator.selectors import pipeline_plan
from orchestrator.services.events import emit, outbox_event
from orchestrator.services.execution import (
    MAX_ERROR,
    DependencyOpen,
    PhaseRef,
    batch_facts,
    record_chunk,
    run_batch_handler,
    run_items,
)
from orchestrator.services.progress import advance, lock_batch, save_batch
from orchestrator.states import BatchState, PhaseState


def _running_phase(phase_run_id: int) -> tuple[Batch, PhaseRef] | None:
    """The phase (with its batch) if it is running, else None: one primary-key read."""
    row = PhaseRun.objects.filter(id=phase_run_id).values_list("state", "batch_id", "name", "handler").first()
    if row is None or row[0] != PhaseState.RUNNING:
        return None
    _, batch_id, name, handler = row
    return batch_facts(batch_id), PhaseRef(id=phase_run_id, name=name, handler=handler)


class RetryChunk(Exception):
    """Try the chunk again in `delay` seconds: items failed transiently, or the breaker
    of its dependency is open (`attempt_used` False: waiting is not an attempt)."""

    def __init__(self, delay: float, reason: str, *, attempt_used: bool, waiting_on: str = "") -> None:
        super().__init__(reason)
        self.delay, self.reason, self.attempt_used, self.waiting_on = delay, reason, attempt_used, waiting_on


def retry_policy(spec_retry: Mapping[str, Any]) -> dict[str, float]:
    return {
        "max_attempts": spec_retry.get("max_attempts", settings.BOS_RETRY_MAX_ATTEMPTS),
        "base": spec_retry.get("base", settings.BOS_RETRY_BASE_SECONDS),
        "cap": spec_retry.get("cap", settings.BOS_RETRY_CAP_SECONDS),
        "jitter": spec_retry.get("jitter", settings.BOS_RETRY_JITTER),
    }


def phase_chunk_run(*, phase_run_id: int, start: int, end: int, attempt: int = 1) -> dict[str, int]:
    """Run a per-item phase's handler over items [start, end) and record the results.

    Items that failed transiently (transient, timeout, dependency unavailable) make the
    whole chunk try again later, with exponential backoff and jitter, up to the phase's
    `max_attempts`; then they are recorded as failed with their class. While the breaker
    of the handler's dependency is open the chunk waits, recording nothing. Delivered
    twice, it records nothing the second time; for a phase that is no longer running
    (the batch was cancelled) it does nothing.
    """
    started_at = timezone.now()
    running = _running_phase(phase_run_id)
    if running is None:
        return {"succeeded": 0, "failed": 0, "skipped": 0, "stale": 1}
    batch, phase = running
    try:
        outcome = run_items(batch=batch, phase=phase, start=start, end=end)
    except DependencyOpen as exc:
        raise RetryChunk(
            max(exc.seconds, 1.0), str(exc), attempt_used=False, waiting_on=exc.dependency
        ) from exc
    policy = retry_policy(pipeline_plan(batch.pipeline_version).phase(phase.name).retry)
    if outcome.retryable and attempt < policy["max_attempts"]:
        delay = backoff_delay(
            attempt, base=policy["base"], cap=policy["cap"], jitter=policy["jitter"], rand=random.random()
        )
        first = outcome.retryable[0]
        raise RetryChunk(
            delay,
            f"{len(outcome.retryable)} item(s) failed ({first[2]}): {first[1][:200]}",
            attempt_used=True,
        )
    if not record_chunk(phase=phase, start=start, end=end, outcome=outcome, started_at=started_at):
        return {**outcome.summary, "duplicate": 1}
    return outcome.summary


def phase_retry_noted(*, phase_run_id: int, delay: float, reason: str, waiting_on: str = "") -> None:
    """Make a chunk's coming retry visible on its phase (API, admin)."""
    PhaseRun.objects.filter(id=phase_run_id).update(
        retries=F("retries") + 1,
        next_retry_at=timezone.now() + timedelta(seconds=delay),
        waiting_on=waiting_on,
        error=reason[:2000],
    )


def phase_batch_run(*, phase_run_id: int, inline: bool = False, attempt: int = 1) -> None:
    """Run a per-batch phase's handler and record its output, or its failure.

    A failure of a retryable class (transient, timeout, dependency) is tried again with
    the phase's backoff policy, up to its `max_attempts`, before the phase fails.
    """
    running = _running_phase(phase_run_id)
    if running is None:
        return
    batch, phase = running
    started = timezone.now()
    result = run_batch_handler(batch=batch, phase=phase)
    policy = retry_policy(pipeline_plan(batch.pipeline_version).phase(phase.name).retry)
    if result.retryable and attempt < policy["max_attempts"]:
        delay = backoff_delay(
            attempt, base=policy["base"], cap=policy["cap"], jitter=policy["jitter"], rand=random.random()
        )
        raise RetryChunk(delay, f"({result.error_class}) {(result.error or '')[:200]}", attempt_used=True)
    if result.error is not None:
        phase_fail(
            phase_run_id=phase.id,
            error=result.error,
            inline=inline,
            work_started_at=started,
            error_class=result.error_class,
        )
    else:
        phase_complete(phase_run_id=phase.id, output=result.output, inline=inline, work_started_at=started)


def _locked_batch_and_phases(phase_run_id: int) -> tuple[Batch, list[PhaseRun], PhaseRun]:
    batch_id = PhaseRun.objects.filter(id=phase_run_id).values_list("batch_id", flat=True).get()
    batch = lock_batch(batch_id)
    phases = list(batch.phases.order_by("position"))
    phase = next(p for p in phases if p.id == phase_run_id)
    return batch, phases, phase


def phase_complete(
    *,
    phase_run_id: int,
    output: Mapping[str, Any] | None = None,
    inline: bool = False,
    work_started_at: datetime | None = None,
) -> None:
    """running → succeeded for a phase, then start what is ready or finish the batch.

    Claimed under the batch lock: delivered twice, the second call does nothing.
    """
    now = timezone.now()
    with transaction.atomic():
        batch, phases, phase = _locked_batch_and_phases(phase_run_id)
        if phase.state != PhaseState.RUNNING:
            return
        if phase.mode == "per_item":
            totals = ChunkRun.objects.filter(phase_run_id=phase.id).aggregate(
                failed=Sum("failed"), chunks=Count("id")
            )
            if totals["chunks"] < phase.chunks_total:
                # An early or duplicate callback (a re-sent chord): the rest is still coming.
                return
            phase.items_failed = totals["failed"] or 0
        phase.output = dict(output) if output is not None else None
        # A note left by a retry on the way is not the error of a phase that succeeded.
        phase.error, phase.error_class = "", ""
        _end_phase(phase, PhaseState.SUCCEEDED, now, work_started_at, ["output", "items_failed"])
        data = {"phase": phase.name, "items_failed": phase.items_failed}
        _move_on(
            batch,
            phases,
            outbox_event(batch=batch, event_type="batch.phase_completed", at=now, data=data),
            now,
            inline,
        )


def phase_fail(
    *,
    phase_run_id: int,
    error: str,
    inline: bool = False,
    work_started_at: datetime | None = None,
    error_class: str = "",
) -> None:
    """running → failed for a phase; the batch fails once nothing else is running."""
    now = timezone.now()
    with transaction.atomic():
        batch, phases, phase = _locked_batch_and_phases(phase_run_id)
        if phase.state != PhaseState.RUNNING:
            return
        phase.error, phase.error_class = error[: MAX_ERROR * 4], error_class
        _end_phase(phase, PhaseState.FAILED, now, work_started_at, [])
        data = {"phase": phase.name, "error": error[:500]}
        _move_on(
            batch,
            phases,
            outbox_event(batch=batch, event_type="batch.phase_failed", at=now, data=data),
            now,
            inline,
        )


def _end_phase(
    phase: PhaseRun, state: PhaseState, now: datetime, work_started_at: datetime | None, fields: list[str]
) -> None:
    """Record how a running phase ended; it no longer waits for any retry."""
    phase.state, phase.finished_at = state, now
    phase.work_started_at = phase.work_started_at or work_started_at
    phase.next_retry_at, phase.waiting_on = None, ""
    phase.save(
        update_fields=[
            "state",
            "finished_at",
            "work_started_at",
            "next_retry_at",
            "waiting_on",
            "error",
            "error_class",
            *fields,
        ]
    )


def _move_on(batch: Batch, phases: list[PhaseRun], event: OutboxEvent, now: datetime, inline: bool) -> None:
    """After a phase ended (batch locked): start what is ready or finish, and publish."""
    events = [event]
    audit: list[StateTransition] = []
    if batch.state == BatchState.RUNNING:
        events += advance(batch, phases, now=now, audit=audit, inline=inline)
        save_batch(batch, audit)
    emit(events)
