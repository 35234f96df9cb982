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
