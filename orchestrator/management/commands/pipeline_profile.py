"""`manage.py pipeline_profile <pipeline>`: where a pipeline's time goes.

One row per phase (plan order) with queue wait and run time p50/p95, items/s and
retries, ★ on the critical path; then the bottleneck and why, and the pipeline's
versions side by side. `--json` prints the same as JSON. See docs/profiling.md.
"""

from __future__ import annotations

import io
import json
import shutil
from datetime import date, datetime
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone
from rich.console import Console
from rich.table import Table

from orchestrator.errors import OrchestrationError
from orchestrator.management.audited import AuditedCommand
from orchestrator.profiling import (
    PipelineProfile,
    VersionStats,
    format_seconds,
    profile_pipeline,
    version_stats,
)

STAR = "★"


def parse_since(value: str) -> datetime:
    """An ISO date or date-time; without an offset, in the current time zone."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"--since: not an ISO date or date-time: {value!r}") from exc
    return timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def phase_table(profile: PipelineProfile) -> Table:
    table = Table(
        title=f"{profile.pipeline} v{profile.version} — {profile.batches} finished batches",
        caption=f"{STAR} on the critical path",
    )
    for column in ("phase", "runs", "queue p50", "queue p95", "run p50", "run p95", "items/s", "retries"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for p in profile.phases:
        table.add_row(
            f"{STAR} {p.phase}" if p.critical else f"  {p.phase}",
            str(p.runs),
            format_seconds(p.queue_wait.p50),
            format_seconds(p.queue_wait.p95),
            format_seconds(p.run_time.p50),
            format_seconds(p.run_time.p95),
            _rate(p.items_per_second),
            str(p.retries),
        )
    return table


def _counts(stats: VersionStats) -> str:
    return ", ".join(f"{state} {n}" for state, n in sorted(stats.counts.items())) or "—"


def version_table(versions: list[VersionStats]) -> Table:
    table = Table(title="Versions")
    for column in ("version", "published", "batches", "by state", "duration p50", "duration p95"):
        table.add_column(column, justify="right" if column.startswith(("batches", "duration")) else "left")
    for v in versions:
        table.add_row(
            f"v{v.version}" + (" (active)" if v.active else ""),
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            str(v.total),
            _counts(v),
            format_seconds(v.duration_p50),
            format_seconds(v.duration_p95),
        )
    return table


class Command(AuditedCommand):
    help = "Profile a pipeline version: per-phase timings, critical path, bottleneck, versions."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # `--version` here is the pipeline version, not Django's: let it replace that one.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("pipeline")
        parser.add_argument(
            "--version",
            type=positive_int,
            dest="pipeline_version",
            default=None,
            help="default: the active one",
        )
        parser.add_argument("--since", type=str, default=None, help="ISO date or date-time")
        parser.add_argument("--batches", type=positive_int, default=200, help="latest N finished batches")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        self.require_platform()
        since = parse_since(options["since"]) if options["since"] else None
        try:
            profile = profile_pipeline(
                options["pipeline"],
                version=options["pipeline_version"],
                since=since,
                limit_batches=options["batches"],
            )
            versions = version_stats(options["pipeline"])
        except OrchestrationError as exc:
            raise CommandError(exc.message) from exc
        if options["json"]:
            document = {"profile": profile.to_dict(), "versions": [v.to_dict() for v in versions]}
            self.stdout.write(json.dumps(document, indent=2, default=_json_default))
            return
        if profile.batches == 0:
            when = f" since {since.isoformat()}" if since else ""
            self.stdout.write(
                f"No finished batches of {profile.pipeline} v{profile.version}{when}: nothing to profile."
            )
            return
        self.stdout.write(self.render(profile, versions), ending="")

    def render(self, profile: PipelineProfile, versions: list[VersionStats]) -> str:
        tty = self.stdout.isatty()
        width = shutil.get_terminal_size((120, 24)).columns if tty else 120
        buffer = io.StringIO()
        console = Console(file=buffer, width=width, force_terminal=tty, no_color=not tty, highlight=False)
        console.print(phase_table(profile))
        path = " → ".join(profile.critical_path)
        console.print(
            f"Critical path: {path} ({format_seconds(profile.critical_path_seconds)} mean)", soft_wrap=True
        )
        if profile.bottleneck is not None:
            b = profile.bottleneck
            console.print(f"Bottleneck: {b.phase} — {b.reason}", soft_wrap=True)
        console.print()
        console.print(version_table(versions))
        return buffer.getvalue()
