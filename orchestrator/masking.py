"""Masking: what is sensitive in a value or a text, replaced by a mask — one module for the
API, the admin, the logs, stored errors, fingerprints and events (docs/masking.md).

Two rules. A value under a configured field name (`BOS_MASK_FIELDS`, at any depth of a
JSON value; the name compared without case, `-` or `_`, equal or as its end:
`user_email` is an `email`) becomes `[masked]`. In any string, these patterns are masked:

- e-mail addresses → `j***@example.com` (first character and domain kept);
- card numbers (13–19 digits, alone or in groups split by spaces or dashes, a card
  network's first digits, Luhn-checked) → `****1111`;
- credentials: `Bearer …`/`Token …`/`Basic …` → `Bearer [masked]`; `password=…`,
  `secret: …` → `password=[masked]`; a long value after a name ending in `key` or `token`
  (`api_key=…`, `access_token: …`) → `api_key=[masked]`; a URL's password
  (`postgres://bos:[masked]@db`); JWTs and well-known key formats (`sk_live_…`,
  `ghp_…`, `AKIA…`, `xoxb-…`) → `[masked]`;
- each configured extra pattern (`BOS_MASK_PATTERNS`) → `[masked]`.

Masking is idempotent (a masked text masks to itself). Pure: no Django import (the
import linter holds it to that). `Masker` does the work for a given configuration
(compiled once, cached); `mask_text` / `mask_value` use the current configuration, read
through a thin accessor that `orchestrator.config` installs (`use_source`): the runtime
settings. Where those are not readable (a log line at start-up) the defaults apply.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

MASK = "[masked]"
DEFAULT_FIELDS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "ssn",
    "card_number",
    "cvv",
    "iban",
    "email",
)
MAX_PATTERNS = 50
MAX_PATTERN_CHARS = 500

# A card network's first digits (Visa 4, Mastercard 51–55 and 22–27, Amex 34/37, Diners
# 30/36/38/39, JCB 35, Discover/UnionPay/Maestro 5x/6x): epoch timestamps (1…) and
# 19xx/20xx dates never start like this. Not inside a longer word, id or dashed run (a UUID).
_IIN = r"(?:2[2-7]|3[04-9]|4|5|6)"
_CARD = re.compile(
    r"(?<![\w-])(?:" + _IIN + r"\d{11,17}|" + _IIN + r"\d{2,3}(?:[ -]\d{4,6}){2,4})(?![\w]|-\w)"
)
_EMAIL = re.compile(r"(?<![\w.%+-])([A-Za-z0-9])[A-Za-z0-9._%+-]*@((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})\b")
# The name (and separator) kept, the value masked.
_BEARER = re.compile(r"(\b(?:Bearer|Token|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(://[^\s:/@]+:)[^\s@/]+(?=@)")
_CREDENTIAL = re.compile(r"((?:password|passwd|pwd|secret)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,;]+", re.IGNORECASE)
_KEYED = re.compile(r"((?:key|token)[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9+/_.=-]{16,}", re.IGNORECASE)
_KNOWN = re.compile(
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bxox[abpr]-[A-Za-z0-9-]{10,}"
)
_KNOWN_HINTS = ("eyJ", "_live_", "_test_", "gh", "AKIA", "xox")


def luhn_ok(digits: str) -> bool:
    """Whether `digits` pass the Luhn check (card numbers do; 9 in 10 other numbers do not)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = ord(char) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def _card(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = text.replace(" ", "").replace("-", "")
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        return "****" + digits[-4:]
    return text


def _keep_name(match: re.Match[str]) -> str:
    return match.group(1) + MASK


def _email(match: re.Match[str]) -> str:
    return f"{match.group(1)}***@{match.group(2)}"


def mask_builtin(text: str) -> str:
    """`text` with the built-in patterns masked. Each pattern runs only when the text holds
    what it cannot match without (an `@`, 13 digits, a `=` or `:`…), so a plain message
    costs a few substring checks."""
    if "://" in text and "@" in text:
        text = _URL_USERINFO.sub(_keep_name, text)
    if "=" in text or ":" in text:
        low = text.lower()
        if "key" in low or "token" in low:
            text = _KEYED.sub(_keep_name, text)
        if "pass" in low or "pwd" in low or "secret" in low:
            text = _CREDENTIAL.sub(_keep_name, text)
    if any(hint in text for hint in _KNOWN_HINTS):
        text = _KNOWN.sub(MASK, text)
    if " " in text:
        low = text.lower()
        if "bearer" in low or "token" in low or "basic" in low:
            text = _BEARER.sub(_keep_name, text)
    if "@" in text:
        text = _EMAIL.sub(_email, text)
    if sum(text.count(d) for d in "0123456789") >= 13:  # str.count: far cheaper than a regex scan
        text = _CARD.sub(_card, text)
    return text


def compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """The configured extra patterns, compiled; ValueError names the first bad one."""
    compiled = []
    patterns = list(patterns)
    if len(patterns) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} patterns; got {len(patterns)}")
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"a pattern is a non-empty string; got {pattern!r}")
        if len(pattern) > MAX_PATTERN_CHARS:
            raise ValueError(f"a pattern has at most {MAX_PATTERN_CHARS} characters; got {len(pattern)}")
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
        if regex.match(""):
            raise ValueError(f"{pattern!r} matches the empty string: it would mask between every character")
        compiled.append(regex)
    return tuple(compiled)


def normalize_field(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


class Masker:
    """Masks texts and JSON values for one configuration (field names, extra patterns)."""

    def __init__(self, fields: Iterable[str] = DEFAULT_FIELDS, patterns: Iterable[str] = ()) -> None:
        self.fields = tuple(sorted({normalize_field(f) for f in fields if f and normalize_field(f)}))
        self.patterns = compile_patterns(patterns)
        self._sensitive: dict[str, bool] = {}

    def sensitive_field(self, name: str) -> bool:
        """Is `name` a configured field name (normalized: equal, or ending with one)?"""
        known = self._sensitive.get(name)
        if known is None:
            normal = normalize_field(name)
            known = any(normal == f or normal.endswith(f) for f in self.fields)
            if len(self._sensitive) < 10_000:  # keys are names, not data; bounded all the same
                self._sensitive[name] = known
        return known

    def mask_text(self, text: str) -> str:
        """`text` with every pattern masked."""
        if not text:
            return text
        text = mask_builtin(text)
        for regex in self.patterns:
            text = regex.sub(MASK, text)
        return text

    def mask_value(self, value: Any) -> Any:
        """A copy of a JSON value with sensitive fields and patterns in its strings masked."""
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, Mapping):
            return {
                key: (
                    MASK
                    if isinstance(key, str) and item is not None and self.sensitive_field(key)
                    else self.mask_value(item)
                )
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.mask_value(item) for item in value]
        return value


@lru_cache(maxsize=16)
def masker(fields: tuple[str, ...] = DEFAULT_FIELDS, patterns: tuple[str, ...] = ()) -> Masker:
    """The masker of a configuration, compiled once."""
    return Masker(fields, patterns)


def _defaults() -> tuple[Any, Any]:
    return DEFAULT_FIELDS, ()


# The accessor of the current configuration: `(field names, extra patterns)`.
# orchestrator.config installs the runtime settings' (`mask_fields`, `mask_patterns`).
_source: Callable[[], tuple[Any, Any]] = _defaults
_last: tuple[Any, Any, Masker] | None = None
_reading = threading.local()


def use_source(source: Callable[[], tuple[Any, Any]] | None) -> None:
    """Read the configuration from `source` from now on (None: the defaults)."""
    global _source, _last
    _source, _last = source or _defaults, None


def configured() -> Masker:
    """The masker of the current runtime configuration (`mask_fields`, `mask_patterns`).

    The values are the same objects until the configuration changes, so this is an
    identity check in the common case; anything unreadable gives the defaults.
    """
    global _last
    if getattr(_reading, "busy", False):  # reading the configuration logged a line: no loop
        return _last[2] if _last is not None else masker()
    _reading.busy = True
    try:
        fields, patterns = _source()
    except Exception:  # noqa: BLE001 - settings not ready (start-up, a pure test): the defaults
        return masker()
    finally:
        _reading.busy = False
    last = _last
    if last is not None and last[0] is fields and last[1] is patterns:
        return last[2]
    try:
        current = masker(tuple(fields or ()), tuple(patterns or ()))
    except (TypeError, ValueError):  # validated when set; a hand-edited store falls back
        current = masker()
    _last = (fields, patterns, current)
    return current


def mask_text(text: str) -> str:
    """`text` masked by the current configuration."""
    return configured().mask_text(text)


def mask_value(value: Any) -> Any:
    """A JSON value masked by the current configuration."""
    return configured().mask_value(value)


def mask_error(text: str | None) -> str:
    """An error message as it may be stored or shown (None → "")."""
    return configured().mask_text(text) if text else ""
