"""BOS_LOG_FORMAT's choice, the processors every line goes through, and the context a
Celery task message carries."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from django.core.exceptions import ImproperlyConfigured

from bos_project.celery import _bind_task_context, _carry_context, _clear_task_context
from orchestrator.observability import context
from orchestrator.observability.logging import HousekeepingAtDebug, log_format, logging_config

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_context() -> Iterator[None]:
    context.clear()
    yield
    context.clear()


@pytest.mark.parametrize(
    ("environment", "value", "expected"),
    [
        ("development", None, "console"),
        ("development", "", "console"),
        ("test", None, "json"),
        ("production", None, "json"),
        ("development", "json", "json"),
        ("production", "console", "console"),
        ("production", " JSON ", "json"),
    ],
)
def test_format_is_console_in_development_json_otherwise_unless_chosen(
    environment: str, value: str | None, expected: str
) -> None:
    assert log_format(environment, value) == expected


def test_an_unknown_format_stops_start_up_naming_the_variable() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"BOS_LOG_FORMAT must be one of json, console; got 'xml'"):
        log_format("production", "xml")


def capture(fmt: str, name: str = "bos.test") -> tuple[logging.Logger, io.StringIO]:
    """A logger of its own whose handler is configured as LOGGING configures the root's."""
    config = logging_config(fmt=fmt, level="INFO")["formatters"]["structlog"]
    factory = config.pop("()")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(factory(**config))
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def one_json_line(stream: io.StringIO) -> dict[str, Any]:
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    return value


def test_a_stdlib_line_in_json_carries_the_bound_context() -> None:
    logger, stream = capture("json")
    with context.bound(correlation_id="c-1", batch_id="b-1", tenant="acme", phase="score", task_id="t-1"):
        logger.info("chunk %s done", "0-50")
    line = one_json_line(stream)
    assert line["message"] == "chunk 0-50 done"
    assert line["level"] == "info" and line["logger"] == "bos.test"
    assert {k: line[k] for k in context.KEYS} == {
        "correlation_id": "c-1",
        "batch_id": "b-1",
        "tenant": "acme",
        "phase": "score",
        "task_id": "t-1",
    }
    assert line["timestamp"].endswith("Z") and isinstance(line["pid"], int)


def test_a_structlog_line_goes_through_the_same_pipeline() -> None:
    _, stream = capture("json", "bos.test.structlog")
    with context.bound(correlation_id="c-2"):
        structlog.get_logger("bos.test.structlog").info("phase started", items=3)
    line = one_json_line(stream)
    assert line["message"] == "phase started"
    assert line["items"] == 3 and line["correlation_id"] == "c-2"


def test_no_context_bound_means_no_context_keys() -> None:
    logger, stream = capture("json", "bos.test.bare")
    logger.warning("plain")
    line = one_json_line(stream)
    assert not set(context.KEYS) & set(line)


def test_an_exception_is_one_json_line_with_its_traceback() -> None:
    logger, stream = capture("json", "bos.test.exc")
    try:
        raise ValueError("bad value")
    except ValueError:
        logger.exception("handling failed")
    line = one_json_line(stream)
    assert "ValueError: bad value" in line["exception"]


def test_console_format_shows_the_context_as_key_values() -> None:
    logger, stream = capture("console", "bos.test.console")
    with context.bound(correlation_id="c-3", batch_id="b-3"):
        logger.info("hello")
    out = stream.getvalue()
    assert "hello" in out and "correlation_id=c-3" in out and "batch_id=b-3" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_bound_restores_the_outer_context() -> None:
    context.bind(correlation_id="outer")
    with context.bound(correlation_id="inner", batch_id="b"):
        assert context.current() == {"correlation_id": "inner", "batch_id": "b"}
    assert context.current() == {"correlation_id": "outer"}


@pytest.mark.parametrize("value", ["", "   ", "x" * 201, "bad\nid", None])
def test_an_unusable_caller_correlation_id_is_refused(value: str | None) -> None:
    assert context.accepted_correlation_id(value) is None


def trace_record(task: str, level: int = logging.INFO, name: str = "celery.app.trace") -> logging.LogRecord:
    return logging.LogRecord(
        name, level, __file__, 1, "Task %(name)s[%(id)s] succeeded", ({"name": task, "id": "1"},), None
    )


def test_housekeeping_task_lines_are_demoted_to_debug() -> None:
    keep = HousekeepingAtDebug(["tasks.maintenance.reconcile_task"])
    logger = logging.getLogger("celery.app.trace")
    old = logger.level
    try:
        logger.setLevel(logging.INFO)
        assert not keep.filter(trace_record("tasks.maintenance.reconcile_task"))
        logger.setLevel(logging.DEBUG)
        record = trace_record("tasks.maintenance.reconcile_task")
        assert keep.filter(record) and record.levelname == "DEBUG"
        logger.setLevel(logging.INFO)
        other = trace_record("tasks.phases.run_item_chunk_task")
        assert keep.filter(other) and other.levelname == "INFO"
        # A failure of housekeeping is never hidden.
        assert keep.filter(trace_record("tasks.maintenance.reconcile_task", logging.ERROR))
    finally:
        logger.setLevel(old)


def test_a_task_message_carries_the_senders_context_but_not_its_task_id() -> None:
    headers: dict[str, Any] = {}
    with context.bound(correlation_id="c-4", batch_id="b-4", tenant="acme", task_id="sender"):
        _carry_context(headers=headers)
    assert headers[context.TASK_HEADER] == {"correlation_id": "c-4", "batch_id": "b-4", "tenant": "acme"}


def test_a_task_message_about_another_batch_keeps_that_batchs_context() -> None:
    headers: dict[str, Any] = {
        context.TASK_HEADER: {"batch_id": "b-6", "tenant": "beta", "correlation_id": "c-6"}
    }
    with context.bound(correlation_id="c-5", batch_id="b-5", phase="score"):
        _carry_context(headers=headers)
    assert headers[context.TASK_HEADER] == {"batch_id": "b-6", "tenant": "beta", "correlation_id": "c-6"}


def test_a_task_runs_in_its_messages_context_and_leaves_none_behind() -> None:
    class Request:
        bos_log = {"correlation_id": "c-7", "batch_id": "b-7", "phase": "validate"}

    class Task:
        request = Request()

    context.bind(correlation_id="left-over", tenant="old")
    _bind_task_context(task_id="t-7", task=Task())
    assert context.current() == {
        "correlation_id": "c-7",
        "batch_id": "b-7",
        "phase": "validate",
        "task_id": "t-7",
    }
    _clear_task_context()
    assert context.current() == {}


def test_a_service_call_sends_the_bound_correlation_id_when_none_is_given() -> None:
    from orchestrator.service_clients import context as call

    with context.bound(correlation_id="c-8"):
        assert call.correlation_id() == "c-8"
        assert call.correlation_id("explicit") == "explicit"
        with call.call_context(correlation_id="batch-cid"):
            assert call.correlation_id() == "batch-cid"
    assert call.correlation_id() not in ("c-8", "batch-cid")


def test_a_task_about_a_batch_names_it_in_flower_and_carries_its_context() -> None:
    from orchestrator.workflows import _options

    log = {"correlation_id": "c-9", "batch_id": "b-9", "tenant": "acme", "phase": "score"}
    options = _options("bos.items", log, (12, 0, 50, 1, 1))
    assert options["queue"] == "bos.items"
    assert options["headers"] == {context.TASK_HEADER: log}
    assert options["argsrepr"] == "(12, 0, 50, 1, 1) batch_id=b-9 phase=score"
    assert _options(None) == {}
