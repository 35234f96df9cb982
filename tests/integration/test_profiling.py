"""Profiling: phase-run figures, version statistics and pipeline profiles from the database.

No Celery here: batches are created with the service (and held), then their phase runs
and chunks are given controlled timestamps by hand, as if they had run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from bos_project.settings.environment import BASE_DIR
from orchestrator.errors import NotFound
from orchestrator.models import Batch, ChunkRun, PhaseRun, Pipeline, PipelineVersion
from orchestrator.profiling import (
    PhaseProfile,
    PhaseRunMetrics,
    phase_run_metrics,
    profile_pipeline,
    version_stats,
)
from orchestrator.selectors import pipeline_plan
from orchestrator.services.batches import batch_create
from orchestrator.services.pipelines import pipeline_publish
from tests.support.factories import batch_request, essay_items

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline", "held_batches")]

PIPELINE = "essay-analysis"
# (queue wait, run time) in seconds. Phases of the plan not named here (such as a
# conditional one) are skipped, as the engine skips them.
BASE = {"validate": (0.1, 0.5), "spellcheck": (0.1, 3.0), "text_stats": (0.1, 1.0), "aggregate": (0.1, 0.2)}
DAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def new_batch(items: int = 10, version: int | None = None) -> Batch:
    request = batch_request(items=essay_items(items), pipeline_version=version)
    return batch_create(request=request, actor="test").batch


def plan_phases(batch: Batch | None = None) -> list[str]:
    """The phase names of a batch's plan (default: the pipeline's active version), in order."""
    version = (
        batch.pipeline_version
        if batch is not None
        else PipelineVersion.objects.get(pipeline__name=PIPELINE, pipeline__active_version_id=F("id"))
    )
    return [spec.name for spec in pipeline_plan(version).phases]


def run_by_hand(
    batch: Batch,
    *,
    start: datetime = DAY,
    timings: Mapping[str, tuple[float, float]] = BASE,
    state: str = "completed",
    attempts: Mapping[str, int] | None = None,
) -> None:
    """Give a batch's phase runs the timings of a run that started at `start`.

    Each phase is dispatched when its dependencies finished, taken up `wait` later and
    finished `run` after that. Per-item phases get two chunks (the whole run, and its
    second half) and no `work_started_at`: their first chunk stands in for it, as for
    phase runs recorded before the engine set it. Per-batch phases get `work_started_at`.
    """
    plan = pipeline_plan(batch.pipeline_version)
    phases = {p.name: p for p in batch.phases.all()}
    finished: dict[str, datetime] = {}
    last = plan.phases[-1].name
    for spec in plan.phases:
        phase = phases[spec.name]
        dispatched = max((finished[d] for d in spec.after), default=start)
        if spec.name not in timings:
            PhaseRun.objects.filter(id=phase.id).update(state="skipped", finished_at=dispatched)
            finished[spec.name] = dispatched
            continue
        wait, run = timings[spec.name]
        work, end = dispatched + seconds(wait), dispatched + seconds(wait + run)
        fields: dict[str, Any] = {
            "state": "failed" if state == "failed" and spec.name == last else "succeeded",
            "started_at": dispatched,
            "finished_at": end,
            "attempts": (attempts or {}).get(spec.name, 1),
        }
        if phase.mode == "per_item":
            half = batch.items_total // 2
            ChunkRun.objects.bulk_create(
                [
                    ChunkRun(phase_run=phase, start=0, end=half, started_at=work, finished_at=end),
                    ChunkRun(
                        phase_run=phase,
                        start=half,
                        end=batch.items_total,
                        started_at=work + seconds(run / 2),
                        finished_at=end,
                    ),
                ]
            )
            fields |= {"items_done": batch.items_total, "chunks_total": 2, "chunks_done": 2}
        else:
            fields["work_started_at"] = work
        PhaseRun.objects.filter(id=phase.id).update(**fields)
        finished[spec.name] = end
    Batch.objects.filter(id=batch.id).update(
        state=state, created_at=start, started_at=start, finished_at=finished[last]
    )


def with_spellcheck(run: float, **changes: tuple[float, float]) -> dict[str, tuple[float, float]]:
    return {**BASE, "spellcheck": (0.1, run), **changes}


def by_phase(phases: Any) -> dict[str, Any]:
    return {p.phase: p for p in phases}


def by_phase_json(phases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["phase"]: p for p in phases}


# --- Per phase run ---------------------------------------------------------------------------


def test_phase_run_figures_of_a_batch() -> None:
    batch = new_batch(10)
    run_by_hand(batch, attempts={"spellcheck": 3})

    metrics: dict[str, PhaseRunMetrics] = by_phase(phase_run_metrics(batch.id))

    assert list(metrics) == plan_phases(batch)
    validate = metrics["validate"]
    assert validate.dispatched_at == DAY
    assert validate.work_started_at == DAY + seconds(0.1)  # the first chunk's start
    assert validate.queue_wait == pytest.approx(0.1)
    assert validate.run_time == pytest.approx(0.5)
    assert validate.total == pytest.approx(0.6)
    assert validate.items_per_second == pytest.approx(10 / 0.5)
    assert (validate.chunks, validate.chunks_done, validate.retries) == (2, 2, 0)
    # Chunks of 0.5 s and 0.25 s: interpolated percentiles.
    assert validate.chunk_p50 == pytest.approx(0.375)
    assert validate.chunk_p95 == pytest.approx(0.4875)

    spellcheck = metrics["spellcheck"]
    assert spellcheck.dispatched_at == DAY + seconds(0.6)
    assert (spellcheck.queue_wait, spellcheck.run_time) == pytest.approx((0.1, 3.0))
    assert spellcheck.items_per_second == pytest.approx(10 / 3.0)
    assert spellcheck.retries == 2

    aggregate = metrics["aggregate"]
    assert aggregate.work_started_at == DAY + seconds(3.8)  # recorded
    assert aggregate.queue_wait == pytest.approx(0.1)
    assert aggregate.run_time == pytest.approx(0.2)
    assert aggregate.items_per_second is None
    assert (aggregate.chunk_p50, aggregate.chunk_p95) == (None, None)


def test_a_phase_run_not_taken_up_or_not_finished_has_no_figures_yet() -> None:
    batch = new_batch(4)
    validate = PhaseRun.objects.get(batch=batch, name="validate")
    PhaseRun.objects.filter(id=validate.id).update(state="running", started_at=DAY)
    # A chunk of an earlier attempt, before this dispatch, is not this attempt's work start.
    ChunkRun.objects.create(
        phase_run=validate, start=0, end=2, started_at=DAY - seconds(60), finished_at=DAY - seconds(59)
    )

    metrics = by_phase(phase_run_metrics(batch.id))

    assert metrics["validate"].state == "running"
    assert metrics["validate"].work_started_at is None
    assert metrics["validate"].queue_wait is None
    assert metrics["validate"].run_time is None
    assert metrics["spellcheck"].dispatched_at is None
    assert metrics["spellcheck"].total is None


def test_a_work_start_of_an_earlier_attempt_is_ignored() -> None:
    """A retried phase dispatched again at DAY whose recorded work start is older."""
    batch = new_batch(4)
    run_by_hand(batch)
    stale = DAY - seconds(600)
    PhaseRun.objects.filter(batch=batch, name__in=["validate", "aggregate"]).update(work_started_at=stale)

    metrics = by_phase(phase_run_metrics(batch.id))

    # Per-item: the first chunk since the dispatch stands in for it.
    assert metrics["validate"].work_started_at == DAY + seconds(0.1)
    assert (metrics["validate"].queue_wait, metrics["validate"].run_time) == pytest.approx((0.1, 0.5))
    # Per-batch: the queue wait is unknown, and the run time is the whole total.
    aggregate = metrics["aggregate"]
    assert aggregate.work_started_at is None and aggregate.queue_wait is None
    assert (aggregate.run_time, aggregate.total) == pytest.approx((0.3, 0.3))


# --- Profile ---------------------------------------------------------------------------------


def three_batches(**changes: tuple[float, float]) -> None:
    """Spellcheck runs 2, 3 and 4 s in batches started a day apart (mean 3 s, p95 3.9 s)."""
    for day, run in enumerate((2.0, 3.0, 4.0)):
        run_by_hand(new_batch(10), start=DAY + timedelta(days=day), timings=with_spellcheck(run, **changes))


def test_profile_figures_critical_path_and_bottleneck() -> None:
    three_batches()
    new_batch(10)  # not finished: not profiled

    profile = profile_pipeline(PIPELINE)

    assert (profile.pipeline, profile.version, profile.batches) == (PIPELINE, 1, 3)
    phases: dict[str, PhaseProfile] = by_phase(profile.phases)
    assert list(phases) == plan_phases()
    spellcheck = phases["spellcheck"]
    assert spellcheck.runs == 3
    assert spellcheck.run_time.mean == pytest.approx(3.0)
    assert spellcheck.run_time.p50 == pytest.approx(3.0)
    assert spellcheck.run_time.p95 == pytest.approx(3.9)
    assert spellcheck.queue_wait.mean == pytest.approx(0.1)
    assert spellcheck.queue_wait.p95 == pytest.approx(0.1)
    assert spellcheck.total_mean == pytest.approx(3.1)
    assert spellcheck.items_per_second == pytest.approx(30 / 9.0)
    # Chunks of 1, 1.5, 2, 2, 3 and 4 s.
    assert (spellcheck.chunk_p50, spellcheck.chunk_p95) == pytest.approx((2.0, 3.75))
    assert phases["validate"].run_time.p95 == pytest.approx(0.5)
    assert phases["validate"].items_per_second == pytest.approx(20.0)
    assert phases["text_stats"].run_time.mean == pytest.approx(1.0)
    assert phases["aggregate"].run_time.mean == pytest.approx(0.2)
    assert phases["aggregate"].items_per_second is None

    assert profile.critical_path == ("validate", "spellcheck", "aggregate")
    assert [p.phase for p in profile.phases if p.critical] == ["validate", "spellcheck", "aggregate"]
    assert profile.critical_path_seconds == pytest.approx(0.6 + 3.1 + 0.3)
    assert profile.bottleneck is not None
    assert profile.bottleneck.phase == "spellcheck"
    assert profile.bottleneck.cause == "run_time"
    assert "3.00 s" in profile.bottleneck.reason


def test_a_phase_waiting_longer_than_it_runs_is_the_bottleneck() -> None:
    three_batches(text_stats=(5.0, 1.0))

    profile = profile_pipeline(PIPELINE)

    assert profile.bottleneck is not None
    assert profile.bottleneck.phase == "text_stats"
    assert profile.bottleneck.cause == "queue_wait"
    assert "queue wait" in profile.bottleneck.reason
    assert "5.00 s" in profile.bottleneck.reason and "1.00 s" in profile.bottleneck.reason
    assert by_phase(profile.phases)["text_stats"].queue_wait.mean == pytest.approx(5.0)


def test_retries_are_summed_over_the_profiled_runs() -> None:
    run_by_hand(new_batch(10), attempts={"spellcheck": 2})
    run_by_hand(new_batch(10), start=DAY + seconds(60), attempts={"spellcheck": 3, "aggregate": 2})

    phases = by_phase(profile_pipeline(PIPELINE).phases)

    assert phases["spellcheck"].retries == 3
    assert phases["aggregate"].retries == 1
    assert phases["validate"].retries == 0


def test_profile_takes_the_latest_batches_finished_since() -> None:
    three_batches()

    latest = profile_pipeline(PIPELINE, limit_batches=1)
    recent = profile_pipeline(PIPELINE, since=DAY + timedelta(days=1))

    assert latest.batches == 1
    assert by_phase(latest.phases)["spellcheck"].run_time.mean == pytest.approx(4.0)
    assert recent.batches == 2
    assert by_phase(recent.phases)["spellcheck"].run_time.mean == pytest.approx(3.5)


def test_profile_without_finished_batches() -> None:
    new_batch(3)

    profile = profile_pipeline(PIPELINE)

    assert profile.batches == 0
    assert profile.critical_path == ()
    assert profile.bottleneck is None
    assert all(p.runs == 0 and p.run_time.mean is None for p in profile.phases)


def test_unknown_pipeline_or_version_is_not_found() -> None:
    with pytest.raises(NotFound):
        profile_pipeline("no-such-pipeline")
    with pytest.raises(NotFound):
        profile_pipeline(PIPELINE, version=99)
    with pytest.raises(NotFound):
        version_stats("no-such-pipeline")


# --- Versions --------------------------------------------------------------------------------


def publish_second_version() -> None:
    definition = json.loads((BASE_DIR / "pipelines" / f"{PIPELINE}.json").read_text())
    definition["description"] = "Version 2: the same phases, described anew."
    pipeline_publish(name=PIPELINE, definition=definition)


def test_version_stats_side_by_side() -> None:
    # v1: batches of 3, 4 and 5 s (one failed); v2: 2 and 3 s, and one not started.
    run_by_hand(new_batch(10), timings=with_spellcheck(2.0))
    run_by_hand(new_batch(10), timings=with_spellcheck(3.0))
    run_by_hand(new_batch(10), timings=with_spellcheck(4.0), state="failed")
    publish_second_version()
    run_by_hand(new_batch(10), timings=with_spellcheck(1.0))
    run_by_hand(new_batch(10), timings=with_spellcheck(2.0))
    new_batch(10)

    v2, v1 = version_stats(PIPELINE)

    assert (v2.version, v2.active, v1.version, v1.active) == (2, True, 1, False)
    assert v2.created_at >= v1.created_at
    assert v1.counts == {"completed": 2, "failed": 1}
    assert v2.counts == {"completed": 2, "accepted": 1}
    assert (v1.total, v1.finished, v2.total, v2.finished) == (3, 3, 3, 2)
    assert (v1.duration_p50, v1.duration_p95) == pytest.approx((4.0, 4.9))
    assert (v2.duration_p50, v2.duration_p95) == pytest.approx((2.5, 2.95))
    v1_phases, v2_phases = by_phase(v1.phases), by_phase(v2.phases)
    assert list(v2_phases) == plan_phases()
    assert v1_phases["spellcheck"].runs == 3
    assert (v1_phases["spellcheck"].run_time_p50, v1_phases["spellcheck"].run_time_p95) == pytest.approx(
        (3.0, 3.9)
    )
    assert v2_phases["spellcheck"].runs == 2
    assert (v2_phases["spellcheck"].run_time_p50, v2_phases["spellcheck"].run_time_p95) == pytest.approx(
        (1.5, 1.95)
    )
    assert v2_phases["aggregate"].queue_wait_p95 == pytest.approx(0.1)

    profile_v1 = profile_pipeline(PIPELINE, version=1)
    assert (profile_v1.version, profile_v1.batches) == (1, 3)
    assert profile_pipeline(PIPELINE).version == 2


def test_a_version_whose_definition_no_longer_parses_is_still_listed() -> None:
    """A handler removed since: the stored definition's phases, in definition order."""
    pipeline = Pipeline.objects.get(name=PIPELINE)
    PipelineVersion.objects.create(
        pipeline=pipeline,
        version=2,
        definition={"phases": [{"name": "old", "handler": "gone.handler", "mode": "per_item"}]},
        checksum="0" * 64,
    )

    stats = {v.version: v for v in version_stats(PIPELINE)}
    profile = profile_pipeline(PIPELINE, version=2)

    assert [p.phase for p in stats[2].phases] == ["old"]
    assert stats[2].counts == {} and stats[2].duration_p50 is None
    assert [p.phase for p in profile.phases] == ["old"] and profile.batches == 0


def test_queries_do_not_grow_with_batches() -> None:
    counts: dict[str, list[int]] = {"versions": [], "profile": []}
    made = 0
    for n in (5, 50):
        for i in range(made, n):
            run_by_hand(new_batch(2), start=DAY + seconds(10 * i))
        made = n
        with CaptureQueriesContext(connection) as versions:
            stats = version_stats(PIPELINE)
        with CaptureQueriesContext(connection) as profile:
            profiled = profile_pipeline(PIPELINE)
        assert stats[0].finished == profiled.batches == n
        counts["versions"].append(len(versions.captured_queries))
        counts["profile"].append(len(profile.captured_queries))
    assert counts["versions"][0] == counts["versions"][1] <= 5
    assert counts["profile"][0] == counts["profile"][1] <= 5


# --- Command ---------------------------------------------------------------------------------


def command(*args: str) -> str:
    out = StringIO()
    call_command("pipeline_profile", *args, stdout=out)
    return out.getvalue()


def test_command_prints_phases_bottleneck_and_versions() -> None:
    three_batches()

    output = command(PIPELINE)

    assert "★ spellcheck" in output
    assert "  text_stats" in output and "★ text_stats" not in output
    assert "Critical path: validate → spellcheck → aggregate" in output
    assert "Bottleneck: spellcheck — spellcheck has the longest mean run time" in output
    assert "3.00 s" in output
    assert "v1 (active)" in output


def test_command_json() -> None:
    three_batches()

    document = json.loads(command(PIPELINE, "--json", "--batches", "2", "--version", "1"))

    profile = document["profile"]
    assert (profile["pipeline"], profile["version"], profile["batches"]) == (PIPELINE, 1, 2)
    assert profile["critical_path"] == ["validate", "spellcheck", "aggregate"]
    assert profile["bottleneck"]["phase"] == "spellcheck"
    assert [p["phase"] for p in profile["phases"]] == plan_phases()
    assert by_phase_json(profile["phases"])["spellcheck"]["run_time"]["mean"] == pytest.approx(3.5)
    assert document["versions"][0]["version"] == 1
    assert document["versions"][0]["counts"] == {"completed": 3}


def test_command_since() -> None:
    three_batches()

    document = json.loads(command(PIPELINE, "--json", "--since", "2026-03-04"))

    assert document["profile"]["batches"] == 1
    assert document["profile"]["since"].startswith("2026-03-04T00:00:00")


def test_command_without_finished_batches_says_so() -> None:
    new_batch(3)

    output = command(PIPELINE)

    assert "No finished batches of essay-analysis v1" in output


def test_command_refuses_an_unknown_pipeline_or_a_bad_date() -> None:
    with pytest.raises(CommandError, match="does not exist"):
        command("no-such-pipeline")
    with pytest.raises(CommandError, match="--since"):
        command(PIPELINE, "--since", "yesterday")
