"""`manage.py bos_migrate_states --map OLD=NEW [--map …] [--state-field batch|phase]
[--execute] [--reason TEXT] [--validate]`: move stored rows from states that changed.

A dry run by default: it prints what would change. See docs/recovery.md.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError
from rich.console import Console
from rich.table import Table

from orchestrator.management.audited import AuditedCommand
from orchestrator.management.terminal import console_of, progress_bar
from orchestrator.services.state_migration import (
    MIGRATION,
    MigrationPlan,
    StateMigrationError,
    execute_migration,
    parse_mapping,
    plan_migration,
    validate_histories,
)


class Command(AuditedCommand):
    help = (
        "Move batches (or phases) from old states to new ones after the state machine changed. "
        "Dry run unless --execute. Batches get a transition with actor 'migration'; phases keep "
        "no history. --validate reports batch histories that are not allowed paths."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--map",
            dest="maps",
            action="append",
            default=[],
            metavar="OLD=NEW",
            help="move rows in state OLD to state NEW (repeatable)",
        )
        parser.add_argument("--state-field", choices=["batch", "phase"], default="batch")
        parser.add_argument("--execute", action="store_true", help="apply (default: dry run)")
        parser.add_argument("--reason", default="", help="reason recorded on each batch transition")
        parser.add_argument(
            "--validate",
            action="store_true",
            help="report batches whose history is not an allowed path under the current table",
        )
        parser.add_argument("--pipeline", help="only batches (or phases of batches) of this pipeline")
        parser.add_argument("--sample", type=int, default=5, help="ids shown per old state (default 5)")
        parser.add_argument("--page", type=int, default=500, help="rows per transaction (default 500)")

    def handle(self, *args: Any, **options: Any) -> None:
        self.require_platform()
        console = console_of(self, width=160)
        if not options["maps"] and not options["validate"]:
            raise CommandError("give --map OLD=NEW (repeatable), or --validate")
        if options["page"] < 1:
            raise CommandError("--page must be at least 1")
        state_field = options["state_field"]
        mapping: dict[str, str] = {}
        if options["maps"]:
            try:
                mapping = parse_mapping(options["maps"])
                plan = plan_migration(
                    mapping, state_field=state_field, pipeline=options["pipeline"], sample=options["sample"]
                )
            except StateMigrationError as exc:
                raise CommandError(str(exc)) from exc
            self._print_plan(console, plan, execute=options["execute"])
            if options["execute"] and plan.total:
                self._execute(console, plan, options)
        if options["validate"]:
            # Not executed yet (dry run): read the histories as they would be afterwards.
            pending = mapping if state_field == "batch" and not options["execute"] else None
            self._validate(console, pending, options["page"])

    def _print_plan(self, console: Console, plan: MigrationPlan, *, execute: bool) -> None:
        noun = "batch(es)" if plan.state_field == "batch" else "phase(s)"
        if not plan.total:
            console.print(f"nothing to change: no {noun} in {', '.join(plan.mapping)}")
            return
        verb = "to move" if execute else "would move (dry run)"
        table = Table(title=f"{plan.total} {noun} {verb}")
        for column in (
            "old state",
            "new state",
            "batches" if plan.state_field == "batch" else "phases",
            "sample",
        ):
            table.add_column(column)
        for old, new in plan.mapping.items():
            table.add_row(old, new, str(plan.counts[old]), "\n".join(plan.samples[old]))
        console.print(table)
        for old in plan.live:
            console.print(
                f"[yellow]warning:[/] {old} is a live state: workers may be moving these "
                f"{noun} now; migrate with the workers stopped"
            )
        if not execute:
            console.print("dry run: nothing changed; add --execute to apply")

    def _execute(self, console: Console, plan: MigrationPlan, options: dict[str, Any]) -> None:
        with progress_bar(console) as progress:
            task = progress.add_task(f"migrating {plan.state_field}s", total=plan.total)
            result = execute_migration(
                plan.mapping,
                state_field=plan.state_field,
                reason=options["reason"],
                pipeline=options["pipeline"],
                page=options["page"],
                progress=lambda n: progress.advance(task, n),
            )
        moved = ", ".join(f"{n} {old} → {plan.mapping[old]}" for old, n in result.moved.items() if n)
        if plan.state_field == "batch":
            console.print(
                f"moved {result.total} batch(es) ({moved or 'none'}); "
                f"appended {result.transitions} transition(s) by {MIGRATION!r}"
            )
        else:
            console.print(f"moved {result.total} phase(s) ({moved or 'none'})")

    def _validate(self, console: Console, pending: dict[str, str] | None, page: int) -> None:
        with progress_bar(console) as progress:
            task = progress.add_task("validating histories", total=None)
            report = validate_histories(
                mapping=pending, page=page, progress=lambda n: progress.advance(task, n)
            )
        preview = f" (as after {', '.join(f'{a}={b}' for a, b in pending.items())})" if pending else ""
        if not report.problems:
            console.print(
                f"{report.batches} batch histories checked{preview}: all are allowed paths "
                f"({report.migrated} with migration transitions)"
            )
            return
        table = Table(
            title=f"{len(report.problems)} of {report.batches} batch histories are not allowed paths{preview}"
        )
        table.add_column("batch", no_wrap=True)
        for column in ("state", "problem", "path (migrations read as renames)"):
            table.add_column(column)
        for problem in report.problems:
            table.add_row(str(problem.batch_id), problem.state, problem.detail, " → ".join(problem.path))
        console.print(table)
