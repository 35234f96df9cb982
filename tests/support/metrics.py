"""Read one sample of this process's Prometheus metrics through `/metrics`, as a scraper does."""

from __future__ import annotations

import re

from django.test import Client


def sample(name: str, **labels: str) -> float:
    """The value of `name` with exactly `labels` (0 when it was never counted)."""
    shown = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    series = re.escape(f"{name}{{{shown}}}" if labels else name)
    text = Client().get("/metrics").content.decode()
    match = re.search(rf"^{series} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def security_events(kind: str) -> float:
    return sample("bos_security_events_total", kind=kind)
