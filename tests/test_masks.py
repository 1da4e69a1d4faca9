"""Mask legality for every method on random shapes (hypothesis), plus DARB's properties."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from darbgen.format import SparseLayer, check_layout, infer_layout, single_block_layout
from darbgen.pruning.masks import (DEFAULT_BLOCK_SIZES, bmwm_mask, block_mask, darb_block_sizes,
                                   darb_mask, irregular_mask, kept_per_row, nm_mask)

POW2 = st.sampled_from([1, 2, 4, 8, 16, 32, 64])


@st.composite
def matrices(draw, max_rows=12, max_cols=150):
    """Random float matrices: one row, cols that are no multiple of the block, ties."""
    rows = draw(st.integers(1, max_rows))
    cols = draw(st.integers(1, max_cols))
    seed = draw(st.integers(0, 2**32 - 1))
    w = np.random.default_rng(seed).normal(size=(rows, cols))
    if draw(st.booleans()):
        w = np.round(w, 1)                              # many ties in |w|
    return w


@given(matrices(), POW2, st.integers(1, 4))
def test_bmwm_mask_is_legal_and_keeps_block_maxima(w, b, k):
    assume(k <= b)
    mask = bmwm_mask(w, b, k)
    rows, cols = w.shape
    check_layout("bmwm", mask, np.full(rows, b), np.full(rows, k))
    # every survivor is at least as large as every pruned weight of its block
    for r in range(rows):
        for start in range(0, cols, b):
            blk, kept = np.abs(w[r, start:start + b]), mask[r, start:start + b]
            if (~kept).any():
                assert blk[kept].min() >= blk[~kept].max()


@given(matrices())
def test_bmwm_block_equals_cols(w):
    cols = w.shape[1]
    b = 1 << (cols - 1).bit_length()                    # one block covers the row
    mask = bmwm_mask(w, b)
    assert mask.sum(axis=1).tolist() == [1] * w.shape[0]
    assert (np.abs(w)[mask] == np.abs(w).max(axis=1)).all()


@given(matrices(), st.sampled_from([(1, 2), (2, 4), (1, 4), (4, 8), (2, 16)]))
def test_nm_mask_is_legal(w, nm):
    n, m = nm
    mask = nm_mask(w, n, m)
    assert np.array_equal(mask, bmwm_mask(w, m, n))
    check_layout("nm", mask, np.full(w.shape[0], m), np.full(w.shape[0], n))


@given(matrices(), st.floats(1, 50))
def test_irregular_mask_keeps_the_largest(w, ratio):
    mask = irregular_mask(w, ratio)
    assert mask.sum() == max(1, round(w.size / ratio))
    if (~mask).any():
        assert np.abs(w)[mask].min() >= np.abs(w)[~mask].max()
    b, k = single_block_layout(mask)
    SparseLayer.encode("irr", np.ones(w.shape, int), mask, b, k, 1.0)   # storable


@given(matrices(), st.floats(1, 20), st.integers(1, 5), st.integers(1, 9))
def test_block_mask_keeps_whole_blocks(w, ratio, bh, bw):
    mask = block_mask(w, ratio, (bh, bw))
    rows, cols = w.shape
    for i in range(0, rows, bh):
        for j in range(0, cols, bw):
            tile = mask[i:i + bh, j:j + bw]
            assert tile.all() or not tile.any()
    assert mask.any()


@given(matrices(max_rows=40, max_cols=200), st.floats(1, 64),
       st.sampled_from([DEFAULT_BLOCK_SIZES, (2, 8, 32), (4,), (1, 2, 4, 8, 16, 32, 64, 128)]),
       st.integers(1, 2))
def test_darb_mask_is_legal(w, ratio, sizes, keep):
    assume(keep <= min(sizes))
    mask, b = darb_mask(w, ratio, sizes, keep)
    assert set(b.tolist()) <= set(sizes)
    check_layout("darb", mask, b, np.full(w.shape[0], keep))
    inferred, _ = infer_layout(mask, keep, sizes=sizes)
    assert inferred.tolist() == b.tolist()          # the artifact stores what DARB chose


@st.composite
def uneven_matrices(draw):
    """Rows of different density under irregular pruning: row scales differ."""
    rows = draw(st.integers(8, 48))
    cols = draw(st.integers(128, 512))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, cols)) * rng.uniform(0.1, 3.0, size=(rows, 1))


@given(uneven_matrices(), st.floats(2, 16))
def test_darb_lands_within_25_percent_of_target(w, ratio):
    mask, _ = darb_mask(w, ratio)
    reached = w.size / mask.sum()
    assert abs(reached - ratio) <= 0.25 * ratio, (reached, ratio)


@given(uneven_matrices(), st.floats(2, 32))
def test_darb_gives_denser_rows_smaller_blocks(w, ratio):
    counts = irregular_mask(w, ratio).sum(axis=1)
    b = darb_block_sizes(w, ratio)
    for i in range(len(b)):
        denser = counts > counts[i]
        assert (b[denser] <= b[i]).all(), (counts, b)


def test_darb_spread_matches_density():
    # rows 0-3 are 8x larger than rows 4-7: irregular pruning keeps mostly the first rows
    rng = np.random.default_rng(3)
    w = rng.normal(size=(8, 256)) * np.repeat([8.0, 1.0], 4)[:, None]
    _, b = darb_mask(w, 8)
    assert b[:4].max() < b[4:].min()


def test_darb_rule_is_pluggable():
    w = np.random.default_rng(0).normal(size=(6, 64))
    always_largest = lambda counts, cols, sizes, keep: np.full(len(counts), len(sizes) - 1)
    b = darb_block_sizes(w, ratio=64, rule=always_largest)
    assert b.tolist() == [64] * 6
    with pytest.raises(ValueError, match=r"^block-size rule must return one index into the "
                                         r"allowed sizes per row$"):
        darb_block_sizes(w, 8, rule=lambda *a: np.array([9] * 6))


def test_kept_per_row():
    assert kept_per_row(10, [1, 2, 4, 8, 16], 1).tolist() == [10, 5, 3, 2, 1]
    assert kept_per_row(10, [4, 8], 2).tolist() == [6, 4]


@pytest.mark.parametrize("call, error, message", [
    (lambda: bmwm_mask(np.ones((2, 8)), 6), ValueError, r"^block size must be a power of 2, not 6$"),
    (lambda: bmwm_mask(np.ones((2, 8)), 4, keep=5), ValueError,
     r"^keep must be between 1 and the block size 4, not 5$"),
    (lambda: bmwm_mask(np.ones(8), 4), ValueError,
     r"^weight must be a matrix \(rows × cols\), not shape \(8,\)$"),
    (lambda: bmwm_mask(np.full((1, 4), np.inf), 2), ValueError, r"^weight has non-finite values$"),
    (lambda: bmwm_mask(np.array([["a"]]), 2), TypeError, r"^weight must hold numbers, not <U1$"),
    (lambda: darb_mask(np.ones((2, 8)), 0.5), ValueError,
     r"^pruning ratio must be at least 1 \(dense size / kept weights\), not 0.5$"),
    (lambda: darb_mask(np.ones((2, 8)), "8"), TypeError, r"^pruning ratio must be a number, not '8'$"),
    (lambda: darb_mask(np.ones((2, 8)), 4, block_sizes=()), ValueError,
     r"^allowed block sizes must not be empty$"),
    (lambda: nm_mask(np.ones((2, 8)), 2, 3), ValueError, r"^M must be a power of 2, not 3$"),
    (lambda: nm_mask(np.ones((2, 8)), 5, 4), ValueError, r"^N must be an integer between 1 and M=4, not 5$"),
    (lambda: block_mask(np.ones((2, 8)), 2, (0, 4)), ValueError,
     r"^block shape must be integers between 1 and 1048576, not \(0, 4\)$"),
    # Once allocated 2^40 floats before any check (issue 16).
    (lambda: bmwm_mask(np.ones((2, 8)), 1 << 40), ValueError,
     r"^block size must be at most 1048576, not 1099511627776$"),
    (lambda: irregular_mask(np.ones((0, 8)), 2), ValueError, r"^weight must not be empty, not shape \(0, 8\)$"),
])
def test_mask_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
