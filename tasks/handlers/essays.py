"""Handlers of the demo pipeline `essay-analysis`: validate, spellcheck, text_stats,
grade, score, aggregate.

Real work on real text: pyspellchecker for misspellings, textstat 0.7.4 for readability
(it needs only pyphen's bundled dictionaries, so it works offline). `score` calls the
demo's scoring service through its service client (docs/service-clients.md).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from functools import lru_cache
from typing import Any

import textstat
from spellchecker import SpellChecker

from orchestrator.handlers import BatchContext, ItemContext, ItemFailed, batch_handler, item_handler
from orchestrator.service_clients.scoring import ScoringClient

WORD = re.compile(r"[A-Za-z']+")
DEFAULT_MIN_WORDS = 3
DEFAULT_MAX_CHARS = 50_000
# How many misspellings get a suggested correction (corrections are the slow part).
MAX_SUGGESTIONS = 5


@lru_cache(maxsize=1)
def _spellchecker() -> SpellChecker:
    return SpellChecker()


def _text(ctx: ItemContext) -> str:
    payload = ctx.payload
    text = payload.get("text") if isinstance(payload, dict) else None
    if not isinstance(text, str):
        raise ItemFailed("payload.text is missing or not a string")
    return text


@item_handler("essays.validate")
def validate(ctx: ItemContext) -> dict[str, Any]:
    text = _text(ctx)
    min_words = int(ctx.options.get("min_words", DEFAULT_MIN_WORDS))
    max_chars = int(ctx.options.get("max_chars", DEFAULT_MAX_CHARS))
    if len(text) > max_chars:
        raise ItemFailed(f"text has {len(text)} characters; at most {max_chars} are allowed")
    words = len(WORD.findall(text))
    if words < min_words:
        raise ItemFailed(f"text has {words} words; at least {min_words} are needed")
    return {"chars": len(text), "words": words}


@item_handler("essays.spellcheck")
def spellcheck(ctx: ItemContext) -> dict[str, Any]:
    words = [w.lower().strip("'") for w in WORD.findall(_text(ctx))]
    words = [w for w in words if w]
    checker = _spellchecker()
    unknown = sorted(checker.unknown(words))
    suggestions = {w: checker.correction(w) for w in unknown[:MAX_SUGGESTIONS]}
    return {
        "misspelled": unknown,
        "misspelled_count": len(unknown),
        "error_rate": round(len(unknown) / len(words), 4) if words else 0.0,
        "suggestions": suggestions,
    }


@item_handler("essays.text_stats")
def text_stats(ctx: ItemContext) -> dict[str, Any]:
    text = _text(ctx)
    return {
        "words": textstat.lexicon_count(text),
        "sentences": textstat.sentence_count(text),
        "syllables": textstat.syllable_count(text),
        "flesch_reading_ease": textstat.flesch_reading_ease(text),
        "grade_level": textstat.flesch_kincaid_grade(text),
    }


@item_handler("essays.grade", needs_results=True)
def grade(ctx: ItemContext) -> dict[str, Any]:
    """A letter grade from readability and spelling (runs only when a batch asks for it)."""
    stats, spelling = ctx.results.get("text_stats"), ctx.results.get("spellcheck")
    if not stats or not spelling:
        raise ItemFailed("grading needs the text_stats and spellcheck results")
    score = 100.0 - 400.0 * spelling["error_rate"]
    score -= max(0.0, 30.0 - stats["flesch_reading_ease"]) / 2
    score += min(10.0, stats["words"] / 50)
    letter = next(
        letter
        for bound, letter in ((90, "A"), (80, "B"), (70, "C"), (60, "D"), (-1e9, "F"))
        if score >= bound
    )
    return {"score": round(score, 1), "grade": letter}


@item_handler("essays.score", dependency="scoring")
def score(ctx: ItemContext) -> dict[str, Any]:
    """The scoring service's score (runs only when a batch asks for it: metadata scoring).

    Its failures are the client's: a transient one is retried by the engine and counts
    against the `scoring` breaker; a refusal (4xx) fails the item at once.
    """
    client = ScoringClient.shared()
    model = client.model()  # cached in Redis (cache_ttl): one call per minute, not per item
    result = client.score(_text(ctx))
    passed = result["score"] >= float(model.get("pass_mark", 0.5))
    return {"score": result["score"], "model": result["model"], "passed": passed}


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


@batch_handler("essays.aggregate")
def aggregate(ctx: BatchContext) -> dict[str, Any]:
    """The batch report: readability and spelling over the essays that got through."""
    reading: list[float] = []
    grades: list[float] = []
    words: list[int] = []
    for _key, ok, out in ctx.iter_item_results("text_stats"):
        if ok:
            reading.append(out["flesch_reading_ease"])
            grades.append(out["grade_level"])
            words.append(out["words"])
    error_rates: list[float] = []
    common: Counter[str] = Counter()
    worst: tuple[float, str] | None = None
    for key, ok, out in ctx.iter_item_results("spellcheck"):
        if ok:
            error_rates.append(out["error_rate"])
            common.update(out["misspelled"])
            if worst is None or out["error_rate"] > worst[0]:
                worst = (out["error_rate"], key)
    letters: Counter[str] = Counter()
    if ctx.phase_states.get("grading") == "succeeded":
        letters.update(out["grade"] for _key, ok, out in ctx.iter_item_results("grading") if ok)
    scores: list[float] = []
    if ctx.phase_states.get("score") == "succeeded":
        scores = [out["score"] for _key, ok, out in ctx.iter_item_results("score") if ok]
    return {
        "grades": dict(sorted(letters.items())),
        "essays_analysed": len(reading),
        "words_total": sum(words),
        "words_mean": _mean([float(w) for w in words]),
        "flesch_reading_ease_mean": _mean(reading),
        "grade_level_mean": _mean(grades),
        "spelling_error_rate_mean": _mean([r * 100 for r in error_rates]),
        "most_common_misspellings": [w for w, _ in common.most_common(10)],
        "worst_spelled": worst[1] if worst else None,
        "score_mean": round(statistics.fmean(scores), 4) if scores else None,
    }
