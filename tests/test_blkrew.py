"""BLK-REW: block column-row masks, the reweighted and group-lasso penalties."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from darbgen.format import SparseLayer, single_block_layout
from darbgen.pruning.blkrew import GroupPenalty, bcr_mask
from darbgen.sim.amaranth_tb import run_engine
from darbgen.sim.golden import spmv_ref


@given(st.integers(0, 2**32 - 1), st.integers(1, 20), st.integers(1, 40), st.floats(1, 16),
       st.integers(1, 6), st.integers(1, 6))
def test_bcr_mask_keeps_dense_subblocks(seed, rows, cols, ratio, bh, bw):
    w = np.random.default_rng(seed).normal(size=(rows, cols))
    mask = bcr_mask(w, ratio, (bh, bw))
    for i in range(0, rows, bh):
        for j in range(0, cols, bw):
            blk = mask[i:i + bh, j:j + bw]
            r, c = blk.any(axis=1), blk.any(axis=0)
            assert np.array_equal(blk, np.outer(r, c))      # a dense sub-matrix
            assert r.any() and c.any()                      # one row and column stay
            assert blk.sum() <= blk.size / ratio or blk.sum() == 1   # the block's budget


def test_bcr_mask_removes_the_weakest_groups():
    w = np.ones((4, 4))
    w[:, 2] = 0.1                 # a weak column
    w[3, :] = 0.05                # a weaker row
    mask = bcr_mask(w, 16 / 9, (4, 4))
    assert mask.sum() == 9
    assert not mask[3].any() and not mask[:, 2].any()


def test_penalties_prefer_small_groups_to_vanish():
    w = torch.tensor([[1.0, 1.0, 0.01, 0.01]], requires_grad=True)
    pen = GroupPenalty((1, 2), "reweighted", eps=1e-3)
    pen.refresh(w)
    pen.penalty(w).backward()
    g = w.grad[0].abs()
    # relative pull: the small group is pushed far harder, relative to its size
    assert (g[2] / 0.01) > 10 * (g[0] / 1.0)
    w.grad = None
    GroupPenalty((1, 2), "group_lasso").penalty(w).backward()
    assert torch.isfinite(w.grad).all()


def test_blkrew_mask_runs_on_the_engine(rng):
    w = rng.normal(size=(12, 40))
    mask = bcr_mask(w, 4, (4, 8))
    b, k = single_block_layout(mask)
    layer = SparseLayer.from_float("bcr", w, mask, b, k, method="blkrew")
    x = rng.integers(-128, 128, size=(3, 40))
    assert np.array_equal(run_engine(layer, x, lanes=4).y, spmv_ref(layer, x))


def test_penalty_errors():
    with pytest.raises(ValueError, match=r"^unknown penalty 'l1'; choose one of reweighted, "
                                         r"group_lasso$"):
        GroupPenalty(kind="l1")
    with pytest.raises(ValueError, match=r"^eps must be positive, not 0$"):
        GroupPenalty(eps=0)
