"""Tracing's set-up and trace context, without a collector: nothing is installed without an
endpoint; OTEL_* values are checked at start-up; traceparents are read strictly."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from orchestrator.observability import tracing

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_without_an_endpoint_a_process_installs_no_tracer_provider() -> None:
    # This test process, like every BOS process started without OTEL_EXPORTER_OTLP_ENDPOINT.
    assert not tracing.configured()
    assert tracing.setup("worker") is False
    assert not tracing.enabled()
    assert not tracing.provider_installed()  # OpenTelemetry's no-op proxy provider
    assert tracing.current_traceparent() == ""


def test_an_endpoint_asks_for_traces_unless_the_sdk_is_disabled() -> None:
    assert tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "})
    assert not tracing.configured(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "must be one of http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json", "must be one of http/protobuf"),
        ("OTEL_TRACES_SAMPLER", "sometimes", "must be one of always_on"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "must be at most 1"),
        ("OTEL_TRACES_SAMPLER_ARG", "half", "must be a number"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "must be an http:// or https:// URL"),
    ],
)
def test_a_bad_otel_value_stops_start_up_naming_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=name) as raised:
        tracing.check_environment({name: value})
    assert says in str(raised.value)


def test_good_otel_values_pass_the_start_up_check() -> None:
    tracing.check_environment(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.internal:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_SERVICE_NAME": "anything",
        }
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        None,
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a version BOS does not read
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        b"\xff\xfe",
    ],
)
def test_an_invalid_inbound_traceparent_is_ignored(value: str | bytes | None) -> None:
    assert tracing.accepted_traceparent(value) == ""


def test_a_valid_inbound_traceparent_is_kept_lower_cased() -> None:
    assert tracing.accepted_traceparent(VALID.upper().replace("00-", "00-", 1)) == VALID
    assert tracing.accepted_traceparent(VALID.encode()) == VALID
    assert tracing.trace_id_of(VALID) == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_with_tracing_off_a_stored_traceparent_passes_through() -> None:
    assert tracing.traceparent_in(VALID) == VALID
    with tracing.within(VALID):
        assert tracing.current_traceparent() == ""


def test_a_replayed_event_carries_its_stored_traceparent() -> None:
    from orchestrator.contracts import validate_headers
    from orchestrator.kafka.replay import replay_headers

    headers = replay_headers(
        "batch.completed", {}, replay_id="replay-1", replayed_at="2026-12-02T00:00:00Z", traceparent=VALID
    )
    decoded = {name: value.decode() for name, value in headers}
    assert decoded["traceparent"] == VALID
    validate_headers("event", decoded)
    untraced = replay_headers("batch.completed", {}, replay_id="replay-1", replayed_at="2026-12-02T00:00:00Z")
    assert "traceparent" not in dict(untraced)
