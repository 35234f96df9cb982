"""What the dashboard page shows: its tiles, tables and charts, built from the
selectors' rows and the probes' answers.

A chart is a plain dict that `static/orchestrator/dashboard/dashboard.js` hands to
Chart.js (passed with `json_script`): `kind` (bar or line), `labels` (ISO bucket starts
when `time`, with `step_seconds`; else names), `datasets` (`label`, `data`, `color`),
`unit`, `stacked`, `horizontal`, `integer` (counts: whole ticks). A chart with nothing
to draw is None, and its panel says what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.urls import reverse

from orchestrator import access
from orchestrator.analytics import sparkline
from orchestrator.dashboard import formatting, selectors
from orchestrator.dashboard.probes import Probe, Probes
from orchestrator.dashboard.windows import Window, ratio_series
from orchestrator.models import Batch, Tenant
from orchestrator.security import logins, tokens, watch
from orchestrator.states import BatchState

Chart = dict[str, Any]

ITEM_OUTCOMES = {"succeeded": "#16a34a", "failed": "#dc2626", "skipped": "#9ca3af"}
BATCH_COLOURS = {
    BatchState.RECEIVED.value: "#9ca3af",
    BatchState.ACCEPTED.value: "#60a5fa",
    BatchState.RUNNING.value: "#2563eb",
    BatchState.COMPLETED.value: "#16a34a",
    BatchState.COMPLETED_WITH_ERRORS.value: "#d97706",
    BatchState.FAILED.value: "#dc2626",
    BatchState.CANCELLED.value: "#6b7280",
    BatchState.ROLLED_BACK.value: "#7c3aed",
    BatchState.ROLLING_BACK.value: "#a78bfa",
    BatchState.ROLLBACK_FAILED.value: "#991b1b",
}
# The order the finished states are stacked in, best at the bottom.
FINISHED_ORDER = (
    "completed",
    "completed_with_errors",
    "failed",
    "cancelled",
    "rolled_back",
    "rollback_failed",
)
ALERT_COLOURS = {
    selectors.SLA_AT_RISK: "#f59e0b",
    selectors.SLA_BREACHED: "#b91c1c",
    selectors.ANOMALY: "#8b5cf6",
    selectors.PREDICTED_ERROR_SURGE: "#ec4899",
    selectors.PREDICTED_BREAKER_TRIP: "#0ea5e9",
    "new_error_pattern": "#f97316",
    "rising_error_rate": "#ef4444",
}
OTHER_COLOUR = "#64748b"
SECURITY_COLOURS = {
    "denied": "#f59e0b",
    "cross_tenant": "#b91c1c",
    "login_failed": "#8b5cf6",
    "login_locked_out": "#5b21b6",
    "throttled": "#0ea5e9",
    "token_new_address": "#ec4899",
}
SECURITY_LABELS = {
    "denied": "refused",
    "cross_tenant": "another tenant's object",
    "login_failed": "failed login",
    "login_locked_out": "login locked out",
    "throttled": "throttled minute",
    "token_new_address": "token from a new address",
}
SECURITY_ALERT_KINDS = (*watch.KINDS, logins.LOCKOUT_ALERT, tokens.NEW_ADDRESS_ALERT)
BREAKER_TONES = {"closed": "ok", "half-open": "warn", "open": "bad"}
SLA_TONES = {selectors.SLA_AT_RISK: "warn", selectors.SLA_BREACHED: "bad"}


def _time_chart(window: Window, now: datetime, datasets: list[dict[str, Any]], **options: Any) -> Chart:
    return {
        "kind": "bar",
        "time": True,
        "step_seconds": window.step.total_seconds(),
        "labels": [b.isoformat() for b in window.buckets(now)],
        "datasets": datasets,
        "stacked": True,
        "horizontal": False,
        **options,
    }


@dataclass
class Tile:
    label: str
    value: str
    note: str = ""
    tone: str = ""  # "", ok, warn, bad


@dataclass
class Dashboard:
    """Everything the template shows."""

    window: Window
    now: datetime
    superuser: bool
    tenants: list[str] | None  # the tenants shown; None: every tenant
    tenant: str | None = None  # the one tenant chosen (`?tenant=`), if any
    tenant_choices: list[str] = field(default_factory=list)  # the tenants one may choose
    tiles: list[Tile] = field(default_factory=list)
    charts: dict[str, Chart | None] = field(default_factory=dict)
    durations: list[dict[str, Any]] = field(default_factory=list)
    fingerprints: list[dict[str, Any]] = field(default_factory=list)
    sla_alerts: list[dict[str, Any]] = field(default_factory=list)
    deadline_batches: list[dict[str, Any]] = field(default_factory=list)
    insights: list[dict[str, Any]] = field(default_factory=list)
    active_batches: list[dict[str, Any]] = field(default_factory=list)
    finished_batches: list[dict[str, Any]] = field(default_factory=list)
    security: bool = False  # the viewer may read the audit log (admin somewhere)
    security_alerts: list[dict[str, Any]] = field(default_factory=list)
    breakers: Probe | None = None
    queues: Probe | None = None
    lag: Probe | None = None
    queued_text: str = ""

    def chart_data(self) -> dict[str, Chart]:
        """The charts to draw (those with something to show), for `json_script`."""
        return {name: chart for name, chart in self.charts.items() if chart is not None}


# -- throughput and errors ------------------------------------------------------------------


def throughput_panels(board: Dashboard, viewer: selectors.Viewer) -> None:
    """Items per second by outcome, and the share of them that failed (one read)."""
    window, now = board.window, board.now
    start = window.start(now)
    per_bucket = selectors.item_throughput(viewer, start=start, step=window.step)
    step_s = window.step.total_seconds()
    series = {
        outcome: window.series(now, {at: v[outcome] for at, v in per_bucket.items()})
        for outcome in ITEM_OUTCOMES
    }
    processed = {k: sum(v) for k, v in series.items()}
    total = sum(processed.values())
    if total:
        board.charts["throughput"] = _time_chart(
            window,
            now,
            [
                {"label": outcome, "data": [round(n / step_s, 6) for n in series[outcome]], "color": colour}
                for outcome, colour in ITEM_OUTCOMES.items()
                if processed[outcome]
            ],
            unit="items/s",
        )
        judged = [s + f for s, f in zip(series["succeeded"], series["failed"], strict=True)]
        board.charts["error_rate"] = _time_chart(
            window,
            now,
            [{"label": "failed items", "data": ratio_series(series["failed"], judged), "color": "#dc2626"}],
            kind="line",
            stacked=False,
            unit="%",
        )
    else:
        board.charts["throughput"] = board.charts["error_rate"] = None
    judged_total = processed["succeeded"] + processed["failed"]  # skipped items are neither
    failed_share = processed["failed"] / judged_total if judged_total else None
    board.tiles += [
        Tile(
            "items processed",
            formatting.compact(total),
            f"{formatting.rate(total / window.span.total_seconds())} items/s on average",
        ),
        Tile(
            "item failure rate",
            formatting.percent(failed_share),
            f"{formatting.number(processed['failed'])} failed",
            tone="" if not failed_share else ("bad" if failed_share >= 0.05 else "warn"),
        ),
    ]


def batches_panel(board: Dashboard, viewer: selectors.Viewer) -> None:
    window, now = board.window, board.now
    finished = selectors.batches_finished(viewer, start=window.start(now), step=window.step)
    states = [s for s in FINISHED_ORDER if any(state == s for _, state in finished)]
    board.charts["batches"] = (
        _time_chart(
            window,
            now,
            [
                {
                    "label": state.replace("_", " "),
                    "data": window.series(now, {at: n for (at, st), n in finished.items() if st == state}),
                    "color": BATCH_COLOURS[state],
                }
                for state in states
            ],
            unit="batches",
            integer=True,
        )
        if finished
        else None
    )
    ended = sum(finished.values())
    bad = sum(n for (_, st), n in finished.items() if st in ("failed", "rollback_failed"))
    board.tiles.append(
        Tile(
            "batches finished",
            formatting.compact(ended),
            f"{formatting.number(bad)} failed",
            tone="bad" if bad else "",
        )
    )


def fingerprints_panel(board: Dashboard, viewer: selectors.Viewer) -> None:
    fps = selectors.error_fingerprints(viewer, start=board.window.start(board.now))
    board.fingerprints = [
        {**fp, "count_text": formatting.number(fp["count"]), "spark": sparkline(fp["trend"])} for fp in fps
    ]


def duration_panel(board: Dashboard, viewer: selectors.Viewer) -> None:
    rows = selectors.phase_durations(viewer, start=board.window.start(board.now))
    board.durations = [
        {
            **r,
            "p50_text": formatting.duration(r["p50"]),
            "p95_text": formatting.duration(r["p95"]),
            "runs_text": formatting.number(r["runs"]),
        }
        for r in rows
    ]
    board.charts["durations"] = (
        {
            "kind": "bar",
            "time": False,
            "horizontal": True,
            "stacked": False,
            "unit": "s",
            "labels": [f"{r['pipeline']} · {r['phase']}" for r in rows],
            "datasets": [
                {"label": "p50", "data": [round(r["p50"], 3) for r in rows], "color": "#60a5fa"},
                {"label": "p95", "data": [round(r["p95"], 3) for r in rows], "color": "#1d4ed8"},
            ],
        }
        if rows
        else None
    )


# -- alerts: SLA, anomalies, predictions ----------------------------------------------------


def _batch_links(batch_id: str | None) -> dict[str, str]:
    if not batch_id:
        return {}
    return {
        "admin_url": reverse("admin:orchestrator_batch_change", args=[batch_id]),
        "graph_url": reverse("dashboard:batch-graph", args=[batch_id]),
    }


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def alert_panels(board: Dashboard, viewer: selectors.Viewer) -> None:
    window, now = board.window, board.now
    start = window.start(now)
    counts = selectors.alert_counts(viewer, start=start, step=window.step)
    kinds = sorted({kind for _, kind in counts}, key=lambda k: (k not in ALERT_COLOURS, k))
    board.charts["alerts"] = (
        _time_chart(
            window,
            now,
            [
                {
                    "label": kind,
                    "data": window.series(now, {at: n for (at, k), n in counts.items() if k == kind}),
                    "color": ALERT_COLOURS.get(kind, OTHER_COLOUR),
                }
                for kind in kinds
            ],
            unit="alerts",
            integer=True,
        )
        if counts
        else None
    )
    per_kind = {kind: sum(n for (_, k), n in counts.items() if k == kind) for kind in kinds}

    for row in selectors.alerts(viewer, start=start, kinds=selectors.SLA_KINDS):
        d = row["details"] if isinstance(row["details"], dict) else {}
        board.sla_alerts.append(
            {
                **row,
                "tone": SLA_TONES.get(row["kind"], ""),
                "label": "breached" if row["kind"] == selectors.SLA_BREACHED else "at risk",
                "external_id": d.get("external_id") or d.get("batch_id") or "",
                "pipeline": d.get("pipeline", ""),
                "deadline": _parse_time(d.get("deadline")),
                "projected": _parse_time(d.get("projected_finish_at")),
                "slowest_phase": d.get("slowest_phase") or "",
                **_batch_links(d.get("batch_id")),
            }
        )
    deadlines = selectors.deadline_batches(viewer)
    flagged = selectors.sla_alert_kinds(viewer, deadlines)
    for batch in deadlines:
        kinds_raised = flagged.get(str(batch.id), set())
        late = batch.deadline is not None and batch.deadline <= now
        status = (
            "breached"
            if late or selectors.SLA_BREACHED in kinds_raised
            else ("at risk" if selectors.SLA_AT_RISK in kinds_raised else "on track")
        )
        board.deadline_batches.append(
            {
                "batch": batch,
                "status": status,
                "tone": {"breached": "bad", "at risk": "warn"}.get(status, "ok"),
                "left": formatting.duration((batch.deadline - now).total_seconds())
                if batch.deadline
                else "–",
                **_batch_links(str(batch.id)),
            }
        )

    for row in selectors.alerts(viewer, start=start, kinds=selectors.INSIGHT_KINDS):
        d = row["details"] if isinstance(row["details"], dict) else {}
        where = " · ".join(str(d[k]) for k in ("pipeline", "phase", "service") if d.get(k))
        observed = ""
        if row["kind"] == selectors.ANOMALY and "value" in d:
            observed = (
                f"{d.get('metric', 'value')} {_num(d.get('value'))} "
                f"(expected {_num(d.get('low'))}–{_num(d.get('high'))})"
            )
        board.insights.append(
            {
                **row,
                "where": where,
                "observed": observed,
                "colour_class": row["kind"].replace(".", "-"),
                **_batch_links(d.get("batch_id")),
            }
        )

    at_risk, breached = per_kind.get(selectors.SLA_AT_RISK, 0), per_kind.get(selectors.SLA_BREACHED, 0)
    board.tiles += [
        Tile(
            "SLA breached",
            formatting.number(breached),
            f"{formatting.number(at_risk)} at risk · {formatting.number(len(deadlines))} with a deadline at work",
            tone="bad" if breached else ("warn" if at_risk else "ok"),
        ),
        Tile(
            "anomalies and predictions",
            formatting.number(sum(per_kind.get(k, 0) for k in selectors.INSIGHT_KINDS)),
            f"{formatting.number(per_kind.get(selectors.ANOMALY, 0))} anomalies",
            tone="warn" if any(per_kind.get(k) for k in selectors.INSIGHT_KINDS) else "",
        ),
    ]


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value) if value is not None else "?"
    return formatting.number(value, digits=0 if float(value).is_integer() else 2)


# -- security: from the audit log ------------------------------------------------------------


def security_panel(board: Dashboard, viewer: selectors.Viewer) -> None:
    """Refusals, failed logins, throttling, cross-tenant attempts and token misuse over
    the window, payload items read, and the security alerts (orchestrator.security.watch)."""
    board.security = True
    window, now = board.window, board.now
    start = window.start(now)
    counts = selectors.security_events(viewer, start=start, step=window.step)
    kinds = [k for k in SECURITY_COLOURS if any(kind == k for _, kind in counts)]
    board.charts["security"] = (
        _time_chart(
            window,
            now,
            [
                {
                    "label": SECURITY_LABELS[kind],
                    "data": window.series(now, {at: n for (at, k), n in counts.items() if k == kind}),
                    "color": SECURITY_COLOURS[kind],
                }
                for kind in kinds
            ],
            unit="events",
            integer=True,
        )
        if counts
        else None
    )
    board.security_alerts = selectors.alerts(viewer, start=start, kinds=SECURITY_ALERT_KINDS)
    total = sum(counts.values())
    read = selectors.payload_items_read(viewer, start=start)
    board.tiles.append(
        Tile(
            "security events",
            formatting.compact(total),
            f"{formatting.number(len(board.security_alerts))} alerts · "
            f"{formatting.compact(read)} payload items read",
            tone="bad" if board.security_alerts else ("warn" if total else "ok"),
        )
    )


# -- batches --------------------------------------------------------------------------------


def _batch_row(batch: Batch, now: datetime) -> dict[str, Any]:
    total = getattr(batch, "units_total", None) or 0
    done = getattr(batch, "units_done", None) or 0
    ran_for = ((batch.finished_at or now) - (batch.started_at or batch.created_at)).total_seconds()
    return {
        "batch": batch,
        "pipeline": batch.pipeline_version.pipeline.name,
        "version": batch.pipeline_version.version,
        "state_label": batch.state.replace("_", " "),
        "state_class": batch.state.replace("_", "-"),
        "progress": round(100 * done / total) if total else (100 if batch.is_terminal else 0),
        "running_phases": getattr(batch, "running_phases", None) or "",
        "items": formatting.number(batch.items_total),
        "failed": formatting.number(batch.items_failed),
        "ran_for": formatting.duration(ran_for),
        **_batch_links(str(batch.id)),
    }


def batch_panels(board: Dashboard, viewer: selectors.Viewer) -> None:
    now = board.now
    board.active_batches = [_batch_row(b, now) for b in selectors.active_batches(viewer)]
    board.finished_batches = [
        _batch_row(b, now) for b in selectors.finished_batches(viewer, start=board.window.start(now))
    ]
    board.tiles.insert(
        0,
        Tile(
            "batches at work",
            formatting.compact(selectors.active_batches_count(viewer)),
            "received, accepted or running",
        ),
    )


# -- the service: queues, consumer lag, breakers --------------------------------------------


def service_panels(board: Dashboard, probes: Probes) -> None:
    found = probes.results()
    board.queues, board.lag, board.breakers = found["queues"], found["lag"], found["breakers"]
    if board.queues.ok:
        depths: dict[str, int] = board.queues.value
        queued = sum(depths.values())
        board.queued_text = f"{formatting.number(queued)} message{'' if queued == 1 else 's'}"
        board.charts["queues"] = {
            "kind": "bar",
            "time": False,
            "horizontal": True,
            "stacked": False,
            "unit": "messages",
            "integer": True,
            "labels": list(depths),
            "datasets": [{"label": "waiting", "data": list(depths.values()), "color": "#0ea5e9"}],
        }
    if board.lag.ok:
        lag = board.lag.value
        board.charts["lag"] = {
            "kind": "bar",
            "time": False,
            "horizontal": False,
            "stacked": False,
            "unit": "messages",
            "integer": True,
            "labels": [f"partition {p.partition}" for p in lag.partitions],
            "datasets": [{"label": "lag", "data": [p.lag for p in lag.partitions], "color": "#8b5cf6"}],
        }
    if board.breakers.ok:
        open_ = [b for b in board.breakers.value if b["state"] != "closed"]
        board.breakers = Probe(
            value=[{**b, "tone": BREAKER_TONES.get(b["state"], "warn")} for b in board.breakers.value]
        )
        board.tiles.append(
            Tile(
                "circuit breakers",
                f"{len(open_)} open" if open_ else "all closed",
                f"{len(board.breakers.value)} known",
                tone="bad" if open_ else "ok",
            )
        )
    else:
        board.tiles.append(Tile("circuit breakers", "unavailable", board.breakers.error, tone="warn"))


def build(viewer: selectors.Viewer, window: Window, now: datetime, probes: Probes | None) -> Dashboard:
    """The whole page for `viewer`; `probes` (started by the caller, superusers only) are
    waited for last, so they run while the database is read."""
    ids = access.tenant_ids(viewer.user)
    visible = (
        Tenant.objects.order_by("slug") if ids is None else Tenant.objects.filter(id__in=ids).order_by("slug")
    )
    choices = {t_id: slug for t_id, slug in visible.values_list("id", "slug")}
    if viewer.tenant_id is not None:
        tenants: list[str] | None = [choices[viewer.tenant_id]]
    else:
        tenants = None if ids is None else list(choices.values())
    board = Dashboard(
        window=window,
        now=now,
        superuser=access.is_superuser(viewer.user),
        tenants=tenants,
        tenant=choices.get(viewer.tenant_id) if viewer.tenant_id is not None else None,
        tenant_choices=list(choices.values()),
    )
    batch_panels(board, viewer)
    throughput_panels(board, viewer)
    batches_panel(board, viewer)
    fingerprints_panel(board, viewer)
    duration_panel(board, viewer)
    alert_panels(board, viewer)
    if access.may_somewhere(viewer.user, access.Do.ADMINISTER):
        security_panel(board, viewer)
    if probes is not None:
        service_panels(board, probes)
    return board
