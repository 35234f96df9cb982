"""The API's one request parser: JSON by the rules of orchestrator.api.input_rules, size-capped.

DRF's JSONParser reads the request stream without Django's size check and hands `json.load`
whatever comes: NaN, 1e999 (infinity), U+0000, nesting a thousand deep. Here the body is read
up to DATA_UPLOAD_MAX_MEMORY_SIZE (a larger one is a 413 `too_large`, CONTRACT §5) and parsed
by `input_rules.loads`, so a view never sees a value that PostgreSQL, the encoder or the
recursion limit would refuse later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

from orchestrator.api import input_rules
from orchestrator.errors import InvalidRequest, OrchestrationError

# Nothing from orchestrator.api.errors here: it imports DRF's views, which import this module.


class TooLarge(OrchestrationError):
    """A request body over the size limit (CONTRACT §5: 413 `too_large`)."""

    status = 413


def body_limit() -> int | None:
    """The largest request body accepted, in bytes (None: no limit)."""
    limit: int | None = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return limit


def too_large(size: int | str, limit: int) -> TooLarge:
    return TooLarge("too_large", f"the request body is {size} bytes; at most {limit} are accepted")


class StrictJSONParser(BaseParser):
    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(
        self,
        stream: IO[bytes] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        if stream is None:
            return {}
        limit = body_limit()
        data = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise too_large(f"more than {limit}", limit)
        try:
            return input_rules.loads(data)
        except input_rules.InputRejected as exc:
            # Text that is not JSON at all keeps the code the API has always given it.
            code = "parse_error" if exc.code == "invalid_json" else exc.code
            raise InvalidRequest(code, exc.message) from exc
