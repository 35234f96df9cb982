"""The one access point to item payloads.

Everything that stores or reads an item's payload goes through these two functions,
so encryption at rest (with key rotation) and masking can be added here alone.
"""

from __future__ import annotations

from typing import Any


def payload_to_storage(payload: Any) -> Any:
    """What is written to `BatchItem.payload` for a client's payload."""
    return payload


def payload_from_storage(stored: Any) -> Any:
    """The client's payload from what `BatchItem.payload` holds."""
    return stored
