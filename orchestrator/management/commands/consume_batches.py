"""`manage.py consume_batches`: the Kafka consumer of batch requests (only the loop)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orchestrator.kafka.consumer import BatchRequestConsumer
from orchestrator.kafka.health import ConsumerHealth
from orchestrator.kafka.startup import StartupError
from orchestrator.management.commands._loop import ShutdownFlag
from orchestrator.observability import tracing
from orchestrator.observability.metrics import start_process_metrics


class Command(BaseCommand):
    help = (
        "Consume batch requests from Kafka until SIGTERM (then commit and stop). "
        "Waits for the broker, checks the topics, then joins the group (docs/kafka.md)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--topic", default=None)
        parser.add_argument("--group", default=None)
        parser.add_argument("--session-timeout-ms", type=int, default=10_000)
        parser.add_argument(
            "--health-port", type=int, default=None, help="serve /readyz and /healthz on 127.0.0.1:PORT"
        )
        parser.add_argument("--health-file", default=None, help="where to write the health snapshot")

    def handle(self, *args: Any, **options: Any) -> None:
        tracing.setup("consumer")
        try:
            self._consume(**options)
        finally:
            tracing.shutdown()

    def _consume(self, **options: Any) -> None:
        stop = ShutdownFlag()
        stop.install()
        start_process_metrics("consumer")
        health = ConsumerHealth(
            group=options["group"] or settings.BOS_CONSUMER_GROUP,
            topic=options["topic"] or settings.BOS_TOPIC_REQUESTS,
            path=options["health_file"],
            port=options["health_port"],
        )
        try:
            consumer = BatchRequestConsumer(
                topic=options["topic"],
                group_id=options["group"],
                session_timeout_ms=options["session_timeout_ms"],
                should_stop=stop,
                health=health,
            )
        except StartupError as exc:
            health.stopped()
            raise CommandError(f"Kafka consumer start-up failed at step {exc.step}: {exc.message}") from exc
        except Exception:
            health.stopped()
            if stop():
                return  # stopped while still waiting for the broker
            raise
        try:
            while not stop():
                consumer.poll_once()
        finally:
            consumer.close()
            self.stdout.write("consumer stopped; offsets committed")
