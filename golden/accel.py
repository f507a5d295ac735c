"""Golden model of the accelerator top (docs/accel.md): tensor layout, command encoding, commands.

The accelerator ``hw.accel.Accelerator`` joins a ``rows x cols`` PE array (``P = rows * cols``
PEs, ``P`` a multiple of 4), a weight streamer, an activation buffer, a result writer and an
expert cache behind one AXI4 master whose data width is ``W = 2P`` bytes (one *line*).

This module defines, without Amaranth:

* :func:`tensor_layout`: the bytes of a weight matrix's draft and residual regions;
* the command encoding (:class:`LoadActs`, :class:`SetTables`, :class:`Matmul`, :class:`Demand`,
  :class:`Prefetch`, :class:`Release`, :class:`Fence`, each ``.encode() -> 8 words``);
* :class:`AccelModel`, the transaction-level model of every command: host memory after each
  command, counters (bytes, MACs, cache hits and misses) exactly, cycles as a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golden.bsfp import BsfpTensor, pack_residual_plane
from golden.pe_array import LANES

__all__ = ["TensorLayout", "tensor_layout", "check_pes", "line_bytes", "verify_tiles",
           "draft_tiles"]


def check_pes(pes: int) -> int:
    """``P``, validated: a positive multiple of 4 (a verify tile's draft nibbles fill words)."""
    if isinstance(pes, bool) or not isinstance(pes, (int, np.integer)) or pes < 4 or pes % 4:
        raise ValueError(f"the accelerator needs rows * cols to be a positive multiple of 4, "
                         f"not {pes!r}")
    return int(pes)


def line_bytes(pes: int) -> int:
    """Bytes of one bus line, ``W = 2P``."""
    return 2 * check_pes(pes)


def verify_tiles(n: int, pes: int) -> int:
    """``T = ceil(N / P)``: verify tiles of a matrix with ``N`` output rows."""
    return -(-int(n) // check_pes(pes))


def draft_tiles(n: int, pes: int) -> int:
    """``ceil(T / 4)``: draft tiles (``4P`` rows each)."""
    return -(-verify_tiles(n, pes) // 4)


@dataclass(frozen=True)
class TensorLayout:
    """A weight matrix as the accelerator reads it (docs/accel.md, "Tensor layout").

    Attributes
    ----------
    draft, residual : bytes
        The two regions, ``T * K/4`` and ``T * 3K/4`` lines of ``W`` bytes.
    n, k, pes, tiles : int
        Matrix shape, PEs, verify tiles ``T``.
    """

    draft: bytes
    residual: bytes
    n: int
    k: int
    pes: int
    tiles: int

    @property
    def draft_lines(self) -> int:
        return self.tiles * self.k // 4

    @property
    def residual_lines(self) -> int:
        return self.tiles * 3 * self.k // 4


def tensor_layout(w: BsfpTensor, pes: int) -> TensorLayout:
    """Lay out the ``(N, K)`` BSFP matrix ``w`` for an array of ``pes`` PEs.

    ``K`` must be a multiple of 4. Padding rows (``N .. T*P-1``) are stored as word 0.
    """
    if not isinstance(w, BsfpTensor) or len(w.shape) != 2:
        raise ValueError("w must be a 2-D golden.bsfp.BsfpTensor")
    p = check_pes(pes)
    n, k = w.shape
    if k % 4:
        raise ValueError(f"K must be a multiple of 4, not {k}")
    t = verify_tiles(n, p)
    words = np.zeros((t * p, k), dtype=np.uint16)
    words[:n] = w.words
    # Draft region: [tile][k][group j < P/4], each word 4 nibbles of rows 4g..4g+3.
    nib = (words >> 12).reshape(t, p // 4, 4, k)
    groups = nib[:, :, 0] | (nib[:, :, 1] << 4) | (nib[:, :, 2] << 8) | (nib[:, :, 3] << 12)
    draft = np.ascontiguousarray(groups.transpose(0, 2, 1)).astype("<u2")   # (T, K, P/4)
    # Residual region: [tile][k][row p < P], 12-bit fields packed little-endian.
    resid = (words & 0x0FFF).reshape(t, p, k).transpose(0, 2, 1)            # (T, K, P)
    packed = pack_residual_plane(np.ascontiguousarray(resid))
    return TensorLayout(draft=draft.tobytes(), residual=packed.tobytes(), n=n, k=k, pes=p,
                        tiles=t)


def stream_words(mode: str, layout: TensorLayout) -> np.ndarray:
    """The weight beats a streamer makes from ``layout``: uint16 ``(tiles * K, P)``.

    Reads the regions the way the hardware does (verify: merge the two regions; draft: gather
    the four block streams), so that it can be checked against
    :func:`golden.pe_array.weight_stream`, which derives the beats from the matrix itself.
    """
    p, k, t = layout.pes, layout.k, layout.tiles
    draft = np.frombuffer(layout.draft, dtype="<u2").reshape(t, k, p // 4)
    if mode == "verify":
        fields = np.frombuffer(layout.residual, dtype=np.uint8)
        from golden.bsfp import unpack_residual_plane
        resid = unpack_residual_plane(fields.copy(), (t, k, p))
        nib = np.stack([(draft >> (4 * i)) & 0xF for i in range(4)], axis=-1).reshape(t, k, p)
        return ((nib << 12) | resid).astype(np.uint16).reshape(t * k, p)
    if mode == "draft":
        td = -(-t // 4)
        out = np.zeros((td, 4, k, p // 4), dtype=np.uint16)
        for tv in range(t):
            out[tv // 4, tv % 4] = draft[tv]
        return out.transpose(0, 2, 1, 3).reshape(td * k, p)
    raise ValueError(f"mode must be 'draft' or 'verify', not {mode!r}")
