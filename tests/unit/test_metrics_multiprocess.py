"""The machine's metrics folder: processes that start together, end, die or reuse a pid.

Each scenario runs real Python processes (no database) that write into a folder of the
test's own, then reads it as a scrape does (LockedMultiProcessCollector).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bos_project.settings.environment import BASE_DIR
from orchestrator.observability import multiprocess

pytestmark = pytest.mark.unit

# A process that activates the folder, counts `count` and holds a live gauge at 1, then
# waits for a line on stdin ("exit": normal exit; nothing: killed by the test).
WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from orchestrator.observability import multiprocess
    multiprocess.activate(Path(sys.argv[1]))
    from prometheus_client import Counter, Gauge, Histogram
    Counter("t_events", "events").inc(int(sys.argv[2]))
    Histogram("t_seconds", "seconds", buckets=(1, 10)).observe(0.5)
    Gauge("t_live", "live processes", multiprocess_mode="livesum").set(1)
    print("ready", flush=True)
    sys.stdin.readline()
    """
)


# A process that forks a child (as Celery prefork and gunicorn do): the child counts on
# its own, reports its pid, and ends with os._exit (no atexit, as a prefork child ends).
FORKING = WRITER.replace(
    'print("ready", flush=True)',
    textwrap.dedent(
        """
        import os
        child = os.fork()
        if child == 0:
            Counter("t_forked", "events of the child").inc(5)
            os._exit(0)
        os.waitpid(child, 0)
        print(child, flush=True)
        print("ready", flush=True)
        """
    ),
)


def start_writer(folder: Path, count: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder), str(count)],
        cwd=BASE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def end(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("exit\n")
    proc.stdin.flush()
    assert proc.wait(timeout=30) == 0


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def scrape(folder: Path) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(multiprocess.LockedMultiProcessCollector(folder))
    text = generate_latest(registry).decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels or sample.labels.get("le") == "+Inf"
    }


def test_processes_started_together_each_keep_their_values(tmp_path: Path) -> None:
    writers = [start_writer(tmp_path, count) for count in (1, 2, 3, 4)]
    try:
        seen = scrape(tmp_path)
        assert seen["t_events_total"] == 10
        assert seen["t_live"] == 4
        assert seen["t_seconds_count"] == 4
        assert set(multiprocess.registered(tmp_path)) == {w.pid for w in writers}
    finally:
        for writer in writers:
            end(writer)


def test_a_process_that_ends_leaves_its_totals_and_takes_its_live_gauges(tmp_path: Path) -> None:
    stays, leaves = start_writer(tmp_path, 5), start_writer(tmp_path, 7)
    end(leaves)

    seen = scrape(tmp_path)
    assert seen["t_events_total"] == 12  # counters never go down
    assert seen["t_seconds_count"] == 2
    assert seen["t_live"] == 1
    assert not list(tmp_path.glob(f"*_{leaves.pid}.db"))  # moved into the archive
    assert (tmp_path / "counter_archive.db").exists()
    end(stays)


def test_a_killed_process_is_reaped_at_the_next_scrape(tmp_path: Path) -> None:
    stays, dies = start_writer(tmp_path, 1), start_writer(tmp_path, 2)
    kill(dies)
    assert dies.pid in multiprocess.registered(tmp_path)

    seen = scrape(tmp_path)
    assert seen["t_live"] == 1
    assert seen["t_events_total"] == 3
    assert dies.pid not in multiprocess.registered(tmp_path)
    assert scrape(tmp_path)["t_events_total"] == 3  # archived once, not twice
    end(stays)


def test_the_first_process_of_a_new_run_wipes_what_the_last_run_left(tmp_path: Path) -> None:
    end(start_writer(tmp_path, 9))
    assert scrape(tmp_path)["t_events_total"] == 9

    fresh = start_writer(tmp_path, 1)
    assert scrape(tmp_path)["t_events_total"] == 1
    end(fresh)


def test_a_reused_pid_is_not_taken_for_a_live_process(tmp_path: Path) -> None:
    stays = start_writer(tmp_path, 1)
    # Registered with another start time: the process of that pid is not the one that wrote.
    (tmp_path / multiprocess.PROCS / str(stays.pid)).write_text("12345.0")
    assert stays.pid in multiprocess.dead_processes(tmp_path)
    (tmp_path / multiprocess.PROCS / str(os.getpid())).write_text("0")
    assert os.getpid() not in multiprocess.dead_processes(tmp_path)  # never this process itself
    end(stays)


def test_a_forked_child_registers_itself_and_its_counts_outlive_it(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", FORKING, str(tmp_path), "1"],
        cwd=BASE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "ready"
    assert child in multiprocess.registered(tmp_path)  # registered right after the fork

    seen = scrape(tmp_path)  # the child has ended: reaped, its counts archived
    assert seen["t_forked_total"] == 5
    assert seen["t_events_total"] == 1
    assert seen["t_live"] == 1
    assert child not in multiprocess.registered(tmp_path)
    end(parent)


def test_labels_beyond_the_cap_count_as_other() -> None:
    from orchestrator.observability.metrics import OTHER, UNKNOWN, BoundedLabel

    tenants = BoundedLabel(2)
    assert [tenants(t) for t in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]
    assert tenants(None) == OTHER  # the cap is full: `unknown` would be a third value
    assert BoundedLabel(5)("") == UNKNOWN


def test_a_metric_that_cannot_be_recorded_is_logged_and_the_work_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from orchestrator.observability.metrics import never_raises

    @never_raises
    def record_on_a_full_disk(value: int) -> None:
        raise OSError(28, "No space left on device")

    record_on_a_full_disk(1)
    assert "metric not recorded by record_on_a_full_disk" in caplog.text
