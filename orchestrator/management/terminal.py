"""What the management commands print with: a rich console on the command's stdout and the
progress bar of long work."""

from __future__ import annotations

from typing import IO, cast

from django.core.management.base import BaseCommand
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def console_of(command: BaseCommand, *, width: int) -> Console:
    """A console on the stream behind Django's stdout wrapper: the terminal's width on a
    terminal, `width` when piped or captured (wide enough that ids and flags are never cut)."""
    stream = cast(IO[str], command.stdout._out)
    return Console(file=stream, width=None if stream.isatty() else width, highlight=False)


def progress_bar(console: Console) -> Progress:
    """A bar per task with done/total and the time left, gone when the work ends."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
