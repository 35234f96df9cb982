"""`python -m benchmarks.security_overhead` (`make bench-security`): what encryption at rest
and masking cost per value, beside the JSON work the same value costs anyway.

Every stored payload, result, metadata and report is JSON-encoded on its way to the
database and decoded on its way back; encryption adds a Fernet operation to each, masking
a walk of the value for viewers. So the baseline, measured in the same run on the same
values, is `json.dumps` / `json.loads` of the value, and each row prints its ratio to it:
  - a typical essay payload (~1 KB) and a typical item result (~150 bytes);
  - `payloads.encrypt` / `payloads.decrypt` (MultiFernet, newest key), decrypting under
    the third of three keys (a rotation not yet run), and `payloads.reencrypt`;
  - AES-GCM with a cached data key, the envelope scheme BOS does not use, for comparison
    (docs/encryption.md, "Why MultiFernet");
  - masking a payload (`mask_value`) and an error message (`mask_text`), default rules.
Median of 5 rounds, microseconds per value. Needs no database.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bos_project.settings")

import django  # noqa: E402

django.setup()

from cryptography.fernet import Fernet  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from django.test import override_settings  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from orchestrator import masking, payloads  # noqa: E402

ROUNDS = 5
N = 2000

PAYLOAD = {
    "text": "Reading every day improves vocabulary and the habit of attention. " * 14,
    "author": {"name": "Ann Lee", "email": "ann@example.com", "grade": 7},
    "tags": ["essay", "english", "2026"],
}
RESULT = {"words": 154, "sentences": 14, "misspelled": ["recieve", "occured"], "readability": 61.2}
MASKER = masking.masker()  # the default fields and patterns
ERROR = "ValueError: scoring failed for essay-17 (attempt 2 of 3): upstream answered 503 after 1.2 s"


def per_value(run: Callable[[], Any]) -> float:
    """Median microseconds per call of `run` over ROUNDS rounds of N calls."""
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(N):
            run()
        times.append((time.perf_counter() - started) / N * 1e6)
    return statistics.median(times)


def rows_for(name: str, value: Any) -> list[tuple[str, float, float]]:
    """(operation, µs, baseline µs) for one value."""
    text = json.dumps(value)
    token = payloads.encrypt(value)
    assert token is not None
    dumps, loads = per_value(lambda: json.dumps(value)), per_value(lambda: json.loads(text))
    oldest_key, *newer = (Fernet.generate_key().decode() for _ in range(3))
    with override_settings(BOS_ENCRYPTION_KEYS=[oldest_key]):
        oldest = payloads.encrypt(value)
    assert oldest is not None
    keys = [*newer, oldest_key]  # what was the newest key is now the third
    aes = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)
    sealed = aes.encrypt(nonce, text.encode(), None)
    rows = [
        (f"{name}: encrypt (JSON + Fernet)", per_value(lambda: payloads.encrypt(value)), dumps),
        (f"{name}: decrypt, newest key", per_value(lambda: payloads.decrypt(token)), loads),
    ]
    with override_settings(BOS_ENCRYPTION_KEYS=keys):
        rows.append(
            (f"{name}: decrypt, third of three keys", per_value(lambda: payloads.decrypt(oldest)), loads)
        )
        rows.append(
            (f"{name}: reencrypt (rotation)", per_value(lambda: payloads.reencrypt(oldest)), dumps + loads)
        )
    rows += [
        (
            f"{name}: AES-GCM encrypt (not used)",
            per_value(lambda: aes.encrypt(os.urandom(12), json.dumps(value).encode(), None)),
            dumps,
        ),
        (
            f"{name}: AES-GCM decrypt (not used)",
            per_value(lambda: json.loads(aes.decrypt(nonce, sealed, None))),
            loads,
        ),
        (f"{name}: mask_value", per_value(lambda: MASKER.mask_value(value)), dumps),
    ]
    return rows


def main() -> None:
    rows = rows_for(f"payload {len(json.dumps(PAYLOAD))} B", PAYLOAD)
    rows += rows_for(f"result {len(json.dumps(RESULT))} B", RESULT)
    error_baseline = per_value(lambda: json.dumps(ERROR))
    rows.append(("error message: mask_text", per_value(lambda: MASKER.mask_text(ERROR)), error_baseline))
    table = Table(title=f"security overhead (µs per value, median of {ROUNDS} rounds of {N})")
    table.add_column("operation")
    table.add_column("µs", justify="right")
    table.add_column("JSON alone µs", justify="right")
    table.add_column("× JSON", justify="right")
    for operation, micros, baseline in rows:
        table.add_row(operation, f"{micros:.1f}", f"{baseline:.1f}", f"{micros / baseline:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
