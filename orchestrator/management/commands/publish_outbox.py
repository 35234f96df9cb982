"""`manage.py publish_outbox`: publishes outbox events to Kafka until SIGTERM."""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand

from orchestrator.kafka.publisher import OutboxPublisher
from orchestrator.management.commands._loop import ShutdownFlag
from orchestrator.observability import tracing
from orchestrator.observability.metrics import start_process_metrics

logger = logging.getLogger("orchestrator.kafka.publisher")


class Command(BaseCommand):
    help = "Publish committed outbox events to the events topic, in order."

    def handle(self, *args: Any, **options: Any) -> None:
        stop = ShutdownFlag()
        stop.install()
        start_process_metrics("publisher")
        tracing.setup("publisher")
        try:
            publisher = OutboxPublisher(should_stop=stop)
            logger.info("outbox publisher running (SIGTERM stops it after the round in hand)")
            try:
                publisher.run()
            finally:
                publisher.close()
        finally:
            tracing.shutdown()
