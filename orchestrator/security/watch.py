"""Security alerts from the audit log, raised by beat (`tasks.security.security_watch_task`).

Every refusal, failed login, throttled minute, cross-tenant attempt and payload read is an
audit record already (orchestrator.audit); this reads the recent ones in two aggregate
queries and raises an `Alert` (of no tenant: superusers see it, on the dashboard and in
the admin) when one actor or address goes past its runtime threshold:

- `security.refusals`: requests of one actor refused (outcome `denied`: a role it lacks,
  credentials that do not hold) within `WINDOW`, at least `security_refusals_alert`;
- `security.login_failures`: failed admin logins from one address within `WINDOW`, at
  least the same threshold (django-axes locks a username and address pair out after
  `BOS_LOGIN_FAILURE_LIMIT`; this catches one address trying many usernames);
- `security.cross_tenant`: another tenant's objects asked for by one actor (a token used
  across tenants) within `WINDOW`, at least `security_cross_tenant_alert`;
- `security.throttled`: minutes in which one caller was throttled within `WINDOW`, at
  least `security_throttled_alert`;
- `security.payload_reads`: items whose payloads or results one actor read in the last
  hour over `payload_read_alert_items` and over `READ_FACTOR` times the most they read
  in any hour of the 7 days before (unusual for them, not only large).

Each is raised once per actor (or address) and kind while its window lasts: a flood is
one alert, and the counts go on in `bos_security_events_total`. A new token address and a
lockout raise their alerts where they happen (orchestrator.security.tokens, .logins).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Case, CharField, Count, IntegerField, Q, Sum, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncHour
from django.utils import timezone

from orchestrator.config import runtime
from orchestrator.models import Alert, AuditRecord

logger = logging.getLogger(__name__)

WINDOW = timedelta(minutes=15)
READ_WINDOW = timedelta(hours=1)
READ_HISTORY = timedelta(days=7)
READ_FACTOR = 3

REFUSALS = "security.refusals"
LOGIN_FAILURES = "security.login_failures"
CROSS_TENANT = "security.cross_tenant"
THROTTLED = "security.throttled"
PAYLOAD_READS = "security.payload_reads"
KINDS = (REFUSALS, LOGIN_FAILURES, CROSS_TENANT, THROTTLED, PAYLOAD_READS)

# What kind of security event an audit record is (None: not one), in SQL.
EVENT_KIND = Case(
    When(action="api.throttled", then=Value("throttled")),
    When(action="login_failed", then=Value("login_failed")),
    When(action="login_locked_out", then=Value("login_locked_out")),
    When(action="token.new_address", then=Value("token_new_address")),
    When(detail__cross_tenant=True, then=Value("cross_tenant")),
    When(outcome="denied", then=Value("denied")),
    default=Value(None),
    output_field=CharField(),
)
# The audit records that can be security events (the rest are not read).
EVENT_RECORDS = Q(outcome="denied") | Q(action="token.new_address")
# Which alert a count of each event kind raises, whose threshold, and who it is about.
RULES: dict[str, tuple[str, str, str]] = {
    "denied": (REFUSALS, "security_refusals_alert", "actor"),
    "login_failed": (LOGIN_FAILURES, "security_refusals_alert", "ip"),
    "cross_tenant": (CROSS_TENANT, "security_cross_tenant_alert", "actor"),
    "throttled": (THROTTLED, "security_throttled_alert", "actor"),
}
MESSAGES = {
    REFUSALS: "{who} was refused {count} times in {minutes} minutes",
    LOGIN_FAILURES: "{count} failed admin logins from {who} in {minutes} minutes",
    CROSS_TENANT: "{who} asked for another tenant's objects {count} times in {minutes} minutes",
    THROTTLED: "{who} was throttled in {count} minutes of the last {minutes}",
    PAYLOAD_READS: "{who} read the payloads of {count} items in the last hour",
}


@dataclass
class Watched:
    raised: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"raised": len(self.raised), "alerts": self.raised}


def security_watch(now: datetime | None = None) -> Watched:
    """Raise the security alerts that are due at `now` (default: the clock's now)."""
    now = now or timezone.now()
    found = _over_thresholds(now) + _unusual_reads(now)
    already = _raised_since(now)
    fresh = [(kind, who, detail) for kind, who, detail in found if (kind, who) not in already]
    alerts = [
        Alert(
            tenant=None,
            kind=kind,
            message=MESSAGES[kind].format(
                who=who or "an unknown address",
                count=detail["count"],
                minutes=int(WINDOW.total_seconds() // 60),
            ),
            details={"who": who, **detail},
        )
        for kind, who, detail in fresh
    ]
    Alert.objects.bulk_create(alerts)
    for alert in alerts:
        logger.warning("security alert %s: %s", alert.kind, alert.message, extra={"details": alert.details})
    return Watched([{"kind": a.kind, "who": a.details["who"], "count": a.details["count"]} for a in alerts])


def _over_thresholds(now: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    """(alert kind, actor or address, detail) for each count past its threshold."""
    rows = (
        AuditRecord.objects.filter(EVENT_RECORDS, at__gte=now - WINDOW, at__lte=now)
        .annotate(kind=EVENT_KIND)
        .values("kind", "actor", "ip")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        rule = RULES.get(row["kind"])
        if rule is not None:
            who = row["ip"] if rule[2] == "ip" else row["actor"]
            counts[(row["kind"], str(who or ""))] += row["n"]
    found = []
    for (event, who), count in sorted(counts.items()):
        kind, threshold_key, _ = RULES[event]
        threshold = runtime(threshold_key)
        if count >= threshold:
            found.append((kind, who, {"count": count, "threshold": threshold, "since": _iso(now - WINDOW)}))
    return found


def _unusual_reads(now: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    floor = runtime("payload_read_alert_items")
    items = Cast(KT("detail__items"), IntegerField())
    recent = (
        AuditRecord.objects.filter(action="payload_read", at__gte=now - READ_WINDOW, at__lte=now)
        .values("actor")
        .annotate(n=Sum(items))
        .filter(n__gt=floor)
        .order_by()
    )
    heavy = {row["actor"]: row["n"] for row in recent}
    if not heavy:
        return []
    start = now - READ_WINDOW - READ_HISTORY
    hours = (
        AuditRecord.objects.filter(
            action="payload_read", actor__in=list(heavy), at__gte=start, at__lt=now - READ_WINDOW
        )
        .annotate(hour=TruncHour("at"))
        .values("actor", "hour")
        .annotate(n=Sum(items))
        .order_by()
    )
    most: dict[str, int] = defaultdict(int)
    for row in hours:
        most[row["actor"]] = max(most[row["actor"]], row["n"] or 0)
    return [
        (
            PAYLOAD_READS,
            actor,
            {
                "count": count,
                "threshold": floor,
                "most_in_an_hour_before": most[actor],
                "since": _iso(now - READ_WINDOW),
            },
        )
        for actor, count in sorted(heavy.items())
        if count > READ_FACTOR * most[actor]
    ]


def _raised_since(now: datetime) -> set[tuple[str, str]]:
    """(kind, who) of the security alerts raised within their window, to raise each once."""
    rows = Alert.objects.filter(
        Q(kind__in=[k for k in KINDS if k != PAYLOAD_READS], created_at__gte=now - WINDOW)
        | Q(kind=PAYLOAD_READS, created_at__gte=now - READ_WINDOW)
    ).values_list("kind", "details__who")
    return {(kind, str(who or "")) for kind, who in rows}


def _iso(moment: datetime) -> str:
    return moment.isoformat()
