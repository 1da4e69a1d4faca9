"""Anwar et al. structured conv pruning: unit masks, selectors, the particle filter."""

import numpy as np
import pytest
import torch

from darbgen.format import SparseLayer, single_block_layout
from darbgen.pruning.methods import prunable_layers
from darbgen.pruning.structured import (ParticleFilter, select_units, structured_prune,
                                        unit_mask, unit_scores)
from darbgen.pruning.train import Dataset
from darbgen.sim.amaranth_tb import run_engine
from darbgen.sim.golden import spmv_ref

SHAPE = (4, 3, 3, 3)


def test_feature_map_and_kernel_masks():
    fm = unit_mask(SHAPE, "feature_map", np.array([True, False, True]))
    assert fm[:, 1].sum() == 0 and fm[:, [0, 2]].all()
    keep = np.zeros(12, bool)
    keep[[0, 5]] = True
    k = unit_mask(SHAPE, "kernel", keep)
    assert k.sum() == 2 * 9 and k[0, 0].all() and k[1, 2].all()


def test_strided_offsets_shared_per_input_channel():
    m = unit_mask(SHAPE, "strided", np.array([0, 1, 0]), stride=2)
    flat = m.reshape(4, 3, 9)
    assert (flat[:, 0] == (np.arange(9) % 2 == 0)).all()
    assert (flat[:, 1] == (np.arange(9) % 2 == 1)).all()
    # the GEMM view loses whole columns: every filter keeps the same columns
    gemm = m.reshape(4, 27)
    assert (gemm == gemm[0]).all()


def test_magnitude_selector_keeps_the_largest(rng):
    w = rng.normal(size=SHAPE)
    w[:, 1] *= 10
    choice = select_units(w, "feature_map", 1 / 3, "magnitude")
    assert choice.tolist() == [False, True, False]
    assert unit_scores(w, "strided").shape == (3, 2)


def test_particle_filter_keeps_the_count_and_finds_the_optimum():
    rng = np.random.default_rng(0)
    target = np.zeros(20, bool)
    target[[1, 4, 9, 16]] = True
    score = lambda v: float((v != target).sum()) / 20           # noqa: E731

    def mutate(v, g):
        on, off = np.nonzero(v)[0], np.nonzero(~v)[0]
        v[g.choice(on)], v[g.choice(off)] = False, True
        return v

    init = []
    for _ in range(24):
        v = np.zeros(20, bool)
        v[rng.choice(20, 4, replace=False)] = True
        init.append(v)
    best, best_score, evals = ParticleFilter(particles=24, rounds=40, tau=0.05).search(
        init, score, mutate, rng)
    assert best.sum() == 4 and best_score == 0 and evals == 24 * 40


def test_structured_prune_runs_and_exports_to_the_engine(rng):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Unflatten(1, (1, 8, 8)), torch.nn.Conv2d(1, 4, 3),
                                torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(6 * 16, 10))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(400, 64, generator=gen)
    y = torch.randint(0, 10, (400,), generator=gen)
    data = Dataset(x, y, x[:100], y[:100])
    result = structured_prune(model, data, "kernel", "particle", keep_fraction=0.5,
                              retrain_epochs=1, validation=100,
                              pf=ParticleFilter(particles=4, rounds=2))
    assert [l["layer"] for l in result["layers"]] == ["1", "3"]
    assert 0.4 < result["conv_pruned"] < 0.6
    conv = [l for l in prunable_layers(model) if isinstance(l.module, torch.nn.Conv2d)][1]
    mask = conv.mask()
    assert (conv.weight()[~mask] == 0).all()
    b, k = single_block_layout(mask)
    layer = SparseLayer.from_float("conv", conv.weight(), mask, b, k, method="structured")
    xs = rng.integers(-128, 128, size=(2, layer.cols))
    assert np.array_equal(run_engine(layer, xs, lanes=2).y, spmv_ref(layer, xs))


@pytest.mark.parametrize("call, message", [
    (lambda: unit_mask(SHAPE, "row", np.ones(3)), r"^unknown granularity 'row'"),
    (lambda: select_units(np.ones(SHAPE), "kernel", 0.5, "best"), r"^unknown selector 'best'"),
    (lambda: select_units(np.ones(SHAPE), "kernel", 0, "random"),
     r"^keep fraction must be in \(0, 1\], not 0$"),
    (lambda: select_units(np.ones(SHAPE), "kernel", 0.5, "particle"),
     r"^the particle filter needs a score function$"),
])
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
