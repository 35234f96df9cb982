"""Configuration declared once (registry), stored with versions (store), and read in every
process through `runtime(key)` (reload): a local lookup, current within
`BOS_CONFIG_RELOAD_SECONDS`. Feature flags (flags) live in the same versions, and
`flag_enabled` is the one function code asks them through."""

from __future__ import annotations

from typing import Any

from orchestrator import masking
from orchestrator.config.flags import flag_on
from orchestrator.config.reload import runtime, runtime_flag


def flag_enabled(name: str, *, batch_id: str, tenant: str, pipeline: str) -> bool:
    """Whether the batch gets the feature flag `name` (sticky per batch; unknown: off)."""
    return flag_on(runtime_flag(name), batch_id=batch_id, tenant=tenant, pipeline=pipeline)


def _masking_settings() -> tuple[Any, Any]:
    return runtime("mask_fields"), runtime("mask_patterns")


# Masking (orchestrator/masking.py, pure) reads its field names and patterns from here.
masking.use_source(_masking_settings)

__all__ = ["flag_enabled", "runtime"]
