"""`manage.py events_replay (--batch ID | --since T [--until T]) [--type GLOB …] [--tenant SLUG]
[--to-topic TOPIC] [--include-unpublished] [--execute]`: publish stored events again.

A dry run by default: it lists what would be sent. See docs/events.md for the runbook.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.utils import timezone
from kafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

from orchestrator.access import Do
from orchestrator.kafka.clients import make_producer
from orchestrator.kafka.replay import (
    Plan,
    ReplayError,
    make_selection,
    plan_replay,
    prepare_replay_topics,
    replay,
)
from orchestrator.management.audited import AuditedCommand
from orchestrator.management.terminal import console_of, progress_bar
from orchestrator.models import Batch
from orchestrator.selectors import tenant_id_of


class Command(AuditedCommand):
    help = (
        "Publish stored outbox events again, marked with the header bos-replay: true (same key, "
        "same envelope and event_id). Select one batch (--batch) or the events stored in "
        "[--since, --until). Dry run unless --execute."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch", metavar="ID", help="every event of this batch (a batch id)")
        parser.add_argument(
            "--since",
            metavar="T",
            help="events stored at or after T (ISO 8601 with a zone, e.g. 2026-11-29T00:00Z)",
        )
        parser.add_argument("--until", metavar="T", help="events stored before T (default: now)")
        parser.add_argument(
            "--type",
            dest="types",
            action="append",
            default=[],
            metavar="GLOB",
            help="only events whose type matches, e.g. 'batch.phase_*' (repeatable)",
        )
        parser.add_argument("--tenant", metavar="SLUG", help="only this tenant's events")
        parser.add_argument(
            "--to-topic",
            metavar="TOPIC",
            help="send every event here (default: its routed topic, BOS_EVENT_ROUTES)",
        )
        parser.add_argument(
            "--include-unpublished",
            action="store_true",
            help="also events the outbox publisher has not sent yet (it will still send them too)",
        )
        parser.add_argument("--execute", action="store_true", help="send (default: dry run, sends nothing)")
        parser.add_argument(
            "--show", type=int, default=50, metavar="N", help="events listed (default 50; 0: all)"
        )

    def _require_role(self, options: dict[str, Any]) -> None:
        """Replaying a tenant's events needs its operator role; every tenant's, a superuser."""
        if options["tenant"]:
            tenant_id = tenant_id_of(options["tenant"])
            self.require(Do.OPERATE, tenant_id)
        elif options["batch"]:
            try:
                found = Batch.objects.filter(id=options["batch"]).values_list("tenant_id", flat=True).first()
            except (ValueError, ValidationError):  # not an id: make_selection says so
                found = None
            self.require(Do.OPERATE, found)
        else:
            self.require_platform()

    def handle(self, *args: Any, **options: Any) -> None:
        console = console_of(self, width=200)
        if options["show"] < 0:
            raise CommandError("--show must be 0 (all) or more")
        self._require_role(options)
        try:
            selection = make_selection(
                batch=options["batch"],
                since=options["since"],
                until=options["until"],
                now=timezone.now(),
                types=options["types"],
                tenant=options["tenant"],
                include_unpublished=options["include_unpublished"],
            )
            plan = plan_replay(selection, to_topic=options["to_topic"])
        except ReplayError as exc:
            raise CommandError(str(exc)) from exc
        console.print(f"{plan.total} event(s): {selection.describe()}")
        if not options["execute"]:
            self._list(console, plan, options["show"] or None)
            console.print(f"would send {self._per_topic(plan.per_topic)}")
            console.print("dry run: nothing sent; add --execute to send")
            return
        self._execute(console, plan)

    def _list(self, console: Console, plan: Plan, show: int | None) -> None:
        table = Table(
            title=f"events to replay{'' if show is None or show >= plan.total else f' (first {show})'}"
        )
        for column in ("id", "occurred_at", "batch", "type", "topic"):
            table.add_column(column, no_wrap=True)
        for row in plan.rows(limit=show):
            table.add_row(
                str(row.id),
                str(row.envelope.get("occurred_at", "")),
                str(row.batch_id or ""),
                row.event_type,
                plan.topic(row.event_type, row.envelope.get("tenant")),
            )
        console.print(table)
        if show is not None and plan.total > show:
            console.print(f"… and {plan.total - show} more (--show 0 lists all)")

    def _execute(self, console: Console, plan: Plan) -> None:
        replay_id = str(uuid.uuid4())
        try:
            compression = settings.BOS_KAFKA_COMPRESSION
            producer = make_producer(
                acks="all",
                compression_type=None if compression == "none" else compression,
                client_id="bos-replay",
            )
        except KafkaError as exc:
            raise CommandError(
                f"no Kafka broker reachable at {','.join(settings.KAFKA_BOOTSTRAP_SERVERS)}: {exc!r}"
            ) from exc
        try:
            prepare_replay_topics(plan)
            with progress_bar(console) as progress:
                task = progress.add_task(f"replaying ({replay_id})", total=plan.total)
                result = replay(
                    plan,
                    producer=producer,
                    replay_id=replay_id,
                    replayed_at=timezone.now(),
                    progress=lambda n: progress.advance(task, n),
                )
        except ReplayError as exc:
            raise CommandError(f"replay {replay_id} failed: {exc}") from exc
        finally:
            producer.close(timeout=10)
        console.print(
            f"replayed {result.total} event(s), acknowledged by the broker: {self._per_topic(result.per_topic)} "
            f"(bos-replay-id {replay_id})"
        )

    @staticmethod
    def _per_topic(counts: Any) -> str:
        return ", ".join(f"{n} → {topic}" for topic, n in sorted(counts.items()))
