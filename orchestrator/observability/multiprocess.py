"""The folder where every BOS process on a machine keeps its metric values, and its upkeep.

prometheus_client's multiprocess mode: each process writes its counters, histograms and
gauges to memory-mapped files `<type>_<pid>.db` in one folder (`BOS_METRICS_DIR`, exported
as `PROMETHEUS_MULTIPROC_DIR`), and a scrape adds them up (`LockedMultiProcessCollector`).
What this module adds to the library:

- `activate(path)` makes the process write there (also when prometheus_client was imported
  before the variable was set) and registers the process (`procs/<pid>`, with its start
  time, so a reused pid is not taken for a live process). A forked child (Celery prefork,
  gunicorn) registers itself right after the fork.
- Several processes starting at once: all of it happens under an exclusive lock on
  `.lock` (`lockf`). The first process to find no live registered process wipes the folder (values
  left by an earlier run); every other one joins.
- Processes that end: `leave()` at exit, `reap()` for those that died without it (at
  every start and every scrape). A dead process's live gauges go (`mark_process_dead`)
  and its counters and histograms are added into `counter_archive.db` /
  `histogram_archive.db`, so totals never go down and the folder does not grow with
  every short-lived process. Scrapes read under a shared lock, so no scrape sees a value
  both in the archive and in the file it came from.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import glob
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import mmap_dict, values
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.registry import Collector

# prometheus_client's multiprocess helpers carry no type hints.
MmapedDict: Any = mmap_dict.MmapedDict
MultiProcessCollector: Any = prometheus_multiprocess.MultiProcessCollector
mark_process_dead: Any = prometheus_multiprocess.mark_process_dead
_values: Any = values

logger = logging.getLogger(__name__)

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
LOCK_FILE = ".lock"
PROCS = "procs"
ARCHIVE = "archive"
# Value files whose totals outlive their process (added into the archive when it dies).
CUMULATIVE = ("counter", "histogram")
_FILE = re.compile(r"^(?P<prefix>.+)_(?P<pid>\d+)\.db$")

_state: dict[str, Any] = {"path": None, "pid": None}


class _ThreadLock:
    """Threads of one process take turns for the folder's lock (POSIX locks are per process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


_threads = _ThreadLock()


@contextlib.contextmanager
def locked(path: Path, *, exclusive: bool = True) -> Iterator[None]:
    """The folder's lock: exclusive for changes, shared for reading the values.

    A POSIX record lock (`lockf`), not `flock`: a process forked while holding it (a
    prefork child made while a thread scrapes) does not inherit it, so it cannot keep
    the folder locked after its parent let go.
    """
    with _threads.lock, open(path / LOCK_FILE, "a+") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def _start_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def registered(path: Path) -> dict[int, float]:
    """pid → start time of each registered process."""
    found = {}
    for entry in (path / PROCS).glob("*"):
        try:
            found[int(entry.name)] = float(entry.read_text() or 0)
        except (ValueError, OSError):
            continue
    return found


def _alive(pid: int, started: float | None) -> bool:
    now = _start_time(pid)
    if now is None:
        return False
    # A process of the same pid that started later is another one (the pid was reused).
    return started is None or abs(now - started) < 1.0


def _pids_with_files(path: Path) -> set[int]:
    pids = set()
    for name in os.listdir(path):
        match = _FILE.match(name)
        if match:
            pids.add(int(match["pid"]))
    return pids


def dead_processes(path: Path) -> set[int]:
    """Processes with registered entries or value files that no longer run."""
    known = registered(path)
    candidates = set(known) | _pids_with_files(path)
    return {pid for pid in candidates if pid != os.getpid() and not _alive(pid, known.get(pid))}


def _archive(path: Path, pid: int) -> None:
    """Add a dead process's counters and histograms into the archive files."""
    for kind in CUMULATIVE:
        source = path / f"{kind}_{pid}.db"
        if not source.exists():
            continue
        archive = MmapedDict(str(path / f"{kind}_{ARCHIVE}.db"))
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(source)):
                current, _ = archive.read_value(key)
                archive.write_value(key, current + value, timestamp)
        finally:
            archive.close()
        source.unlink()


def _forget(path: Path, pid: int) -> None:
    _archive(path, pid)
    mark_process_dead(pid, str(path))
    for leftover in glob.glob(str(path / f"*_{pid}.db")):  # gauges of other modes
        os.remove(leftover)
    with contextlib.suppress(FileNotFoundError):
        (path / PROCS / str(pid)).unlink()


def reap(path: Path, pids: Iterable[int] | None = None) -> list[int]:
    """Forget processes that died (all found dead, or just `pids`); which were."""
    if not path.is_dir():
        return []
    with locked(path):
        dead = sorted(dead_processes(path) if pids is None else set(pids))
        for pid in dead:
            _forget(path, pid)
    return dead


def _wipe(path: Path) -> None:
    for entry in path.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def join(path: Path) -> None:
    """Register this process; the first of a run wipes what an earlier run left."""
    path.mkdir(parents=True, exist_ok=True)
    with locked(path):
        (path / PROCS).mkdir(exist_ok=True)
        known = registered(path)
        alive = [pid for pid, started in known.items() if pid != os.getpid() and _alive(pid, started)]
        if not alive:
            _wipe(path)
        else:
            for pid in dead_processes(path):
                _forget(path, pid)
        (path / PROCS).mkdir(exist_ok=True)
        (path / PROCS / str(os.getpid())).write_text(repr(_start_time(os.getpid()) or 0.0))
    _state["pid"] = os.getpid()


def leave() -> None:
    """This process ends: its live gauges go, its totals move to the archive."""
    path = _state["path"]
    if path is None or _state["pid"] != os.getpid() or not path.is_dir():
        return
    with contextlib.suppress(OSError), locked(path):
        _forget(path, os.getpid())
    _state["pid"] = None


def _after_fork() -> None:
    # The thread lock may have been held by a thread that does not exist in the child.
    _threads.lock = threading.Lock()
    if _state["path"] is not None:
        join(_state["path"])


def activate(path: Path) -> None:
    """Make this process keep its metric values in `path` (once per process)."""
    path = path.resolve()
    if _state["path"] == path and _state["pid"] == os.getpid():
        return
    first = _state["path"] is None
    _state["path"] = path
    os.environ[ENV_VAR] = str(path)
    if not getattr(_values.ValueClass, "_multiprocess", False):
        # prometheus_client picks its value class at import, from the variable set just now.
        _values.ValueClass = _values.MultiProcessValue()
    join(path)
    if first:
        atexit.register(leave)
        os.register_at_fork(after_in_child=_after_fork)


def active_path() -> Path | None:
    path: Path | None = _state["path"]
    return path


class LockedMultiProcessCollector(Collector):
    """prometheus_client's MultiProcessCollector, reading under the folder's shared lock
    after forgetting dead processes (so their gauges stop counting as live)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inner = MultiProcessCollector(None, path=str(path))

    def collect(self) -> Iterable[Any]:
        if not self.path.is_dir():
            return []
        reap(self.path)
        with locked(self.path, exclusive=False):
            return list(self._inner.collect())
