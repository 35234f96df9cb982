"""Real HTTP servers for service-client tests: a scripted flaky one, and the demo's
scoring service as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from bos_project.settings.environment import BASE_DIR


@dataclass(frozen=True)
class Answer:
    """What the flaky server answers: a status (and body, headers), after `delay` seconds."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FlakyServer(ThreadingHTTPServer):
    """Answers each request with the next scripted `Answer` (then `default`); records all."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FlakyHandler)
        self.script: deque[Answer] = deque()
        self.default = Answer()
        self.seen: list[Seen] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, *answers: Answer | int) -> None:
        with self.lock:
            self.script.extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    def next_answer(self, seen: Seen) -> Answer:
        with self.lock:
            self.seen.append(seen)
            return self.script.popleft() if self.script else self.default

    def requests_to(self, path: str) -> int:
        with self.lock:
            return sum(1 for s in self.seen if s.path.split("?")[0] == path)


class _FlakyHandler(BaseHTTPRequestHandler):
    server: FlakyServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without this, Nagle's algorithm and the
    # client's delayed ACK add 40 ms to every answer.
    disable_nagle_algorithm = True

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server.next_answer(Seen(self.command, self.path, dict(self.headers), body))
        time.sleep(answer.delay)
        data = json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout test)

    do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815 - the http.server interface

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextmanager
def flaky_server() -> Iterator[FlakyServer]:
    server = FlakyServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def scoring_service(port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`manage.py scoring_service` on `port`, as the Procfile runs it; up when this yields."""
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "scoring_service", "--port", str(port), "--quiet", *extra],
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _, err = proc.communicate()
                raise RuntimeError(f"the scoring service did not start: {err.decode(errors='replace')}")
            time.sleep(0.02)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
