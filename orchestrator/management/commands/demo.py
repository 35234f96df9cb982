"""`manage.py demo` (`make demo`): sends sample essays through Kafka to the running
service, follows the batch to its end with a progress bar, and prints its report: each
phase with its duration and, when it did not run, why; each report value, and why one
is empty (the score phase runs only with `--scoring`); then where to look next."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.admin_display import format_duration
from orchestrator.kafka.clients import make_producer, with_backoff
from orchestrator.models import Batch, PhaseRun
from orchestrator.selectors import batch_progress

OPENINGS = [
    "Climate change is the defining challenge of our generation.",
    "Reading fiction teaches empathy in a way few other activities can.",
    "Public transport makes cities cleaner, quieter and fairer.",
    "Learning a second language changes how a person thinks.",
    "Social media has changed the way young people form friendships.",
]
BODIES = [
    "Many scientists agree that the evidence is overwhelming, and goverments must act quickly.",
    "When we follow a character through hardship, we begin to understand lives unlike our own.",
    "A single bus can replace dozens of cars, which reduces trafic and pollution at once.",
    "Studies show that bilingual students solve problems more creatively than their peers.",
    "However, constant comparison with others can harm self-esteem and concentration.",
]
ENDINGS = [
    "In conclusion, small choices made every day add up to a real diffrence.",
    "Therefore, schools should give students more time to read for pleasure.",
    "For these reasons, the city should invest in better routes and cheaper tickets.",
    "It is clear that the benefits far outweigh the effort required.",
    "Ultimately, balance is the key to a healthy relationship with technology.",
]


def sample_essays(count: int) -> list[dict[str, Any]]:
    return [
        {
            "key": f"essay-{i + 1:03d}",
            "payload": {
                "student": f"student-{i % 17 + 1}",
                "text": " ".join(
                    (OPENINGS[i % 5], BODIES[(i // 5) % 5], BODIES[(i + 2) % 5], ENDINGS[(i // 3) % 5])
                ),
            },
        }
        for i in range(count)
    ]


class Command(BaseCommand):
    help = "Send a sample batch of essays through Kafka and follow it to its end."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--essays", type=int, default=50)
        parser.add_argument("--tenant", default=None)
        parser.add_argument("--timeout", type=float, default=300.0)
        parser.add_argument(
            "--scoring",
            action="store_true",
            help="also score the essays with the scoring service (the Procfile's `scoring` process)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        console = Console()
        tenant = options["tenant"] or settings.BOS_DEMO_TENANT
        external_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        message = {
            "event_id": str(uuid.uuid4()),
            "event_type": "batch.requested",
            "schema_version": 1,
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "correlation_id": f"demo-{uuid.uuid4().hex[:8]}",
            "tenant": tenant,
            "data": {
                "external_id": external_id,
                "pipeline": "essay-analysis",
                "priority": 5,
                "metadata": {
                    "course": "EN101",
                    "source": "make demo",
                    "grading": True,
                    **({"scoring": True} if options["scoring"] else {}),
                },
                "items": sample_essays(options["essays"]),
            },
        }
        producer = with_backoff(make_producer, what="demo", max_wait=30)
        producer.send(
            settings.BOS_TOPIC_REQUESTS,
            key=f"{tenant}:{external_id}".encode(),
            value=json.dumps(message).encode(),
        ).get(timeout=30)
        producer.close()
        console.print(
            f"sent [bold]{external_id}[/] ({options['essays']} essays) to {settings.BOS_TOPIC_REQUESTS}"
        )
        batch = self._wait_for_batch(tenant, external_id, timeout=60)
        batch = self._follow(console, batch, timeout=options["timeout"])
        self._report(console, batch)

    def _wait_for_batch(self, tenant: str, external_id: str, *, timeout: float) -> Batch:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = Batch.objects.filter(tenant__slug=tenant, external_id=external_id).first()
            if batch is not None:
                return batch
            time.sleep(0.2)
        raise CommandError("the batch did not arrive within 60 s: is the service running (`make run`)?")

    def _follow(self, console: Console, batch: Batch, *, timeout: float) -> Batch:
        deadline = time.monotonic() + timeout
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[phases]}"),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(batch.state, total=1.0, phases="")
            while True:
                batch.refresh_from_db()
                progress = batch_progress(batch)
                active = [p.name for p in batch.phases.all() if p.state == "running"]
                bar.update(
                    task, completed=progress["fraction"], description=batch.state, phases=", ".join(active)
                )
                if batch.is_terminal:
                    return batch
                if time.monotonic() > deadline:
                    raise CommandError(f"batch {batch.id} still {batch.state} after {timeout:.0f} s")
                time.sleep(0.2)

    def _report(self, console: Console, batch: Batch) -> None:
        phases = list(batch.phases.order_by("position"))
        table = Table(title=f"batch {batch.id} — {batch.state}")
        for column in ("phase", "state", "items", "failed", "duration", "note"):
            table.add_column(column)
        for phase in phases:
            table.add_row(
                phase.name,
                phase.state,
                str(phase.items_done) if phase.mode == "per_item" else "-",
                str(phase.items_failed),
                format_duration(phase.duration_seconds),
                phase_note(phase),
            )
        console.print(table)
        summary = Table(title="report", show_header=False)
        summary.add_row(
            "items", f"{batch.items_total} ({batch.items_succeeded} ok, {batch.items_failed} failed)"
        )
        for key, value in report_rows(batch.report, {p.name: p for p in phases}):
            summary.add_row(key, value)
        console.print(summary)
        console.print(where_next(batch, base_url=f"http://127.0.0.1:{settings.BOS_HTTP_PORT}"))


# Report values that come from one phase: when it did not run, the value is empty for that reason.
REPORT_SOURCES = {"score_mean": "score", "grades": "grading"}


def phase_note(phase: PhaseRun) -> str:
    """Why a phase did not do its work (skipped: its reason; failed: its error)."""
    if phase.state == "skipped":
        return f"skipped: {phase.skip_reason or 'no reason recorded'}"
    if phase.state == "failed":
        return phase.error[:120]
    return ""


def report_rows(report: dict[str, Any] | None, phases: dict[str, PhaseRun]) -> list[tuple[str, str]]:
    """The aggregate report as (label, value) rows; an empty value says why it is empty."""
    rows = []
    for key, value in ((report or {}).get("aggregate") or {}).items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        if value in (None, {}, []):
            source = phases.get(REPORT_SOURCES.get(key, ""))
            if source is not None and source.state != "succeeded":
                why = phase_note(source) or source.state
                shown = f"— (the {source.name} phase did not run: {why})"
                if source.name == "score" and source.state == "skipped":
                    shown += "; `make demo DEMO_ARGS=--scoring` scores the essays (needs `make run`'s scoring service)"
            else:
                shown = "—"
        rows.append((key.replace("_", " "), shown))
    if not rows:
        rows.append(("aggregate", "no report: the aggregate phase did not run (see the phases above)"))
    return rows


def where_next(batch: Batch, *, base_url: str) -> str:
    """Where to look at the batch next: its admin page, its graph, the dashboard."""
    return "\n".join(
        [
            "where to look next:",
            f"  the batch in the admin   {base_url}{reverse('admin:orchestrator_batch_change', args=[batch.id])}",
            f"  its graph                {base_url}{reverse('batch-graph', args=[batch.id])}",
            f"  its task results         {base_url}{reverse('admin:django_celery_results_taskresult_changelist')}"
            f"?batch={batch.id}",
            f"  the dashboard            {base_url}/dashboard/",
        ]
    )
