"""How the admin shows BOS's values: states as coloured badges (one state→tone map for
every page), long ids cut short with the whole id in a tooltip, times to the second,
durations to the millisecond (times show their seconds through
`bos_project/formats`), a batch's report as tables and its failed items as a list;
payloads, outputs and errors masked as docs/masking.md says (`mask_shown`).

Everything here returns escaped HTML (`format_html`); the colours live in
`orchestrator/static/orchestrator/admin.css`, keyed by tone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from orchestrator.masking import mask_error, mask_value
from orchestrator.profiling import format_seconds

# Every state BOS shows (batch, phase, item, compensation, Celery task) → a tone. The tone
# names a colour in admin.css, so one state looks the same on every admin page.
STATE_TONES: Mapping[str, str] = {
    # batches
    "received": "waiting",
    "accepted": "waiting",
    "running": "active",
    "completed": "ok",
    "completed_with_errors": "warn",
    "failed": "bad",
    "cancelled": "muted",
    "rolled_back": "muted",
    "rolling_back": "active",
    "rollback_failed": "bad",
    # phases, items and compensations
    "pending": "waiting",
    "succeeded": "ok",
    "skipped": "muted",
    "compensated": "muted",
    # Celery task results (django-celery-results' TaskResult.status)
    "SUCCESS": "ok",
    "FAILURE": "bad",
    "RETRY": "warn",
    "STARTED": "active",
    "PENDING": "waiting",
    "RECEIVED": "waiting",
    "REVOKED": "muted",
}
ID_CHARS = 24
FAILED_ITEMS_SHOWN = 20


def state_tone(state: str) -> str:
    """The tone of `state`; an unknown state is shown plain ("other")."""
    return STATE_TONES.get(state, "other")


def state_badge(state: str) -> SafeString:
    """`state` as a badge coloured by its tone (class `bos-state bos-state--<tone>`)."""
    if not state:
        return format_html("{}", "")
    return format_html(
        '<span class="bos-state bos-state--{}">{}</span>', state_tone(state), state.replace("_", " ")
    )


def short_id(value: str, limit: int = ID_CHARS) -> SafeString:
    """`value` cut to `limit` characters on one line; the whole value in its tooltip."""
    text = str(value)
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return format_html('<span class="bos-id" title="{}">{}</span>', text, shown)


def format_duration(seconds: float | None) -> str:
    """`340 ms` below a second, else `format_seconds` (`2.35 s`, `2 min 05 s`, `1.5 h`)."""
    if seconds is not None and 0 <= seconds < 1:
        return f"{round(seconds * 1000)} ms"
    return format_seconds(seconds)


# --- A batch's report -----------------------------------------------------------------------


def _cell(value: Any) -> SafeString:
    """A value of a report as a table cell: lists joined, mappings as `key value` pairs."""
    if value is None:
        return format_html('<span class="bos-none">{}</span>', "—")
    if isinstance(value, Mapping):
        if not value:
            return format_html('<span class="bos-none">{}</span>', "none")
        return format_html_join(", ", "{} {}", ((k, v) for k, v in value.items()))
    if isinstance(value, list | tuple):
        if not value:
            return format_html('<span class="bos-none">{}</span>', "none")
        if all(not isinstance(v, Mapping | list | tuple) for v in value):
            return format_html("{}", ", ".join(str(v) for v in value))
    if isinstance(value, list | tuple | Mapping):
        return format_html("<code>{}</code>", str(value))
    if isinstance(value, float):
        return format_html("{}", f"{value:g}")
    return format_html("{}", value)


def report_tables(report: Mapping[str, Any] | None) -> SafeString:
    """A batch's report (`{phase: output}`) as one table per phase: a row per key."""
    if not report:
        return format_html('<p class="bos-none">{}</p>', "No report yet: it is written when the batch ends.")
    tables = []
    for phase, output in report.items():
        rows: list[tuple[str, SafeString]] = (
            [(str(key).replace("_", " "), _cell(value)) for key, value in output.items()]
            if isinstance(output, Mapping)
            else [("output", _cell(output))]
        )
        tables.append(
            format_html(
                '<table class="bos-report"><caption>{}</caption><tbody>{}</tbody></table>',
                phase,
                format_html_join("", "<tr><th scope='row'>{}</th><td>{}</td></tr>", rows),
            )
        )
    return format_html_join("", "{}", ((t,) for t in tables))


def failed_items_table(items: Iterable[Any], total: int, more_url: str) -> SafeString:
    """The first failed items (key, phase, error class, error), and a link to all `total`.

    The error is shown as the API's items endpoint gives it (`last_error`)."""
    rows = [
        (
            short_id(item.key, 40),
            item.failed_phase or "—",
            item.error_class or "—",
            mask_error(item.last_error) or "—",
        )
        for item in items
    ]
    if not rows:
        return format_html('<p class="bos-none">{}</p>', "No item failed.")
    shown = len(rows)
    more = (
        format_html('<p><a href="{}">All {} failed items</a></p>', more_url, total)
        if total > shown
        else format_html('<p><a href="{}">{}</a></p>', more_url, "These items in the item list")
    )
    return format_html(
        '<table class="bos-failed-items"><thead><tr><th>item</th><th>phase</th><th>error class</th>'
        "<th>error</th></tr></thead><tbody>{}</tbody></table><p>{}</p>{}",
        format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class='bos-error'>{}</td></tr>",
            rows,
        ),
        f"{shown} of {total} failed items shown." if total > shown else f"{total} failed item(s).",
        more,
    )


# --- Masking what a page shows ----------------------------------------------------------------


def _masked(value: Any) -> Any:
    """A field's value masked: JSON values by field names and patterns, a text holding
    JSON (a Celery task's arguments or result) likewise, other texts by patterns."""
    if isinstance(value, str):
        if value[:1] in ("{", "["):
            try:
                return json.dumps(mask_value(json.loads(value)))
            except ValueError:
                pass
        return mask_error(value)
    return mask_value(value)


def mask_shown(obj: Any, *, payload_fields: Iterable[str], error_fields: Iterable[str]) -> None:
    """Mask, on an object about to be shown (never saved), the values of `payload_fields`
    (for a viewer: the caller leaves them out for operators and admins) and of
    `error_fields` (for everybody: errors are stored masked; this covers older rows)."""
    for name in (*payload_fields, *error_fields):
        value = getattr(obj, name, None)
        if value is not None:
            setattr(obj, name, _masked(value))
