"""`manage.py bos_config get|set|history|rollback`: the runtime configuration.

    bos_config get [KEY]                        every runtime setting (or one): value, default
    bos_config set KEY VALUE --reason "…"       a new version (validated like the API)
                     [--tenant SLUG]            … for one tenant (settings of scope tenant)
    bos_config history [--limit N]              versions, newest first: who, when, why, diff
    bos_config rollback VERSION --reason "…"    every key back to its value at VERSION
    bos_config flags                            every feature flag and its targeting
    bos_config flag NAME --enabled true [--percent 10] [--tenants a,b] [--pipelines p]
                   [--description "…"] --reason "…"   create or change a flag (a new version)
    bos_config schedules                        beat's schedules: interval, enabled, default
    bos_config schedule NAME [--every N] [--enabled true|false] --reason "…"
                                                change one (a new version; the active beat follows)

Values are JSON (`250`, `0.5`, `true`); a bare word is a string. The actor is
`system:<os user>` unless `--actor` says otherwise.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError

from orchestrator.access import Do
from orchestrator.config import store
from orchestrator.config.registry import from_text
from orchestrator.errors import OrchestrationError
from orchestrator.management.audited import AuditedCommand
from orchestrator.models import ConfigVersion
from orchestrator.selectors import tenant_id_of


class Command(AuditedCommand):
    help = "Read, change, list and roll back the runtime configuration."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        get = sub.add_parser("get")
        get.add_argument("key", nargs="?")
        put = sub.add_parser("set")
        put.add_argument("key")
        put.add_argument("value")
        put.add_argument("--reason", required=True)
        put.add_argument("--tenant", help="this tenant's own value (settings of scope tenant)")
        put.add_argument("--actor", default="")
        history = sub.add_parser("history")
        history.add_argument("--limit", type=int, default=20)
        back = sub.add_parser("rollback")
        back.add_argument("version", type=int)
        back.add_argument("--reason", required=True)
        back.add_argument("--actor", default="")
        sub.add_parser("flags")
        flag = sub.add_parser("flag")
        flag.add_argument("name")
        flag.add_argument("--enabled", required=True, choices=["true", "false"])
        flag.add_argument("--percent", type=int, default=100)
        flag.add_argument("--tenants", default="", help="comma-separated slugs (empty: every tenant)")
        flag.add_argument("--pipelines", default="", help="comma-separated names (empty: every pipeline)")
        flag.add_argument("--description", default="")
        flag.add_argument("--reason", required=True)
        flag.add_argument("--actor", default="")
        sub.add_parser("schedules")
        schedule = sub.add_parser("schedule")
        schedule.add_argument("name")
        schedule.add_argument("--every", type=int, help="seconds between runs")
        schedule.add_argument("--enabled", choices=["true", "false"])
        schedule.add_argument("--reason", required=True)
        schedule.add_argument("--actor", default="")

    def _require_role(self, options: dict[str, Any]) -> None:
        """Reading is anybody's; a tenant's own value needs its admin role; the rest a superuser."""
        if options["action"] in ("get", "list", "history", "flags", "schedules"):
            return
        if options["action"] == "set" and options.get("tenant"):
            tenant_id = tenant_id_of(options["tenant"])
            self.require(Do.ADMINISTER, tenant_id)
            return
        self.require_platform()

    def handle(self, *args: Any, **options: Any) -> None:
        actor = options.get("actor") or self.actor
        self._require_role(options)
        try:
            if options["action"] == "get":
                self._get(options["key"])
            elif options["action"] == "set":
                row = store.config_set(
                    changes={options["key"]: from_text(options["value"])},
                    actor=actor,
                    reason=options["reason"],
                    tenant=options.get("tenant"),
                )
                self._version(row)
            elif options["action"] == "flags":
                self._flags()
            elif options["action"] == "flag":
                row = store.flag_set(
                    name=options["name"],
                    value={
                        "enabled": options["enabled"] == "true",
                        "percent": options["percent"],
                        "tenants": _names(options["tenants"]),
                        "pipelines": _names(options["pipelines"]),
                        "description": options["description"],
                    },
                    actor=actor,
                    reason=options["reason"],
                )
                self._version(row)
            elif options["action"] == "schedules":
                for item in store.schedule_items():
                    state = "" if item["enabled"] else "  (disabled)"
                    self.stdout.write(
                        f"{item['name']}: every {item['every_seconds']} s{state}  "
                        f"default {item['default_every_seconds']} s  task {item['task']}"
                    )
            elif options["action"] == "schedule":
                value: dict[str, Any] = {}
                if options["every"] is not None:
                    value["every_seconds"] = options["every"]
                if options["enabled"] is not None:
                    value["enabled"] = options["enabled"] == "true"
                current = {i["name"]: i for i in store.schedule_items()}.get(options["name"])
                if current is not None:
                    value = {
                        "every_seconds": current["every_seconds"],
                        "enabled": current["enabled"],
                        **value,
                    }
                self._version(
                    store.schedule_set(
                        name=options["name"], value=value, actor=actor, reason=options["reason"]
                    )
                )
            elif options["action"] == "history":
                for row in ConfigVersion.objects.order_by("-version")[: options["limit"]]:
                    self._version(row)
            else:
                self._version(
                    store.config_rollback(version=options["version"], actor=actor, reason=options["reason"])
                )
        except OrchestrationError as exc:
            detail = (
                f" (key: {exc.details['key']}, rule: {exc.details['rule']})" if "rule" in exc.details else ""
            )
            raise CommandError(f"{exc.code}: {exc.message}{detail}") from exc

    def _get(self, key: str | None) -> None:
        items = store.config_items()
        if key is not None:
            items = [item for item in items if item["key"] == key]
            if not items:
                raise CommandError(f"{key} is not a runtime setting")
        for item in items:
            changed = f" (v{item['version']}, {item['changed_by']})" if item["changed_by"] else ""
            tenants = "".join(f"  {t}: {json.dumps(v)}" for t, v in item["tenant_values"].items())
            self.stdout.write(
                f"{item['key']} = {json.dumps(item['value'])}  default {json.dumps(item['default'])}{changed}{tenants}"
            )

    def _flags(self) -> None:
        for item in store.flag_items():
            state = f"on for {item['percent']} %" if item["enabled"] else "off"
            targets = ", ".join(
                f"{what} {', '.join(item[what])}" for what in ("tenants", "pipelines") if item[what]
            )
            self.stdout.write(
                f"{item['name']}: {state}{' · ' + targets if targets else ''} "
                f"(v{item['version']}, {item['changed_by']}){' — ' + item['description'] if item['description'] else ''}"
            )

    def _version(self, row: ConfigVersion) -> None:
        diff = ", ".join(
            f"{k}: {json.dumps(c['old'])} → {json.dumps(c['new'])}" for k, c in row.changes.items()
        )
        back = f" [rollback to v{row.rollback_of}]" if row.rollback_of is not None else ""
        self.stdout.write(
            f"v{row.version} {row.at:%Y-%m-%d %H:%M:%S}Z {row.actor}{back}: {row.reason} — {diff or 'no change'}"
        )


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]
