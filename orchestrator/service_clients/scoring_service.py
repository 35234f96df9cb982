"""The demo's scoring service: a tiny HTTP service that phase handlers call.

Started as its own process (`python manage.py scoring_service --port 8010`, the
`scoring` line of the Procfile). Standard library only, and never imports Django, so it
starts in a few tens of milliseconds.

- `GET /healthz` → `{"status": "ok", "requests": {...}}` (requests served, per route)
- `GET /model` → the model's description; `Cache-Control: max-age=60`
- `POST /score` `{"text": "…"}` → `{"score": 0.0–1.0, "model": "demo-1"}`, the same score
  for the same text: vocabulary richness, sentence length and length, plus a little
  hash-derived spread so that similar texts do not tie.

Bad input is a 4xx with `{"code", "message"}`. For demonstrations, `--fail-rate` makes
that share of `/score` calls answer 503 and `--latency-ms` slows every answer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = {"model": "demo-1", "version": "2026.11", "pass_mark": 0.5, "range": [0.0, 1.0]}
MAX_BODY = 1024 * 1024
WORD = re.compile(r"[A-Za-z']+")
SENTENCE = re.compile(r"[.!?]+")


def score_text(text: str) -> float:
    """A deterministic score in [0, 1] for `text`."""
    words = [w.lower() for w in WORD.findall(text)]
    if not words:
        return 0.0
    richness = len(set(words)) / len(words)
    sentences = max(1, len([s for s in SENTENCE.split(text) if s.strip()]))
    per_sentence = len(words) / sentences
    # Sentences of 12 to 22 words read best; longer or shorter lose points.
    flow = max(0.0, 1.0 - abs(per_sentence - 17) / 17)
    length = min(1.0, len(words) / 120)
    spread = int.from_bytes(hashlib.sha256(text.encode()).digest()[:2], "big") / 65535
    return round(0.4 * richness + 0.3 * flow + 0.2 * length + 0.1 * spread, 4)


class ScoringHandler(BaseHTTPRequestHandler):
    server: ScoringServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without this, Nagle's algorithm and the
    # client's delayed ACK add 40 ms to every answer.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        if self.path == "/healthz":
            self._send(200, {"status": "ok", "requests": dict(self.server.served)})
        elif self.path == "/model":
            self._send(200, MODEL, {"Cache-Control": "max-age=60"})
        else:
            self._send(404, {"code": "not_found", "message": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY:
            # The body is not read: the connection cannot be used for another request.
            self.close_connection = True
            if not length.isdigit():
                self._send(411, {"code": "length_required", "message": "Content-Length is required"})
            else:
                self._send(413, {"code": "too_large", "message": f"the body is over {MAX_BODY} bytes"})
            return
        raw = self.rfile.read(int(length))
        if self.path != "/score":
            self._send(404, {"code": "not_found", "message": f"no route {self.path}"})
            return
        if self.server.fail_rate and self.server.random.random() < self.server.fail_rate:
            self._send(503, {"code": "unavailable", "message": "injected failure (--fail-rate)"})
            return
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._send(400, {"code": "invalid_json", "message": "the body must be JSON"})
            return
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str):
            self._send(422, {"code": "invalid_text", "message": "`text` must be a string"})
            return
        self._send(200, {"score": score_text(text), "model": MODEL["model"]})

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        if self.server.latency:
            time.sleep(self.server.latency)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        with self.server.lock:
            self.server.served[self.path] += 1

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if not self.server.quiet:
            sys.stderr.write(f"scoring {self.address_string()} {format % args}\n")


class ScoringServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        fail_rate: float = 0.0,
        latency_ms: float = 0.0,
        quiet: bool = False,
    ) -> None:
        super().__init__(address, ScoringHandler)
        self.fail_rate, self.latency, self.quiet = fail_rate, latency_ms / 1000, quiet
        self.random = random.Random()
        self.served: Counter[str] = Counter()
        self.lock = threading.Lock()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scoring_service", description="The demo's scoring service.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="share of /score calls answered 503 (demos)"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer (demos)")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    args = parser.parse_args(argv)
    if not 0 <= args.fail_rate <= 1:
        parser.error("--fail-rate must be between 0 and 1")
    if not 0 < args.port < 65536:
        parser.error("--port must be between 1 and 65535")
    try:
        server = ScoringServer(
            (args.host, args.port), fail_rate=args.fail_rate, latency_ms=args.latency_ms, quiet=args.quiet
        )
    except OSError as exc:
        print(f"scoring_service: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"scoring service listening on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
