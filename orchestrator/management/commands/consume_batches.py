"""`manage.py consume_batches`: the Kafka consumer of batch requests (only the loop)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from orchestrator.kafka.consumer import BatchRequestConsumer
from orchestrator.management.commands._loop import ShutdownFlag


class Command(BaseCommand):
    help = "Consume batch requests from Kafka until SIGTERM (then commit and stop)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--topic", default=None)
        parser.add_argument("--group", default=None)
        parser.add_argument("--session-timeout-ms", type=int, default=10_000)

    def handle(self, *args: Any, **options: Any) -> None:
        stop = ShutdownFlag()
        stop.install()
        consumer = BatchRequestConsumer(
            topic=options["topic"],
            group_id=options["group"],
            session_timeout_ms=options["session_timeout_ms"],
            should_stop=stop,
        )
        try:
            while not stop():
                consumer.poll_once()
        finally:
            consumer.close()
            self.stdout.write("consumer stopped; offsets committed")
