"""`manage.py error_report [--tenant T] [--since ISO] [--json] [--no-analyze]`: the top
error fingerprints with their 24-hour trend, then the recent alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import IO, Any, cast

from django.core.management.base import CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from rich.console import Console
from rich.table import Table

from orchestrator.analytics import analyze_errors, recent_alerts, sparkline, top_errors
from orchestrator.management.audited import AuditedCommand
from orchestrator.models import Tenant

REPORT_WIDTH = 160


def _since(value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CommandError(f"--since: not an ISO 8601 date or time: {value!r}") from exc
    return at if timezone.is_aware(at) else at.replace(tzinfo=UTC)


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if at else ""


class Command(AuditedCommand):
    help = (
        "Analyze new failures (unless --no-analyze), then show the top error fingerprints "
        "with their 24-hour trend and the recent alerts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--tenant", action="append", default=[], metavar="SLUG", help="only this tenant (repeatable)"
        )
        parser.add_argument("--since", metavar="ISO", help="only errors seen since then, counted since then")
        parser.add_argument("--limit", type=int, default=20, help="how many fingerprints (default 20)")
        parser.add_argument("--alerts", type=int, default=10, help="how many alerts (default 10)")
        parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
        parser.add_argument("--no-analyze", action="store_true", help="do not run the analysis first")

    def _tenant_ids(self, slugs: list[str]) -> list[int]:
        tenants = Tenant.objects.all() if not slugs else Tenant.objects.filter(slug__in=slugs)
        readable = self.readable_tenants()
        if readable is not None:  # acting as a user: their tenants only, as in the API
            tenants = tenants.filter(id__in=readable)
        found = dict(tenants.values_list("slug", "id"))
        missing = sorted(set(slugs) - set(found))
        if missing:
            raise CommandError(f"unknown tenant(s): {', '.join(missing)}")
        return list(found.values())

    def handle(self, *args: Any, **options: Any) -> None:
        since = _since(options["since"]) if options["since"] else None
        tenant_ids = self._tenant_ids(options["tenant"])
        report = None if options["no_analyze"] else analyze_errors()
        errors = top_errors(tenant_ids, since=since, limit=options["limit"])
        alerts = recent_alerts(tenant_ids, limit=options["alerts"])
        if options["json"]:
            payload = {"analysis": report.as_dict() if report else None, "errors": errors, "alerts": alerts}
            self.stdout.write(json.dumps(payload, cls=DjangoJSONEncoder, indent=2))
            return
        stream = cast(IO[str], self.stdout._out)  # the stream behind Django's wrapper
        # Rich assumes 80 columns when not on a terminal: too narrow for these tables.
        console = Console(file=stream, width=None if stream.isatty() else REPORT_WIDTH)
        if report is not None:
            console.print(
                f"analyzed: {report.item_failures} item and {report.phase_failures} phase failure(s), "
                f"{report.new_fingerprints} new pattern(s), {len(report.alerts)} alert(s)"
                + (f"; deferred: {', '.join(report.deferred)}" if report.deferred else "")
                + ("; skipped: another analysis is running" if report.skipped else "")
            )
        console.print(self._errors_table(errors, since))
        console.print(self._alerts_table(alerts))

    def _errors_table(self, errors: list[dict[str, Any]], since: datetime | None) -> Table:
        title = "Top errors" + (f" since {_when(since)} UTC" if since else "")
        table = Table(title=title if errors else f"{title}: none")
        table.add_column("count", justify="right", no_wrap=True)
        table.add_column("24 h", no_wrap=True)
        table.add_column("tenant", no_wrap=True)
        table.add_column("pipeline / phase")
        table.add_column("error", overflow="fold", ratio=1, min_width=30)
        table.add_column("class", no_wrap=True)
        table.add_column("last seen", no_wrap=True)
        for e in errors:
            table.add_row(
                str(e["count"]),
                sparkline(e["trend"]),
                e["tenant"],
                f"{e['pipeline']} / {e['phase']}",
                f"{e['error_type']}: {e['message']}",
                e["error_class"],
                _when(e["last_seen"]),
            )
        return table

    def _alerts_table(self, alerts: list[dict[str, Any]]) -> Table:
        table = Table(title="Recent alerts" if alerts else "Recent alerts: none")
        table.add_column("when", no_wrap=True)
        table.add_column("kind")
        table.add_column("tenant")
        table.add_column("message", overflow="fold", ratio=1)
        for a in alerts:
            table.add_row(_when(a["created_at"]), a["kind"], a["tenant"] or "", a["message"])
        return table
