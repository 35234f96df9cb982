"""`manage.py bos_backtest [--seed N] [--scale K]`: score the detectors on synthetic traces.

Prints one table (rich) of precision, recall and lead time per detector; see
orchestrator/insights/backtest.py for the traces and docs/anomalies.md for the results.
"""

from __future__ import annotations

import io
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from rich.console import Console
from rich.table import Table

from orchestrator.insights.backtest import run_all


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} s"


class Command(BaseCommand):
    help = "Back-test the anomaly detector and the forecasts on seeded synthetic traces."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=7, help="RNG seed (default 7).")
        parser.add_argument("--scale", type=int, default=1, help="Traces multiplier (default 1).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["scale"] < 1:
            self.stderr.write("--scale must be at least 1")
            raise SystemExit(2)
        scores = run_all(seed=options["seed"], scale=options["scale"])
        table = Table(title=f"BOS detector back-test (seed {options['seed']}, scale {options['scale']})")
        for column in ("detector", "traces", "faults", "caught", "alerts", "false", "precision", "recall"):
            table.add_column(column, justify="left" if column == "detector" else "right")
        table.add_column("lead p50", justify="right")
        table.add_column("lead p10", justify="right")
        for s in scores:
            table.add_row(
                s.name,
                str(s.traces),
                str(s.faults),
                str(s.hits),
                str(s.alarms),
                str(s.false_alarms),
                f"{s.precision:.2f}",
                f"{s.recall:.2f}",
                _seconds(s.lead(0.5)),
                _seconds(s.lead(0.1)),
            )
        console = Console(width=120, record=True, file=io.StringIO())
        console.print(table)
        self.stdout.write(console.export_text())
