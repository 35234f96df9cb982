"""SQL fingerprints: a statement with its literals taken out, so slow queries group by shape.

`fingerprint(sql)` replaces string, escaped-string, dollar-quoted and number literals
and placeholders (`%s`, `$1`, `:name`) by `?`, collapses lists of them (`IN (?, ?, ?)`,
`VALUES (?, ?), (?, ?)`, `ARRAY[?, ?]`) to one element followed by `...`, drops comments and
folds whitespace. Identifiers (also quoted ones and names with digits such as `t1`) stay
as they are. `fingerprint_id(sql)` is a short stable hash of it, for log searches.
Pure Python, no Django.
"""

from __future__ import annotations

import hashlib
import re

# One pass, left to right, over comments and literals, so `--` inside a string is part
# of the string and a quote inside a comment is part of the comment.
_LITERALS = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?\*/)                          # comments: dropped
    | (?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)     # $$…$$ and $tag$…$tag$
    | (?P<escaped>[Ee]'(?:[^'\\]|\\.|'')*')                   # E'…' with backslash escapes
    | (?P<string>[BbXxNn]?'(?:[^']|'')*')                    # '…' with '' escapes
    | (?P<ident>"(?:[^"]|"")*")                              # "quoted identifier": kept
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)                       # names (t1, col2): kept
    | (?P<placeholder>%\(\w+\)s|%s|\$\d+|(?<!:):\w+)          # driver placeholders
    | (?P<number>-?(?:0[xX][0-9A-Fa-f]+|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
    """,
    re.DOTALL | re.VERBOSE,
)
_SPACE = re.compile(r"\s+")
# `(?, ?, ?)` → `(?, ...)`; then repeated tuples `(?, ...), (?, ...)` → `(?, ...), ...`.
_LIST = re.compile(r"\(\s*\?(?:\s*(?:::\s*\w+(?:\[\])?)?\s*,\s*\?)+(?:\s*::\s*\w+(?:\[\])?)?\s*\)")
_ARRAY = re.compile(r"\[\s*\?(?:\s*,\s*\?)+\s*\]")
_TUPLES = re.compile(r"(\((?:[^()]|\([^()]*\))*\))(?:\s*,\s*\1)+")


def _replace(match: re.Match[str]) -> str:
    if match["comment"] is not None:
        return " "
    if match["ident"] is not None or match["word"] is not None:
        return match.group(0)
    if match["number"] is not None and match.start() > 0:
        # A minus after a value is an operator (`a -1`), not a sign: keep it.
        before = match.string[: match.start()].rstrip()
        if match.group(0).startswith("-") and before and (before[-1].isalnum() or before[-1] in ")?_"):
            return "- ?"
    return "?"


def fingerprint(sql: str) -> str:
    """`sql` with its literals replaced: one text for every statement of the same shape."""
    text = _LITERALS.sub(_replace, sql)
    text = _SPACE.sub(" ", text).strip()
    text = _LIST.sub("(?, ...)", text)
    text = _ARRAY.sub("[?, ...]", text)
    text = _TUPLES.sub(r"\1, ...", text)
    return text


def fingerprint_id(sql: str) -> str:
    """A 12-character hash of the fingerprint of `sql`."""
    return hashlib.sha1(fingerprint(sql).encode(), usedforsecurity=False).hexdigest()[:12]
