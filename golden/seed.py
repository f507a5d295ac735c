"""The one place random seeds come from: ``SPEQMOE_SEED`` (default 20261128)."""

from __future__ import annotations

import os

DEFAULT_SEED = 20261128


def base_seed() -> int:
    """The seed of this run, from the environment variable ``SPEQMOE_SEED``."""
    text = os.environ.get("SPEQMOE_SEED", str(DEFAULT_SEED))
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"SPEQMOE_SEED must be an integer, not {text!r}") from None


def derived_seed(name: str) -> int:
    """A per-test seed: the run's seed mixed with a stable hash of *name*."""
    h = 2166136261
    for byte in name.encode():
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return (base_seed() * 1000003 + h) & 0x7FFFFFFF
