"""`manage.py scoring_service --port N`: the demo's scoring service (the Procfile's `scoring`).

`manage.py` starts it before Django is set up (it needs none of Django, and starts in
a few tens of milliseconds instead of a second and more); this command is what
`manage.py help` lists, and what runs it when called through Django (`call_command`).
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from orchestrator.service_clients.scoring_service import main


class Command(BaseCommand):
    help = "Run the demo's scoring service (GET /healthz, GET /model, POST /score)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8010)
        parser.add_argument("--fail-rate", type=float, default=0.0)
        parser.add_argument("--latency-ms", type=float, default=0.0)
        parser.add_argument("--quiet", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        argv = [
            "--host", options["host"],
            "--port", str(options["port"]),
            "--fail-rate", str(options["fail_rate"]),
            "--latency-ms", str(options["latency_ms"]),
        ] + (["--quiet"] if options["quiet"] else [])  # fmt: skip
        if main(argv) != 0:
            raise CommandError("the scoring service could not start")
        sys.stdout.flush()
