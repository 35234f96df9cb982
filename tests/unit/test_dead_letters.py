"""The consumer's rules for one failed record: transient or not, and how it fits the DLQ."""

from __future__ import annotations

import psycopg
import pytest
from django.db import DataError, IntegrityError, InterfaceError, OperationalError, ProgrammingError
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError
from kombu.exceptions import OperationalError as BrokerDown

from orchestrator.contracts import validate_headers
from orchestrator.kafka.consumer import (
    DLQ_RECORD_OVERHEAD,
    MAX_DEAD_LETTER_KEY,
    DeadLetterFailed,
    dlq_headers,
    fit_dead_letter,
    is_transient,
)

pytestmark = pytest.mark.unit


def record(value: bytes | None, key: bytes | None = b"acme:x", offset: int = 7) -> ConsumerRecord:
    return ConsumerRecord(
        topic="bos.batch.requested",
        partition=3,
        leader_epoch=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        headers=[],
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        serialized_header_size=0,
    )


def wrapped(django_error: type[Exception], sqlstate: str | None) -> Exception:
    """A Django database error as Django raises it: the driver's error as its cause."""
    cause = psycopg.Error("boom")
    if sqlstate is not None:
        cause = type("E", (psycopg.Error,), {"sqlstate": sqlstate})("boom")
    error = django_error("boom")
    error.__cause__ = cause
    return error


def decoded(headers: list[tuple[str, bytes]]) -> dict[str, str]:
    return {name: value.decode() for name, value in headers}


@pytest.mark.parametrize(
    "error",
    [
        DeadLetterFailed("dlq"),
        KafkaTimeoutError(),
        NotLeaderForPartitionError(),
        BrokerDown("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        ConnectionRefusedError(),
        wrapped(OperationalError, None),  # connection refused, server closed the connection
        wrapped(OperationalError, "57P01"),  # admin shutdown
        wrapped(OperationalError, "53300"),  # too many connections
        wrapped(OperationalError, "40001"),  # serialization failure
        wrapped(ProgrammingError, "42P01"),  # a table missing: migrations not run yet
        wrapped(InterfaceError, None),  # connection already closed
        psycopg.OperationalError("connection failed"),
    ],
)
def test_failures_of_a_dependency_are_transient(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        wrapped(DataError, "22P05"),  # jsonb: unsupported Unicode escape sequence
        wrapped(DataError, "22008"),  # datetime field overflow
        wrapped(DataError, None),  # psycopg: text fields cannot contain NUL (client side)
        wrapped(IntegrityError, "23503"),
        wrapped(OperationalError, "54000"),  # program limit exceeded
        MessageSizeTooLargeError(),
        ValueError("a bug"),
        OverflowError("date value out of range"),
        KeyError("x"),
    ],
)
def test_failures_caused_by_the_record_are_not_transient(error: Exception) -> None:
    assert not is_transient(error)


def test_dead_letter_headers_are_the_contracts_and_always_encodable() -> None:
    headers = dlq_headers(record(b"{}"), "invalid_schema", "data.items[0].key: bad \ud800 " + "x" * 2000)
    got = decoded(headers)
    validate_headers("dlq", got)
    assert got["bos-source-partition"] == "3" and got["bos-source-offset"] == "7"
    assert len(got["bos-error"]) <= 1000


def test_a_dead_letter_that_fits_is_unchanged() -> None:
    headers = dlq_headers(record(b"x" * 1000), "invalid_json", "no")
    assert fit_dead_letter(b"k", b"x" * 1000, headers, limit=1_048_576) == (b"k", b"x" * 1000, headers)


def test_a_dead_letter_too_large_keeps_its_first_bytes_and_says_how_large_it_was() -> None:
    value = b"{" + b"x" * 2_000_000
    headers = dlq_headers(record(value), "too_large", "message is 2000001 bytes; at most 1048576")
    key, cut, fitted = fit_dead_letter(b"acme:x", value, headers, limit=1_048_576)
    got = decoded(fitted)
    validate_headers("dlq", got)
    assert key == b"acme:x"
    assert got["bos-truncated"] == "true" and got["bos-original-size"] == "2000001"
    assert got["bos-source-offset"] == "7"
    assert cut is not None and value.startswith(cut)
    size = len(key) + len(cut) + sum(len(n) + len(v) for n, v in fitted) + DLQ_RECORD_OVERHEAD
    assert 1_048_576 - 100 < size <= 1_048_576


def test_a_huge_key_is_cut_too() -> None:
    key = b"k" * 2_000_000
    headers = dlq_headers(record(b"v", key=key), "invalid_json", "no")
    cut_key, value, fitted = fit_dead_letter(key, b"v", headers, limit=1_048_576)
    assert cut_key == key[:MAX_DEAD_LETTER_KEY] and value == b"v"
    assert decoded(fitted)["bos-original-key-size"] == "2000000"


def test_an_empty_message_fits_as_it_is() -> None:
    headers = dlq_headers(record(None, key=None), "empty_message", "message has no value")
    assert fit_dead_letter(None, None, headers, limit=1_048_576) == (None, None, headers)


def test_a_dead_letter_s_reason_is_masked() -> None:
    """A validation error may quote the record: its e-mails and credentials are masked."""
    headers = dict(
        dlq_headers(
            record(b"{}"),
            "invalid_message",
            "data.email: 'ann@example.com' rejected, api_key=0123456789abcdef0123",
        )
    )
    assert headers["bos-error"] == b"data.email: 'a***@example.com' rejected, api_key=[masked]"
