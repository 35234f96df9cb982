"""Publishing definitions: templates are expanded, bad ones are refused with the reason."""

from __future__ import annotations

import pytest

from orchestrator.errors import InvalidRequest
from orchestrator.models import PipelineVersion
from orchestrator.services.pipelines import pipeline_publish

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db")]

FAN_OUT = {
    "template": "fan-out-analysis",
    "params": {
        "validator": "essays.validate",
        "analyses": [
            {"name": "spellcheck", "handler": "essays.spellcheck"},
            {"name": "text_stats", "handler": "essays.text_stats"},
        ],
        "aggregator": "essays.aggregate",
    },
}


def test_a_template_is_stored_as_the_plain_definition_it_expands_to() -> None:
    version = pipeline_publish(name="essays-from-template", definition=FAN_OUT).version
    stored = PipelineVersion.objects.get(id=version.id).definition
    assert "template" not in stored
    assert [(p["name"], p.get("after", [])) for p in stored["phases"]] == [
        ("validate", []),
        ("spellcheck", ["validate"]),
        ("text_stats", ["validate"]),
        ("aggregate", ["spellcheck", "text_stats"]),
    ]
    # Publishing the same template again is the same definition: no new version.
    assert pipeline_publish(name="essays-from-template", definition=FAN_OUT).created is False


def test_a_template_missing_a_parameter_is_refused_naming_it() -> None:
    params = {k: v for k, v in FAN_OUT["params"].items() if k != "aggregator"}  # type: ignore[attr-defined]
    with pytest.raises(InvalidRequest) as err:
        pipeline_publish(name="incomplete", definition={"template": "fan-out-analysis", "params": params})
    assert err.value.code == "missing_parameter"
    assert "aggregator" in err.value.message


def test_an_unknown_template_is_refused() -> None:
    with pytest.raises(InvalidRequest) as err:
        pipeline_publish(name="nope", definition={"template": "no-such-template", "params": {}})
    assert err.value.code == "unknown_template"


def test_the_split_command_sets_and_clears_a_split(capsys: pytest.CaptureFixture[str]) -> None:
    from django.core.management import call_command

    from orchestrator.models import Pipeline

    pipeline_publish(name="two", definition=FAN_OUT)
    second = dict(FAN_OUT, description="second")
    pipeline_publish(name="two", definition=second)
    call_command("pipeline_split", "two", "1:70", "2:30")
    assert "v1 70%, v2 30%" in capsys.readouterr().out
    assert Pipeline.objects.get(name="two").split == [
        {"version": 1, "weight": 70},
        {"version": 2, "weight": 30},
    ]
    call_command("pipeline_split", "two", "--clear")
    assert Pipeline.objects.get(name="two").split == []
