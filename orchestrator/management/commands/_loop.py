"""Shared by the long-running commands: a shutdown flag that SIGTERM and SIGINT set."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class ShutdownFlag:
    """Set by SIGTERM/SIGINT; the loop finishes the work in hand, then stops."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum: int, frame: FrameType | None) -> None:
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()
