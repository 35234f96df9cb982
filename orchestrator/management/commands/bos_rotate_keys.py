"""`manage.py bos_rotate_keys [--execute] [--batch-size N] [--as-user NAME]`: re-encrypt
what is stored under an older key (or not encrypted yet) with the newest key.

A dry run by default: it counts, per encrypted column, the values under the newest key,
under an older one, in plain JSON (rows from before encryption) and unreadable. With
`--execute` it rewrites the stale ones in batches, safe while the service runs, and writes
the audit record `keys.rotate`. The runbook: docs/encryption.md, "Rotating a key".
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError
from rich.console import Console
from rich.table import Table

from orchestrator import audit
from orchestrator.key_rotation import COLUMNS, Counts, process, values_count
from orchestrator.management.audited import AuditedCommand
from orchestrator.management.terminal import console_of, progress_bar


class Command(AuditedCommand):
    help = (
        "Re-encrypt stored payloads, results, metadata, reports and phase outputs with the newest "
        "key of BOS_ENCRYPTION_KEYS (and encrypt rows stored before encryption). Dry run unless --execute."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--execute", action="store_true", help="rewrite (default: dry run, counts and changes nothing)"
        )
        parser.add_argument(
            "--batch-size", type=int, default=500, metavar="N", help="rows per transaction (default 500)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        console = console_of(self, width=200)
        size, execute = options["batch_size"], options["execute"]
        if not 1 <= size <= 10_000:
            raise CommandError("--batch-size must be between 1 and 10000")
        self.require_platform()  # the keys protect every tenant's data
        counts: dict[str, Counts] = {}
        try:
            self._run(console, counts, execute=execute, size=size)
        except Exception as exc:  # noqa: BLE001 - recorded as an error, then raised
            if execute:
                detail = {"error": str(exc), **{label: c.as_dict() for label, c in counts.items()}}
                audit.record(
                    "keys.rotate",
                    outcome="error",
                    object_type="encryption_keys",
                    detail=detail,
                )
            raise CommandError(f"key rotation stopped: {exc}") from exc
        console.print(self._table(counts, execute))
        problems = self._problems(counts, execute)
        if execute:
            audit.record(
                "keys.rotate",
                outcome="error" if problems else "ok",
                object_type="encryption_keys",
                detail={label: c.as_dict() for label, c in counts.items()},
            )
        if problems:
            raise CommandError("; ".join(problems))
        if not execute:
            stale = sum(c.older + c.plaintext for c in counts.values())
            console.print(f"dry run: {stale} value(s) to re-encrypt; add --execute to rewrite them")
        else:
            console.print("done: every value is under the newest key")

    def _run(self, console: Console, counts: dict[str, Counts], *, execute: bool, size: int) -> None:
        with progress_bar(console) as progress:
            for column in COLUMNS:
                task = progress.add_task(
                    f"{'re-encrypting' if execute else 'checking'} {column.label}", total=values_count(column)
                )
                counts[column.label] = process(
                    column,
                    execute=execute,
                    size=size,
                    advance=lambda n, task=task: progress.advance(task, n),  # type: ignore[misc]
                )
                progress.update(task, completed=counts[column.label].values)

    @staticmethod
    def _table(counts: dict[str, Counts], execute: bool) -> Table:
        table = Table(title="re-encrypted" if execute else "stored values by key (dry run)")
        headers = ["column", "values", "newest key", "older key", "plain JSON", "unreadable"]
        if execute:
            headers += ["rewritten", "left"]
        for header in headers:
            table.add_column(header, justify="left" if header == "column" else "right")
        for label, c in counts.items():
            row = [label, c.values, c.newest, c.older, c.plaintext, c.unreadable]
            if execute:
                row += [c.rewritten, c.left]
            table.add_row(*(str(v) for v in row))
        return table

    @staticmethod
    def _problems(counts: dict[str, Counts], execute: bool) -> list[str]:
        problems = []
        unreadable = sum(c.unreadable for c in counts.values())
        if unreadable:
            problems.append(
                f"{unreadable} value(s) no key of BOS_ENCRYPTION_KEYS opens: "
                "put back the key they were written with"
            )
        left = sum(c.left for c in counts.values())
        if execute and left:
            problems.append(
                f"{left} value(s) are still under an older key (held by a writer, or written by a "
                "process that does not have the new key yet): give every process the new "
                "BOS_ENCRYPTION_KEYS, then run again"
            )
        return problems
