"""Traces: OpenTelemetry, set up once per process, and only when an OTLP endpoint is set.

Configured only by OpenTelemetry's own variables (CONTRACT §1), which its SDK reads:
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns traces on;
`OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`), `OTEL_SERVICE_NAME` and
`OTEL_TRACES_SAMPLER(_ARG)` tune them. BOS only checks their values at start-up
(`check_environment`, from the settings) so a bad one stops the process naming it.

Without an endpoint nothing is installed — no tracer provider, exporter or
instrumentation — and every helper here returns at once (`enabled()` is one global read):
no tracing cost. With one, `setup(kind)` installs, once per process and after any fork
(gunicorn's `post_fork`, Celery's `worker_process_init`): the SDK's tracer provider with
a `BatchSpanProcessor` and the OTLP/HTTP exporter, a `service.name` per kind of process
(`SERVICE_NAMES`, `OTEL_SERVICE_NAME` wins), and OpenTelemetry's instrumentations of
Django (web), Celery, psycopg and httpx. `shutdown()` flushes what is still buffered.

The batch's trace context travels as a W3C `traceparent` string: stored on the Batch at
intake and on each OutboxEvent, written on outbound Kafka records. `within()` runs a block
in a stored context unless the current span already belongs to that trace.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)

SERVICE_NAMES = {
    "web": "bos-web",
    "worker": "bos-worker",
    "beat": "bos-beat",
    "consumer": "bos-consumer",
    "publisher": "bos-publisher",
}
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# The OTEL_* variables BOS checks at start-up (declared in orchestrator/config/registry.py).
CHECKED_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)
TRACER_NAME = "bos"
HEADER = "traceparent"
# W3C Trace Context, version 00: trace id, parent (span) id, flags; all-zero ids are invalid.
_TRACEPARENT = re.compile(r"^00-(?!0{32})([0-9a-f]{32})-(?!0{16})([0-9a-f]{16})-([0-9a-f]{2})$")
_PROPAGATOR = TraceContextTextMapPropagator()

_provider: TracerProvider | None = None
_provider_pid: int | None = None


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint is set (and the SDK is not
    disabled with `OTEL_SDK_DISABLED=true`)."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def check_environment(environ: Mapping[str, str]) -> None:
    """Start-up: the OTEL_* variables hold values the SDK will use as meant, or
    ImproperlyConfigured names the variable (the SDK itself would only log and fall back)."""
    from urllib.parse import urlparse

    from django.core.exceptions import ImproperlyConfigured

    from orchestrator.config.registry import BY_ENV, ConfigInvalid, parse

    for name in CHECKED_VARIABLES:
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        declared = BY_ENV.get(name.replace("_TRACES_PROTOCOL", "_PROTOCOL"))
        assert declared is not None, name
        if declared.type == "url":
            if urlparse(raw).scheme not in ("http", "https") or not urlparse(raw).netloc:
                raise ImproperlyConfigured(f"{name} must be an http:// or https:// URL; got {raw!r}")
            continue
        try:
            parse(declared, raw.lower() if declared.type == "choice" else raw)
        except ConfigInvalid as exc:
            raise ImproperlyConfigured(f"{name} {exc.message}") from exc


def enabled() -> bool:
    """Whether this process records spans (`setup` installed a provider here)."""
    return _provider is not None


def setup(kind: str) -> bool:
    """Install tracing in this process, once, if configured; whether it is on.

    Call it in the process that does the work, after any fork: a BatchSpanProcessor's
    export thread does not survive one.
    """
    global _provider, _provider_pid
    if kind not in SERVICE_NAMES:
        raise ValueError(f"unknown kind of process {kind!r}; one of {', '.join(SERVICE_NAMES)}")
    if _provider is not None and _provider_pid == os.getpid():
        return True
    if not configured():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) wins over the kind's name.
    resource = Resource.create({SERVICE_NAME: SERVICE_NAMES[kind], "bos.process": kind}).merge(
        OTELResourceDetector().detect()
    )
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG), the exporter's URL from the endpoint.
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider, _provider_pid = provider, os.getpid()
    _instrument(kind, provider)
    logger.info("traces exported over OTLP as %s", resource.attributes.get(SERVICE_NAME))
    return True


def _instrument(kind: str, provider: TracerProvider) -> None:
    from django.db import connections
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    # A connection opened before this point would not be traced: close it (a pool process
    # inherits none anyway, Celery closes them at fork).
    connections.close_all()
    PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    if kind == "publisher":
        return
    if kind == "web":
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument(tracer_provider=provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    if kind != "worker":
        # Celery's instrumentation closes a send's span only for a task it finds registered:
        # processes that only send tasks load them, as the worker does.
        from celery import current_app

        current_app.loader.import_default_modules()


def shutdown() -> None:
    """Export what is buffered and stop (a process ending: SIGTERM, a pool process exiting)."""
    global _provider, _provider_pid
    if _provider is None or _provider_pid != os.getpid():
        return
    provider, _provider, _provider_pid = _provider, None, None
    provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def accepted_traceparent(value: str | bytes | None) -> str:
    """An inbound `traceparent` if it is a valid W3C version-00 one (lower-cased), else ''."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not value:
        return ""
    value = value.strip().lower()
    return value if _TRACEPARENT.match(value) else ""


def trace_id_of(traceparent: str) -> str:
    """The trace id (32 hex digits) a valid traceparent names, else ''."""
    match = _TRACEPARENT.match(traceparent or "")
    return match.group(1) if match else ""


def traceparent_of(span_context: trace.SpanContext) -> str:
    if not span_context.is_valid:
        return ""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def current_traceparent() -> str:
    """The traceparent of the current span ('' with tracing off or no span)."""
    if _provider is None:
        return ""
    return traceparent_of(trace.get_current_span().get_span_context())


def context_of(traceparent: str) -> otel_context.Context:
    """A context whose (remote) parent is `traceparent`; an empty one (a new trace) if invalid."""
    if not accepted_traceparent(traceparent):
        return otel_context.Context()
    return _PROPAGATOR.extract({HEADER: traceparent}, context=otel_context.Context())


def traceparent_in(traceparent: str) -> str:
    """The current span's traceparent when it is in the trace `traceparent` names, else
    `traceparent` (with tracing off: `traceparent` as it is, passed through)."""
    if _provider is None or not traceparent:
        return traceparent
    current = trace.get_current_span().get_span_context()
    if current.is_valid and f"{current.trace_id:032x}" == trace_id_of(traceparent):
        return traceparent_of(current)
    return traceparent


@contextmanager
def within(traceparent: str) -> Iterator[None]:
    """Run the block in the trace `traceparent` names, unless the current span is already
    in it (a task of the batch sending the next one: its own span is the better parent).

    A reconciler pass, beat, or the commit of another batch sends a batch's work from a
    context of no trace or another one: the stored context puts it back in its batch's.
    """
    if _provider is None or not traceparent:
        yield
        return
    current = trace.get_current_span().get_span_context()
    if current.is_valid and f"{current.trace_id:032x}" == trace_id_of(traceparent):
        yield
        return
    token = otel_context.attach(context_of(traceparent))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def quiet() -> Iterator[None]:
    """No instrumentation spans in the block (a process's idle bookkeeping: polling queries
    that belong to no request would each start a trace of their own)."""
    if _provider is None:
        yield
        return
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        yield


def provider_installed() -> bool:
    """Whether the global tracer provider is a real one (not OpenTelemetry's no-op proxy)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """Span attributes without the unknown (None, '') values."""
    return {k: v for k, v in values.items() if v is not None and v != ""}
