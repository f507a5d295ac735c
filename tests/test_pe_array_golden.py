"""The PE-array golden model: exact results, stream order, tiling, timing, errors."""

from __future__ import annotations

import numpy as np
import pytest

from golden import pe_array
from golden.bsfp import encode

SHAPES = [(16, 32), (64, 128), (4 * 4 + 4, 100), (1, 1), (5, 3)]


def _layer(rng, n, k):
    w = (rng.normal(size=(n, k)) * 0.05).astype(np.float16)
    return w, encode(w)


def _acts(rng, mode, k, tokens=4):
    shape = (k,) if mode == "draft" else (tokens, k)
    return rng.normal(size=shape).astype(np.float16)


def _float32_reference(wf16, a):
    """Sequential float32 accumulation in increasing k (docs/architecture.md, Numbers), one dot product per row."""
    acc = np.zeros(wf16.shape[0], dtype=np.float32)
    for k in range(wf16.shape[1]):
        acc = (acc + wf16[:, k].astype(np.float32) * np.float32(a[k])).astype(np.float32)
    return acc


@pytest.mark.parametrize("n,k", SHAPES)
def test_matmul_equals_sequential_float32_accumulation(rng, n, k):
    w, enc = _layer(rng, n, k)
    a = _acts(rng, "verify", k)
    got = pe_array.matmul("verify", enc, a)
    assert got.shape == (4, n) and got.dtype == np.float32
    for t in range(4):
        assert np.array_equal(got[t].view(np.uint32), _float32_reference(w, a[t]).view(np.uint32))
    d = pe_array.matmul("draft", enc, a[0])
    assert d.shape == (n,) and d.dtype == np.float32
    ref = _float32_reference(enc.decode_draft(), a[0])
    assert np.array_equal(d.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 2), (4, 4), (1, 3)])
@pytest.mark.parametrize("n,k", [(16, 32), (37, 9), (4 * 16 + 4, 20)])
@pytest.mark.parametrize("mode,tokens", [("draft", 1), ("verify", 1), ("verify", 3),
                                         ("verify", 4)])
def test_result_beats_from_the_streams_assemble_to_matmul(rng, rows, cols, n, k, mode, tokens):
    _, enc = _layer(rng, n, k)
    a = _acts(rng, mode, k, tokens)
    beats = pe_array.result_beats(mode, enc, a, rows, cols)
    nt = pe_array.tiles(mode, n, k, rows, cols)
    assert beats.shape == (nt * rows * cols, 4)
    got = pe_array.assemble(mode, beats, n, tokens)
    want = pe_array.matmul(mode, enc, a)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_draft_stream_is_the_draft_plane_tile_by_tile(rng):
    _, enc = _layer(rng, 40, 6)
    words, last = pe_array.weight_stream("draft", enc, 2, 2)
    plane = enc.draft_plane()                       # (10, 6)
    assert words.shape == (3 * 6, 4)                # ceil(10 / 4) = 3 tiles of K = 6 beats
    for t in range(3):
        for p in range(4):
            g = t * 4 + p
            col = words[t * 6:(t + 1) * 6, p]
            assert np.array_equal(col, plane[g] if g < 10 else np.zeros(6, np.uint16))
    assert list(np.flatnonzero(last)) == [5, 11, 17]


def test_verify_stream_is_full_words_row_per_pe(rng):
    _, enc = _layer(rng, 5, 3)
    words, last = pe_array.weight_stream("verify", enc, 1, 2)
    assert words.shape == (3 * 3, 2)
    assert np.array_equal(words[0:3, 0], enc.words[0])
    assert np.array_equal(words[0:3, 1], enc.words[1])
    assert np.array_equal(words[6:9, 0], enc.words[4]) and not words[6:9, 1].any()
    assert list(np.flatnonzero(last)) == [2, 5, 8]


def test_acts_stream_broadcasts_one_beat_per_k_and_pads_tokens(rng):
    a = _acts(rng, "verify", 7, tokens=2)
    beats = pe_array.acts_stream("verify", a, 9, 2, 2)
    assert beats.shape == (3 * 7, 4)
    assert np.array_equal(beats[7:14, :2], a.view(np.uint16).T) and not beats[:, 2:].any()
    d = pe_array.acts_stream("draft", a[0], 9, 2, 2)
    assert d.shape == (7, 4) and np.array_equal(d[:, 0], a[0].view(np.uint16))


def test_draft_pass_reads_a_quarter_of_the_verify_bytes():
    draft = pe_array.weight_bytes("draft", 256, 1024)
    assert draft * 4 == pe_array.weight_bytes("verify", 256, 1024)
    assert pe_array.weight_bytes("verify", 256, 1024) == 256 * 1024 * 2


def test_tiling_and_cycle_count():
    assert pe_array.tiles("draft", 256, 1024, 4, 4) == 4
    assert pe_array.tiles("verify", 256, 1024, 4, 4) == 16
    assert pe_array.tiles("draft", 4 * 16 + 4, 100, 4, 4) == 2
    assert pe_array.tiles("verify", 1, 5, 4, 4) == 1
    # K >= P: the array never stalls; K < P: each tile waits for the previous drain.
    assert pe_array.cycles("verify", 256, 1024, 4, 4) == 16 * 1024 + 6 + 16
    assert pe_array.cycles("verify", 32, 3, 4, 4) == 3 + 6 + 16 + 16
    assert pe_array.cycles("draft", 1, 1, 1, 1) == 1 + 6 + 1
    for mode in ("draft", "verify"):
        util = (pe_array.macs(mode, 256, 1024, 4, 4)
                / (4 * 16 * pe_array.cycles(mode, 256, 1024, 4, 4)))
        assert util > 0.99


@pytest.mark.parametrize("call,match", [
    (lambda e, a: pe_array.matmul("int4", e, a[0]), "mode"),
    (lambda e, a: pe_array.matmul("verify", e, np.zeros((5, 8), np.float16)), "1 <= T <= 4"),
    (lambda e, a: pe_array.matmul("verify", e, a.astype(np.float32)), "float16"),
    (lambda e, a: pe_array.matmul("verify", e, a.view(np.uint16)), "float16"),
    (lambda e, a: pe_array.matmul("draft", e, a), r"shape \(K,\)"),
    (lambda e, a: pe_array.matmul("verify", e, a[:, :7]), "K = 8"),
    (lambda e, a: pe_array.matmul("draft", e.words, a[0]), "BsfpTensor"),
    (lambda e, a: pe_array.matmul("draft", encode(np.ones(8, np.float16)), a[0]), "2-D"),
    (lambda e, a: pe_array.weight_stream("draft", e, 0, 4), "rows"),
    (lambda e, a: pe_array.weight_stream("draft", e, 2, True), "cols"),
    (lambda e, a: pe_array.cycles("draft", 16, 0, 2, 2), "K must be at least 1"),
    (lambda e, a: pe_array.tiles("verify", 0, 4, 2, 2), "N must be at least 1"),
    (lambda e, a: pe_array.acts_stream("draft", a[0][:0], 4, 2, 2), "K must be at least 1"),
])
def test_bad_input_raises_a_clear_error(rng, call, match):
    _, enc = _layer(rng, 4, 8)
    a = _acts(rng, "verify", 8)
    with pytest.raises(ValueError, match=match):
        call(enc, a)


def test_nan_and_inf_follow_the_lane_arithmetic():
    w = np.array([[1.0, 1.0], [np.inf, 0.0], [2.0, -0.0]], dtype=np.float16)
    a = np.array([[np.inf, -np.inf], [1.0, 1.0]], dtype=np.float16)
    got = pe_array.matmul("verify", encode(w), a).view(np.uint32)
    assert got[0, 0] == 0x7FC00000      # inf + -inf: the canonical NaN
    assert got[0, 1] == 0x7FC00000      # 0 * -inf
    assert got[1, 1] == 0x7F800000      # inf * 1 + 0 * 1
    assert got[1, 2] == 0x40000000      # 2 + -0


def test_verify_words_are_the_two_planes_joined_and_bytes_match_the_streams(rng):
    from golden.bsfp import words_from_planes

    _, enc = _layer(rng, 64, 40)
    assert np.array_equal(words_from_planes(enc.draft_plane(), enc.residual_plane(), 64), enc.words)
    for mode in ("draft", "verify"):
        words, _ = pe_array.weight_stream(mode, enc, 4, 4)   # 64 rows: no padding on 4x4
        assert words.size * 2 == pe_array.weight_bytes(mode, 64, 40)


@pytest.mark.parametrize("mode", ["draft", "verify"])
@pytest.mark.parametrize("interleave", [2, 3, 4])
def test_interleaved_streams_give_the_same_results_in_tile_order(mode, interleave, rng):
    from golden.bsfp import encode
    from golden.pe_array import acts_stream, result_beats, tiles, weight_stream

    n, k, rows, cols = 37, 5, 2, 2
    w = encode(rng.normal(size=(n, k)).astype(np.float16))
    acts = rng.normal(size=(k,) if mode == "draft" else (3, k)).astype(np.float16)
    plain = result_beats(mode, w, acts, rows, cols)
    mixed = result_beats(mode, w, acts, rows, cols, interleave)
    t1, tg = tiles(mode, n, k, rows, cols), tiles(mode, n, k, rows, cols, interleave)
    assert tg % interleave == 0 and t1 <= tg < t1 + interleave
    assert np.array_equal(mixed[:plain.shape[0]], plain)   # padding tiles (word 0) follow
    words, last = weight_stream(mode, w, rows, cols, interleave)
    w1, _ = weight_stream(mode, w, rows, cols)
    # Beat (q * K + kk) * G + j carries word kk of tile q * G + j.
    for q, kk, j in [(0, 0, 1), (0, k - 1, interleave - 1), (tg // interleave - 1, 2, 0)]:
        tile = q * interleave + j
        beat = words[(q * k + kk) * interleave + j]
        assert np.array_equal(beat, w1[tile * k + kk] if tile < t1 else np.zeros_like(beat))
    assert last.sum() == tg and last[(k - 1) * interleave:k * interleave].all()
    a = acts_stream(mode, acts, n, rows, cols, interleave)
    assert a.shape == (tg * k, 4) and np.array_equal(a[0], a[interleave - 1])
