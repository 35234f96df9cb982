"""`manage.py bos_snapshot [--batch ID] [--stalled]`: snapshot the batches that have not
ended, then show them with the age of their latest snapshot and whether they are stalled.

`manage.py bos_snapshot rewind BATCH --snapshot N [--execute] [--reason R] [--as USER]`:
run an ended batch again from the phase boundary of its snapshot N (a dry run without
`--execute`: it prints what would run again)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.core.management.base import CommandError
from django.db.models import Count, Max
from django.utils import timezone
from rich.console import Console
from rich.table import Table

from orchestrator.access import Do
from orchestrator.errors import OrchestrationError
from orchestrator.management.audited import AuditedCommand
from orchestrator.management.terminal import console_of
from orchestrator.models import Batch, BatchSnapshot
from orchestrator.services.rewind import RewindPlan, batch_rewind, rewind_plan
from orchestrator.services.snapshots import (
    KEEP,
    SNAPSHOT_STATES,
    STALL_MIN_SPAN_SECONDS,
    STALL_SNAPSHOTS,
    phase_changes,
    snapshot_history,
    snapshot_running_batches,
    stalled_batches,
)


def _age(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "—"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _phases(phases: list[dict[str, Any]]) -> str:
    parts = []
    for p in phases:
        failed = f", {p['items_failed']} failed" if p.get("items_failed") else ""
        parts.append(f"{p['name']} {p['state']} ({p['items_done']} done{failed})")
    return "\n".join(parts)


def _changes(newer: BatchSnapshot, older: BatchSnapshot | None) -> str:
    if older is None:
        return "first"
    lines = []
    if newer.state != older.state:
        lines.append(f"state {older.state} → {newer.state}")
    if newer.transitions_count != older.transitions_count:
        lines.append(f"{newer.transitions_count - older.transitions_count} transition(s)")
    for change in phase_changes(older.phases, newer.phases):
        (s0, s1), (d0, d1) = change["state"], change["items_done"]
        moved = [f"{s0} → {s1}"] if s0 != s1 else []
        moved += [f"done {d0} → {d1}"] if d0 != d1 else []
        lines.append(f"{change['name']}: {', '.join(moved)}")
    return "\n".join(lines) or "no change"


def _rewind_summary(plan: RewindPlan, *, done: bool) -> str:
    taken = plan.snapshot_taken_at.isoformat(timespec="seconds")
    head = "rewound" if done else "would rewind"
    return "\n".join(
        [
            f"{head} batch {plan.batch_id} ({plan.state}) to snapshot {plan.snapshot_id} of {taken}",
            f"  run again: {', '.join(plan.rerun)}",
            f"  kept:      {', '.join(plan.kept) or '—'}",
            f"  items pending again: {plan.items_reset}; item results cleared: {plan.results_cleared}",
        ]
    )


class Command(AuditedCommand):
    help = (
        "Snapshot every batch that has not ended, then list them with the age of their latest "
        "snapshot and whether they are stalled (no change over their last snapshots). "
        "--batch ID shows one batch's snapshot history. "
        "`rewind BATCH --snapshot N [--execute]` runs an ended batch again from that snapshot."
    )

    def add_arguments(self, parser: Any) -> None:
        actions = parser.add_subparsers(dest="action", metavar="rewind")
        rewind = actions.add_parser(
            "rewind",
            help="run an ended batch again from a snapshot's phase boundary (dry run without --execute)",
        )
        rewind.add_argument("batch", help="the batch's id")
        rewind.add_argument(
            "--snapshot", type=int, required=True, help="the snapshot's id (--batch lists them)"
        )
        rewind.add_argument("--execute", action="store_true", help="rewind (default: only print the plan)")
        rewind.add_argument("--reason", default="", help="why, for the batch's history")
        parser.add_argument("--batch", help="show this batch's snapshot history")
        parser.add_argument("--stalled", action="store_true", help="list only stalled batches")
        parser.add_argument(
            "--snapshots",
            type=int,
            default=STALL_SNAPSHOTS,
            help=f"stalled: no change over this many newest snapshots (default {STALL_SNAPSHOTS})",
        )
        parser.add_argument(
            "--min-span",
            type=float,
            default=STALL_MIN_SPAN_SECONDS,
            help="stalled: those snapshots span at least this many seconds "
            f"(default {STALL_MIN_SPAN_SECONDS:g})",
        )
        parser.add_argument("--no-take", action="store_true", help="only read; take no snapshot now")
        parser.add_argument("--limit", type=int, default=100, help="rows to list (default 100)")

    def handle(self, *args: Any, **options: Any) -> None:
        console = console_of(self, width=160)
        if options.get("action") == "rewind":
            self._rewind(console, options)
            return
        if options["snapshots"] < 2:
            raise CommandError("--snapshots must be at least 2")
        if not options["no_take"]:
            taken = snapshot_running_batches()
            console.print(f"{taken} snapshot(s) taken")
        stalled = set(stalled_batches(snapshots=options["snapshots"], min_span=options["min_span"]))
        if options["batch"]:
            self._history(console, options["batch"], stalled)
        else:
            self._overview(console, stalled, only_stalled=options["stalled"], limit=options["limit"])

    def _rewind(self, console: Console, options: dict[str, Any]) -> None:
        try:
            batch_id = uuid.UUID(options["batch"])
            self.require(
                Do.OPERATE, Batch.objects.filter(id=batch_id).values_list("tenant_id", flat=True).first()
            )
            if options["execute"]:
                plan = batch_rewind(
                    batch_id=batch_id,
                    snapshot_id=options["snapshot"],
                    actor=self.actor,
                    reason=options["reason"],
                )
            else:
                plan = rewind_plan(batch_id=batch_id, snapshot_id=options["snapshot"])
        except ValueError as exc:
            raise CommandError(f"batch {options['batch']} does not exist") from exc
        except OrchestrationError as exc:
            raise CommandError(f"{exc.code}: {exc}") from exc
        console.print(_rewind_summary(plan, done=options["execute"]))
        if not options["execute"]:
            console.print("dry run: nothing changed (--execute to rewind)")

    def _overview(self, console: Console, stalled: set[uuid.UUID], *, only_stalled: bool, limit: int) -> None:
        now = timezone.now()
        batches = (
            Batch.objects.filter(state__in=SNAPSHOT_STATES)
            .select_related("tenant", "pipeline_version__pipeline")
            .annotate(latest=Max("snapshots__taken_at"), taken=Count("snapshots"))
            .order_by("created_at")
        )
        if only_stalled:
            batches = batches.filter(id__in=stalled)
        total = batches.count()
        if not total:
            console.print("no stalled batches" if only_stalled else "no batch is running")
            return
        rows = sorted(batches[:limit], key=lambda b: (b.id not in stalled, b.created_at))
        title = f"{len(stalled)} stalled of {total} batch(es)" if not only_stalled else f"{total} stalled"
        table = Table(title=title)
        table.add_column("batch", no_wrap=True)
        for column in ("tenant:external id", "pipeline", "state", "snapshots", "latest", "stalled"):
            table.add_column(column)
        for batch in rows:
            version = batch.pipeline_version
            table.add_row(
                str(batch.id),
                f"{batch.tenant.slug}:{batch.external_id}",
                f"{version.pipeline.name} v{version.version}",
                batch.state,
                str(batch.taken),
                _age(batch.latest, now),
                "STALLED" if batch.id in stalled else "",
            )
        console.print(table)
        if total > len(rows):
            console.print(f"… and {total - len(rows)} more (--limit)")

    def _history(self, console: Console, batch_id: str, stalled: set[uuid.UUID]) -> None:
        try:
            batch = Batch.objects.select_related("pipeline_version__pipeline").get(id=uuid.UUID(batch_id))
        except (ValueError, Batch.DoesNotExist) as exc:
            raise CommandError(f"batch {batch_id} does not exist") from exc
        now = timezone.now()
        history = snapshot_history(batch.id, limit=KEEP)
        version = batch.pipeline_version
        console.print(
            f"batch {batch.id} ({version.pipeline.name} v{version.version}) is {batch.state}"
            f"{'; STALLED' if batch.id in stalled else ''}"
        )
        if not history:
            console.print("no snapshots (a batch is snapshotted only while it has not ended)")
            return
        table = Table(title=f"{len(history)} snapshot(s), newest first")
        for column in (
            "id",
            "taken at",
            "age",
            "state",
            "transitions",
            "failed items",
            "phases",
            "since previous",
        ):
            table.add_column(column)
        for i, snapshot in enumerate(history):
            older = history[i + 1] if i + 1 < len(history) else None
            table.add_row(
                str(snapshot.id),
                snapshot.taken_at.isoformat(timespec="seconds"),
                _age(snapshot.taken_at, now),
                snapshot.state,
                str(snapshot.transitions_count),
                str(snapshot.items_failed),
                _phases(snapshot.phases),
                _changes(snapshot, older),
            )
        console.print(table)
