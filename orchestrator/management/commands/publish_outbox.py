"""`manage.py publish_outbox`: publishes outbox events to Kafka until SIGTERM."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from orchestrator.kafka.publisher import OutboxPublisher
from orchestrator.management.commands._loop import ShutdownFlag
from orchestrator.observability import tracing


class Command(BaseCommand):
    help = "Publish committed outbox events to the events topic, in order."

    def handle(self, *args: Any, **options: Any) -> None:
        stop = ShutdownFlag()
        stop.install()
        tracing.setup("publisher")
        try:
            publisher = OutboxPublisher(should_stop=stop)
            try:
                publisher.run()
            finally:
                publisher.close()
        finally:
            tracing.shutdown()
