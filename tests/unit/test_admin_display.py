"""How the admin and `make demo` show values: state badges from one map, ids cut short
with a tooltip, durations in ms below a second, reports as tables, empty report values
explained, and where to look next."""

from __future__ import annotations

import uuid

import pytest

from orchestrator import admin_display as display
from orchestrator.management.commands.demo import report_rows, where_next
from orchestrator.models import Batch, PhaseRun
from orchestrator.states import BatchState, ItemState, PhaseState

pytestmark = pytest.mark.unit


def test_every_batch_phase_and_item_state_has_a_tone() -> None:
    for state in [*BatchState, *PhaseState, *ItemState]:
        assert display.state_tone(state.value) != "other", state
    assert display.state_tone("something new") == "other"


def test_a_state_badge_carries_its_tone_class() -> None:
    badge = display.state_badge("completed_with_errors")
    assert 'class="bos-state bos-state--warn"' in badge
    assert "completed with errors" in badge
    assert display.state_badge("FAILURE") == '<span class="bos-state bos-state--bad">FAILURE</span>'


def test_a_long_id_is_cut_on_one_line_with_the_whole_id_in_its_title() -> None:
    long_id = "acme-2026-11-29-" + "x" * 60
    shown = display.short_id(long_id)
    assert f'title="{long_id}"' in shown
    assert ">" + long_id[:23] + "…<" in shown
    assert display.short_id("<b>") == '<span class="bos-id" title="&lt;b&gt;">&lt;b&gt;</span>'


def test_durations_below_a_second_are_in_milliseconds() -> None:
    assert display.format_duration(0.0423) == "42 ms"
    assert display.format_duration(0) == "0 ms"
    assert display.format_duration(2.5) == "2.50 s"
    assert display.format_duration(125) == "2 min 05 s"
    assert display.format_duration(None) == "—"


def test_a_report_is_one_table_per_phase_with_a_row_per_value() -> None:
    html = display.report_tables(
        {"aggregate": {"essays_analysed": 5, "grades": {"A": 2}, "misspellings": ["teh"], "score_mean": None}}
    )
    assert html.count("<table") == 1
    assert "<caption>aggregate</caption>" in html
    assert "<th scope='row'>essays analysed</th><td>5</td>" in html
    assert "A 2" in html and "teh" in html and "—" in html
    assert "No report yet" in display.report_tables(None)


def _phase(name: str, state: str, skip_reason: str = "") -> PhaseRun:
    return PhaseRun(name=name, state=state, skip_reason=skip_reason, mode="per_item", position=0)


def test_the_demo_says_why_the_score_mean_is_empty() -> None:
    phases = {"score": _phase("score", "skipped", "when: metadata.get('scoring') == True is false")}
    rows = dict(report_rows({"aggregate": {"score_mean": None, "essays_analysed": 3}}, phases))
    assert rows["essays analysed"] == "3"
    assert rows["score mean"].startswith("— (the score phase did not run: skipped: when: metadata")
    assert "--scoring" in rows["score mean"]
    assert report_rows(None, {}) == [
        ("aggregate", "no report: the aggregate phase did not run (see the phases above)")
    ]


def test_the_demo_ends_with_the_batch_page_its_graph_and_the_dashboard() -> None:
    batch = Batch(id=uuid.UUID("45741cc1-7e5d-4c1e-9a0b-3f9d2a1b0c11"))
    text = where_next(batch, base_url="http://127.0.0.1:8000")
    assert f"http://127.0.0.1:8000/admin/orchestrator/batch/{batch.id}/change/" in text
    assert f"http://127.0.0.1:8000/api/v1/batches/{batch.id}/graph/" in text
    assert "http://127.0.0.1:8000/dashboard/" in text
