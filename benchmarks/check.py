"""`python -m benchmarks.check` (`make bench-check`): the latest benchmark ratios beside
the committed baseline; exits 1 when a ratio regressed by more than 25 %.

`--update` writes the latest ratios as the new baseline (commit it with the change that
moved them, and say why in the commit).
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from benchmarks.results import BASELINE, TOLERANCE, compare, read_baseline, read_results, results_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--update", action="store_true", help="write the latest ratios as the baseline")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="relative regression allowed")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 120))
    latest = read_results()
    if not latest:
        console.print(
            f"no benchmark results at {results_path()}: run `make bench` (and `make bench-ingest`) first"
        )
        return 2
    if args.update:
        BASELINE.write_text(json.dumps(latest, indent=2, sort_keys=True) + "\n")
        console.print(f"baseline updated: {BASELINE}")
        return 0
    verdicts = compare(read_baseline(), latest, tolerance=args.tolerance)
    table = Table(
        title=f"benchmark ratios against {BASELINE.name} (regression: worse by > {args.tolerance:.0%})"
    )
    for column in ("ratio", "better", "baseline", "this run", "change"):
        table.add_column(column, justify="left" if column in ("ratio", "better") else "right", no_wrap=True)
    for v in verdicts:
        change = f"[red]{v.note}[/]" if v.regressed else v.note
        table.add_row(
            v.name,
            v.better,
            "–" if v.baseline is None else f"{v.baseline:.3f}",
            "–" if v.value is None else f"{v.value:.3f}",
            change,
        )
    console.print(table)
    regressed = [v.name for v in verdicts if v.regressed]
    if regressed:
        console.print(f"[red]regressed:[/] {', '.join(regressed)}")
        return 1
    console.print("[green]no ratio regressed[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
