"""`manage.py kafka_groups lag|describe|copy-offsets|reset-offsets|export|import`: consumer
group lag and moving a group's committed offsets (docs/consumer-groups.md).

Commands that change offsets print their plan (current → new per partition) and change
nothing unless `--execute` is given; they are refused (exit code 2) while the target
group has live members.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from kafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

from orchestrator.kafka.groups import (
    Broker,
    GroupDescription,
    GroupError,
    LiveMembers,
    OffsetPlan,
    TopicLag,
    apply_plan,
    bar,
    export_offsets,
    group_topics,
    plan_copy,
    plan_import,
    plan_reset,
    read_export,
    topic_lag,
)

REPORT_WIDTH = 120
REFUSED = 2  # exit code when the group has live members


def _datetime(value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CommandError(f"--to-datetime: not an ISO 8601 time: {value!r}") from exc
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Consumer group lag and description; copy, reset, export and import a group's offsets."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        def sub(name: str, help_text: str) -> CommandParser:
            p: CommandParser = actions.add_parser(name, help=help_text, description=help_text)
            p.add_argument(
                "--timeout",
                type=float,
                default=10.0,
                help="seconds to wait for each broker request (default 10)",
            )
            return p

        group_help = "consumer group (default BOS_CONSUMER_GROUP)"
        topic_help = "topic (default BOS_TOPIC_REQUESTS)"

        lag = sub("lag", "lag per partition and in total")
        lag.add_argument("--group", help=group_help)
        lag.add_argument("--topic", help=topic_help)
        lag.add_argument("--json", action="store_true", help="print JSON")

        describe = sub("describe", "the group's state, members, and lag on every topic it committed")
        describe.add_argument("--group", help=group_help)
        describe.add_argument("--json", action="store_true", help="print JSON")

        copy = sub("copy-offsets", "make a group's committed offsets equal to another's")
        copy.add_argument(
            "--from", dest="source", required=True, metavar="GROUP", help="the group to copy from"
        )
        copy.add_argument("--to", dest="target", required=True, metavar="GROUP", help="the group to set")
        copy.add_argument("--topic", help="only this topic (default: every topic the source committed)")
        copy.add_argument("--execute", action="store_true", help="apply (default: only print the plan)")

        reset = sub("reset-offsets", "move a group's offsets on a topic to its start, its end or a time")
        reset.add_argument("--group", help=group_help)
        reset.add_argument("--topic", help=topic_help)
        to = reset.add_mutually_exclusive_group(required=True)
        to.add_argument("--to-earliest", action="store_true", help="the earliest offsets")
        to.add_argument("--to-latest", action="store_true", help="the log end (skip everything)")
        to.add_argument("--to-datetime", metavar="ISO", help="the first records at or after this time")
        reset.add_argument("--execute", action="store_true", help="apply (default: only print the plan)")

        export = sub("export", "write a group's committed offsets on a topic to a JSON file")
        export.add_argument("--group", help=group_help)
        export.add_argument("--topic", help=topic_help)
        export.add_argument("--file", required=True, help="the file to write ('-': standard output)")

        imp = sub("import", "set a group's offsets from an exported file")
        imp.add_argument("--group", help="the group to set (default: the group named in the file)")
        imp.add_argument("--file", required=True, help="the file to read ('-': standard input)")
        imp.add_argument("--execute", action="store_true", help="apply (default: only print the plan)")

    # -- plumbing --------------------------------------------------------------------------

    def handle(self, *args: Any, **options: Any) -> None:
        stream = cast(IO[str], self.stdout._out)  # the stream behind Django's wrapper
        # Rich assumes 80 columns when not on a terminal: too narrow for these tables.
        self.console = Console(file=stream, width=None if stream.isatty() else REPORT_WIDTH)
        action = options["action"].replace("-", "_")
        try:
            with Broker(timeout=options["timeout"]) as broker:
                getattr(self, f"_{action}")(broker, options)
        except LiveMembers as exc:
            raise CommandError(exc.message, returncode=REFUSED) from exc
        except GroupError as exc:
            raise CommandError(f"{exc.message} [{exc.code}]") from exc
        except KafkaError as exc:
            raise CommandError(
                f"the Kafka broker answered with an error: {type(exc).__name__}: {exc}"
            ) from exc

    def _json(self, payload: Any) -> None:
        self.stdout.write(json.dumps(payload, indent=2))

    # -- reads -----------------------------------------------------------------------------

    def _lag(self, broker: Broker, options: dict[str, Any]) -> None:
        group = options["group"] or settings.BOS_CONSUMER_GROUP
        lag = topic_lag(broker, group, options["topic"] or settings.BOS_TOPIC_REQUESTS)
        if options["json"]:
            self._json(lag.as_dict())
            return
        self.console.print(self._lag_table(lag))
        self._total_line(lag)

    def _describe(self, broker: Broker, options: dict[str, Any]) -> None:
        group = options["group"] or settings.BOS_CONSUMER_GROUP
        description = broker.describe(group)
        lags = [topic_lag(broker, group, topic) for topic in group_topics(broker, group)]
        if options["json"]:
            self._json(
                {"group": group, "description": description.as_dict(), "lag": [x.as_dict() for x in lags]}
            )
            return
        self._print_description(description)
        if not lags:
            self.console.print(f"group {group!r} has no committed offsets")
        for lag in lags:
            self.console.print(self._lag_table(lag))
            self._total_line(lag)

    def _lag_table(self, lag: TopicLag) -> Table:
        table = Table(title=f"Lag of group {lag.group} on {lag.topic}")
        table.add_column("partition", justify="right")
        table.add_column("committed", justify="right")
        table.add_column("log end", justify="right")
        table.add_column("lag", justify="right")
        table.add_column("", no_wrap=True, min_width=20)
        top = max((p.lag for p in lag.partitions), default=0)
        for p in lag.partitions:
            committed = "-" if p.committed is None else str(p.committed)
            table.add_row(str(p.partition), committed, str(p.end), str(p.lag), bar(p.lag, top))
        return table

    def _total_line(self, lag: TopicLag) -> None:
        uncommitted = [p.partition for p in lag.partitions if p.committed is None]
        note = (
            f"; no commit on partition(s) {uncommitted}: counted from the earliest offset"
            if uncommitted
            else ""
        )
        source = "fetch high watermark" if lag.end_source == "highwater" else "ListOffsets"
        self.console.print(
            f"total lag: {lag.total} on {len(lag.partitions)} partition(s) (log end from the {source}){note}"
        )

    def _print_description(self, d: GroupDescription) -> None:
        if not d.available:
            self.console.print(f"group {d.group}: state unavailable on this broker ({d.error})")
            return
        self.console.print(
            f"group {d.group}: state {d.state}, {len(d.members)} member(s)"
            + (f", assignor {d.protocol}" if d.protocol else "")
        )
        if not d.members:
            return
        table = Table(title=f"Members of {d.group}")
        table.add_column("member")
        table.add_column("client")
        table.add_column("host")
        table.add_column("assignment", overflow="fold")
        for m in d.members:
            if m.assignment is None:
                assigned = "not reported by the broker"
            else:
                assigned = (
                    "; ".join(f"{t}: {', '.join(map(str, ps))}" for t, ps in m.assignment.items()) or "none"
                )
            table.add_row(m.member_id, m.client_id, m.host, assigned)
        self.console.print(table)

    # -- changes ---------------------------------------------------------------------------

    def _copy_offsets(self, broker: Broker, options: dict[str, Any]) -> None:
        plan = plan_copy(broker, source=options["source"], target=options["target"], topic=options["topic"])
        self._carry_out(broker, plan, execute=options["execute"])

    def _reset_offsets(self, broker: Broker, options: dict[str, Any]) -> None:
        group = options["group"] or settings.BOS_CONSUMER_GROUP
        topic = options["topic"] or settings.BOS_TOPIC_REQUESTS
        if options["to_datetime"]:
            plan = plan_reset(
                broker, group=group, topic=topic, to="datetime", at=_datetime(options["to_datetime"])
            )
        else:
            plan = plan_reset(
                broker, group=group, topic=topic, to="earliest" if options["to_earliest"] else "latest"
            )
        self._carry_out(broker, plan, execute=options["execute"])

    def _import(self, broker: Broker, options: dict[str, Any]) -> None:
        name = options["file"]
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
        except OSError as exc:
            raise CommandError(f"--file: cannot read {name}: {exc.strerror}") from exc
        plan = plan_import(broker, doc=read_export(text), group=options["group"])
        self._carry_out(broker, plan, execute=options["execute"])

    def _export(self, broker: Broker, options: dict[str, Any]) -> None:
        group = options["group"] or settings.BOS_CONSUMER_GROUP
        doc = export_offsets(broker, group=group, topic=options["topic"] or settings.BOS_TOPIC_REQUESTS)
        text = json.dumps(doc, indent=2) + "\n"
        if options["file"] == "-":
            self.stdout.write(text, ending="")
            return
        try:
            Path(options["file"]).write_text(text)
        except OSError as exc:
            raise CommandError(f"--file: cannot write {options['file']}: {exc.strerror}") from exc
        count = len(doc["partitions"])
        self.console.print(
            f"exported {count} partition offset(s) of group {group!r} on {doc['topic']!r} to {options['file']}"
            + ("" if count else " (the group has committed nothing there)")
        )

    def _carry_out(self, broker: Broker, plan: OffsetPlan, *, execute: bool) -> None:
        self.console.print(self._plan_table(plan))
        changes = plan.changes
        if not execute:
            check = broker.live_members(plan.group, probe=False)  # a dry run writes nothing
            if check.live:
                self.console.print(
                    f"group {plan.group!r} has live members ({check.detail}): --execute would be refused"
                )
            self.console.print("dry run: nothing changed; add --execute")
            return
        if not changes:
            self.console.print(f"nothing to change: group {plan.group!r} already has these offsets")
            return
        committed = apply_plan(broker, plan)
        wrong = [r for r in changes if committed.get(r.topic, {}).get(r.partition) != r.new]
        if wrong:
            raise CommandError(
                "the broker accepted the commit but reads back other offsets for partition(s) "
                + ", ".join(f"{r.topic}[{r.partition}]" for r in wrong)
            )
        self.console.print(f"done: {len(changes)} partition offset(s) of group {plan.group!r} changed")

    def _plan_table(self, plan: OffsetPlan) -> Table:
        table = Table(title=plan.description)
        table.add_column("topic")
        table.add_column("partition", justify="right")
        table.add_column("current", justify="right")
        table.add_column("new", justify="right")
        table.add_column("change", justify="right")
        table.add_column("note", overflow="fold")
        for r in plan.rows:
            if r.current is None:
                change = "new"
            elif r.changes:
                change = f"{r.new - r.current:+d}"
            else:
                change = "="
            current = "-" if r.current is None else str(r.current)
            table.add_row(r.topic, str(r.partition), current, str(r.new), change, r.note)
        return table
