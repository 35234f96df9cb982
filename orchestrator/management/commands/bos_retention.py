"""`manage.py bos_retention [--tenant SLUG …] [--execute] [--chunk N] [--as-user USER]`: what
retention would purge now, per tenant (batches past their retention, their items'
payloads, their item results, and audit records past the audit log's own retention);
with `--execute`, purge it with a progress bar and write an audit record
`retention.purge`. A dry run by default. See docs/retention.md.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError
from rich.table import Table

from orchestrator.access import Do
from orchestrator.management.audited import AuditedCommand
from orchestrator.management.terminal import console_of, progress_bar
from orchestrator.models import Tenant
from orchestrator.services.retention import CHUNK, Plan, plan, purge, record_purge


def _table(result: Plan, *, execute: bool) -> Table:
    title = "retention: to purge now" if execute else "retention: would purge (dry run)"
    table = Table(title=f"{title}, at {result.now.isoformat(timespec='seconds')}")
    for column in ("tenant", "retention", "ended before", "batches", "items", "results", "audit records"):
        table.add_column(column, justify="right" if column not in ("tenant", "ended before") else "left")
    for t in result.tenants:
        table.add_row(
            t.tenant,
            f"{t.retention_days} d" if t.retention_days else "forever",
            t.cutoff.isoformat(timespec="seconds") if t.cutoff else "—",
            str(t.batches),
            str(t.items),
            str(t.results),
            str(t.audit_records),
        )
    if result.audit_records_of_no_tenant:
        table.add_row("(no tenant)", "", "", "", "", "", str(result.audit_records_of_no_tenant))
    table.add_row(
        "[b]total[/]",
        "",
        "",
        str(result.batches),
        str(result.items),
        str(result.results),
        f"{result.audit_records} (older than {result.audit_retention_days} d)",
    )
    return table


class Command(AuditedCommand):
    help = (
        "Show what retention would purge now, per tenant: batches past their tenant's retention_days "
        "(their item payloads, item results, phase outputs and report), and audit records past "
        "audit_retention_days. Dry run unless --execute; --execute purges and writes an audit record."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--tenant", action="append", default=[], help="only this tenant (repeatable)")
        parser.add_argument("--execute", action="store_true", help="purge (default: only show what is due)")
        parser.add_argument(
            "--chunk", type=int, default=CHUNK, help=f"items per transaction (default {CHUNK})"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        console = console_of(self, width=160)
        if options["chunk"] < 1:
            raise CommandError("--chunk must be at least 1")
        tenants = None
        if options["tenant"]:
            tenants = list(Tenant.objects.filter(slug__in=options["tenant"]).order_by("slug"))
            missing = sorted(set(options["tenant"]) - {t.slug for t in tenants})
            if missing:
                raise CommandError(f"no such tenant: {', '.join(missing)}")
        if tenants is None:
            self.require_platform()  # every tenant, and the audit log, which is no tenant's
        for tenant in tenants or []:
            self.require(Do.ADMINISTER, tenant.id)
        due = plan(tenants=tenants)
        console.print(_table(due, execute=options["execute"]))
        if tenants is not None:
            console.print("audit records are purged by their own, global policy: not with --tenant")
        if not options["execute"]:
            console.print("dry run: nothing purged; add --execute to purge")
            return
        with progress_bar(console) as progress:
            bars = {
                "items": progress.add_task("item payloads", total=due.items),
                "audit_records": progress.add_task(
                    "audit records", total=due.audit_records if tenants is None else 0
                ),
            }
            done = purge(
                now=due.now,
                chunk=options["chunk"],
                tenants=tenants,
                audit_log=tenants is None,  # the audit log's policy is global, not a tenant's
                progress=lambda what, n: progress.advance(bars[what], n),
            )
            record_purge(done, trigger="command")
        console.print(
            f"purged {done.batches} batch(es): {done.items} item payload(s), {done.results} item result(s); "
            f"{done.audit_records} audit record(s)"
        )
