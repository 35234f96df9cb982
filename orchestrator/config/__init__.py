"""Configuration declared once (registry), stored with versions (store), and read in every
process through `runtime(key)` (reload): a local lookup, current within
`BOS_CONFIG_RELOAD_SECONDS`."""

from __future__ import annotations

from orchestrator.config.reload import runtime

__all__ = ["runtime"]
