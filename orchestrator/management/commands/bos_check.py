"""`manage.py bos_check [--repair]`: validates stored batches; with --repair fixes what it safely can."""

from __future__ import annotations

from typing import IO, Any, cast

from django.core.management.base import CommandError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from orchestrator.management.audited import AuditedCommand
from orchestrator.services.consistency import check_batches


class Command(AuditedCommand):
    help = (
        "Check every batch: counts match items, phase progress matches chunk records, transitions "
        "form a valid path, every transition has its event, no running phase without live work. "
        "--repair rebuilds counters (from items, chunk records, or the last snapshot) and re-sends lost work."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--repair", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        self.require_platform()
        console = Console(file=cast(IO[str], self.stdout._out))  # the stream behind Django's wrapper
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("checking batches", total=None)
            report = check_batches(
                repair=options["repair"],
                progress=lambda n: progress.advance(task, n),
            )
        if report.problems:
            table = Table(title=f"{len(report.problems)} problem(s) in {report.batches} batches")
            for column in ("batch", "check", "detail", "repaired"):
                table.add_column(column)
            repaired = set(map(id, report.repaired))
            for problem in report.problems:
                table.add_row(
                    str(problem.batch_id),
                    problem.check,
                    problem.detail,
                    "yes" if id(problem) in repaired else "",
                )
            console.print(table)
        else:
            console.print(f"{report.batches} batches checked: consistent")
        if set(map(id, report.problems)) - set(map(id, report.repaired)):
            raise CommandError("inconsistencies remain")
