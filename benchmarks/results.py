"""Benchmark ratios on disk, and the regression check of `make bench-check`.

Each benchmark writes the ratios it measured (BOS beside a baseline run in the same
process, on the same machine, at the same moment) to `.bos/bench/results.json`, under
its own name, with the direction that is better. Ratios, not seconds: a noisy or slower
machine moves both sides of a ratio, so a committed baseline (`benchmarks/baseline.json`)
holds across machines where absolute times would not.

A ratio regresses when it is worse than the baseline's by more than the tolerance
(25 %): for a lower-is-better ratio, `value > baseline × 1.25`; for higher-is-better,
`value < baseline / 1.25`. Pure code, no Django.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Better = Literal["lower", "higher"]
ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "benchmarks" / "baseline.json"
TOLERANCE = 0.25


def results_path() -> Path:
    home = Path(os.environ.get("BOS_HOME", ROOT / ".bos"))
    return home / "bench" / "results.json"


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float
    better: Better
    meaning: str


@dataclass(frozen=True)
class Verdict:
    name: str
    baseline: float | None
    value: float | None
    better: Better
    change: float | None  # relative change in the worse direction: +0.30 = 30 % worse
    regressed: bool
    note: str


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def record(
    benchmark: str, ratios: list[Ratio], *, path: Path | None = None, context: dict[str, Any] | None = None
) -> Path:
    """Write `ratios` under `benchmark`, keeping the other benchmarks' entries."""
    target = path or results_path()
    data = _load(target)
    data[benchmark] = {
        "context": context or {},
        "ratios": {
            r.name: {"value": round(r.value, 4), "better": r.better, "meaning": r.meaning} for r in ratios
        },
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return target


def flatten(data: dict[str, Any]) -> dict[str, tuple[float, Better]]:
    """`{"bench/ratio": (value, better)}` from a results or baseline file's content."""
    flat: dict[str, tuple[float, Better]] = {}
    for benchmark, entry in data.items():
        for name, ratio in (entry.get("ratios") or {}).items():
            flat[f"{benchmark}/{name}"] = (float(ratio["value"]), ratio.get("better", "lower"))
    return flat


def compare(
    baseline: dict[str, Any], latest: dict[str, Any], *, tolerance: float = TOLERANCE
) -> list[Verdict]:
    """Every baseline ratio against the latest run's; a ratio the run did not measure is
    reported, not failed (a benchmark may have been run on its own)."""
    base, new = flatten(baseline), flatten(latest)
    verdicts = []
    for name in sorted(set(base) | set(new)):
        if name not in base:
            value, better = new[name]
            verdicts.append(Verdict(name, None, value, better, None, False, "new: not in the baseline"))
            continue
        reference, better = base[name]
        if name not in new:
            verdicts.append(Verdict(name, reference, None, better, None, False, "not measured in this run"))
            continue
        value = new[name][0]
        change = (value / reference - 1) if better == "lower" else (reference / value - 1)
        regressed = change > tolerance
        if abs(change) < 0.005:
            note = "unchanged"
        else:
            note = f"worse by {change:.0%}" if change > 0 else f"better by {-change:.0%}"
        verdicts.append(Verdict(name, reference, value, better, change, regressed, note))
    return verdicts


def read_baseline(path: Path = BASELINE) -> dict[str, Any]:
    return _load(path)


def read_results(path: Path | None = None) -> dict[str, Any]:
    return _load(path or results_path())
