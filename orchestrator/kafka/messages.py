"""Parsing inbound Kafka messages (CONTRACT §2): the JSON Schema check, then pydantic.

`parse_envelope` checks a message against its JSON Schema in `schemas/inbound/` (the
contract, see orchestrator/contracts.py) and then parses it into the typed models
below, which the consumer's handlers use. The two say the same; the models add what
JSON Schema cannot say (item keys unique within a batch), and tests/unit/
test_schema_agreement.py keeps them in step. A message that fails here can never
succeed: the consumer dead-letters it with the reason. Unknown extra fields are
ignored so producers can add fields compatibly.

Before any of that, the value is read with `orchestrator.input_safety.loads`, which
refuses what PostgreSQL could not store (U+0000 or a lone surrogate in any string, NaN
and Infinity, integers too long to convert) and nesting deeper than
`input_safety.MAX_DEPTH`, naming the JSON path: such a message would otherwise pass the
schema and fail at the INSERT, looking like a database failure.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator import input_safety
from orchestrator.input_safety import ProblemKind, UnsafeJSON

TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SUPPORTED_SCHEMA_VERSIONS = (1,)
# Problems of text that is JSON in form but not in substance (NaN, nesting, huge integers)
# are `invalid_json`; a string PostgreSQL cannot hold breaks the rules of its field.
_TEXT_PROBLEMS = frozenset({ProblemKind.NUL, ProblemKind.SURROGATE})


class MessageRejected(Exception):
    """An inbound message that can never succeed; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _in_range(value: datetime | None) -> datetime | None:
    """`value`, if it is a time in UTC too: 9999-12-31T23:59:59-23:59 is year 10000 there,
    which PostgreSQL would store and Python could never read back."""
    if value is not None and value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("must be a time between the years 1 and 9999 in UTC") from exc
    return value


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class ItemIn(_Lenient):
    key: str = Field(min_length=1, max_length=200)
    payload: Any = None


class BatchRequestedData(_Lenient):
    external_id: str = Field(min_length=1, max_length=200)
    pipeline: str = Field(min_length=1, max_length=100)
    pipeline_version: int | None = Field(default=None, ge=1)
    priority: int = Field(default=5, ge=0, le=9)
    deadline: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    items: list[ItemIn] = Field(min_length=1)

    @field_validator("items")
    @classmethod
    def _unique_keys(cls, items: list[ItemIn]) -> list[ItemIn]:
        keys = [i.key for i in items]
        if len(set(keys)) != len(keys):
            raise ValueError("item keys must be unique within a batch")
        return items

    @field_validator("deadline")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("deadline must include a time zone (e.g. ...Z)")
        return _in_range(value)


class BatchRefData(_Lenient):
    external_id: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=500)


class Envelope(_Lenient):
    event_id: str = Field(min_length=1, max_length=100)
    event_type: Literal["batch.requested", "batch.cancel_requested", "batch.retry_requested"]
    schema_version: int
    occurred_at: datetime | None = None
    correlation_id: str | None = Field(default=None, max_length=200)
    tenant: str = Field(pattern=TENANT_PATTERN)
    data: dict[str, Any]

    @field_validator("occurred_at")
    @classmethod
    def _occurred_in_range(cls, value: datetime | None) -> datetime | None:
        return _in_range(value)

    @field_validator("schema_version")
    @classmethod
    def _supported(cls, value: int) -> int:
        if value not in SUPPORTED_SCHEMA_VERSIONS:
            raise ValueError(f"schema_version {value} is not supported")
        return value


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_envelope(value: bytes | None, *, max_bytes: int) -> Envelope:
    if value is None:
        raise MessageRejected("empty_message", "message has no value")
    if len(value) > max_bytes:
        raise MessageRejected("too_large", f"message is {len(value)} bytes; at most {max_bytes}")
    try:
        raw = input_safety.loads(value)
    except UnsafeJSON as exc:
        code = "invalid_schema" if exc.problem.kind in _TEXT_PROBLEMS else "invalid_json"
        raise MessageRejected(code, str(exc.problem)) from exc
    except (UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise MessageRejected("invalid_json", f"value is not UTF-8 JSON: {exc}") from exc
    except RecursionError as exc:  # cannot happen past the depth check; never crash on it
        raise MessageRejected("invalid_json", "value is nested too deeply to read") from exc
    if not isinstance(raw, dict):
        raise MessageRejected("invalid_schema", "value must be a JSON object")
    # Imported here: orchestrator.contracts imports MessageRejected from this module.
    from orchestrator.contracts import validate_inbound

    validate_inbound(raw)
    try:
        return Envelope.model_validate(raw)
    except ValidationError as exc:
        raise MessageRejected("invalid_schema", _describe(exc)) from exc


def parse_data(model: type[BatchRequestedData] | type[BatchRefData], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise MessageRejected("invalid_schema", "data." + _describe(exc)) from exc
