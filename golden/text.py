"""The tiny language model's corpus: Python's own help topics, with a fixed 90/10 split.

``pydoc_data.topics`` ships with every CPython installation (about 466 KB of English text and
code). The corpus is the topics' texts, in sorted key order, joined by a blank line and encoded as
UTF-8; the first 90 % of its bytes is the training set and the last 10 % the held-out set. The
split is a fixed byte offset so that it is the same on every machine with the same Python minor
version (the held-out bits per byte is quoted against it).
"""

from __future__ import annotations

import numpy as np

HELDOUT_FRACTION = 0.10


def corpus() -> bytes:
    """The whole corpus as bytes."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics)).encode("utf-8")


def split() -> tuple[bytes, bytes]:
    """``(train, heldout)``: the first 90 % and the last 10 % of :func:`corpus`."""
    data = corpus()
    cut = int(len(data) * (1.0 - HELDOUT_FRACTION))
    return data[:cut], data[cut:]


def as_tokens(data: bytes) -> np.ndarray:
    """Bytes as an int64 token array (the vocabulary is the 256 byte values)."""
    return np.frombuffer(data, dtype=np.uint8).astype(np.int64)
