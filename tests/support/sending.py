"""A sender that holds what the engine sends, instead of handing it to Celery."""

from __future__ import annotations

from typing import Any

from orchestrator.workflows import Sender


class HeldSender(Sender):
    """Keeps every task sent while `holding` (as when no worker is up); `lose()` drops
    them, as a broker that lost its messages, and lets what is sent next go through."""

    def __init__(self) -> None:
        self.held: list[Any] = []
        self.holding = True

    def send(self, work: Any) -> None:
        if self.holding:
            self.held.append(work)
        else:
            super().send(work)

    def lose(self) -> None:
        self.held.clear()
        self.holding = False


class BrokenSender(Sender):
    """A broker that refuses every send with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.refused = 0

    def send(self, work: Any) -> None:
        self.refused += 1
        raise self.error
