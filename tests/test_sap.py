"""The SAP iteration driver, its baselines and SAP-driven DARB (small, fast runs)."""

import numpy as np
import pytest
import torch

from darbgen.format import SparseLayer, check_layout
from darbgen.pruning.examples import digits_data, digits_mlp
from darbgen.pruning.masks import irregular_mask
from darbgen.pruning.sap import (_prune, iterative_prune, lottery_ticket, one_shot, sap,
                                 sap_darb_masks)
from darbgen.sim.amaranth_tb import run_engine
from darbgen.sim.golden import spmv_ref


@pytest.fixture(scope="module")
def data():
    return digits_data(0)


def small_model():
    return digits_mlp(hidden=(16, 16), seed=0)


@pytest.mark.parametrize("criterion", [sap(0.5, 1), sap(1, 2), lottery_ticket(0.2),
                                       one_shot(0.2)], ids=lambda c: c.name)
@pytest.mark.parametrize("scope", ["neuron", "layer", "global"])
def test_driver_prunes_monotonically_and_logs(data, criterion, scope):
    result = iterative_prune(small_model, data, criterion, scope=scope, iterations=2, epochs=1)
    assert [row["iteration"] for row in result.log] == [0, 1, 2]
    remaining = [row["remaining"] for row in result.log]
    assert remaining[0] == 1.0 and remaining == sorted(remaining, reverse=True)
    assert remaining[-1] < 1.0
    for row in result.log:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["pqi_0.5_1"] < 1 and 0 <= row["gini"] < 1
    assert result.log[-1]["accuracy_pruned"] is None
    # the final model runs with the final masks: pruned weights are zero
    for layer_mask, (_, module) in zip(result.masks, [(n, m) for n, m in result.model.named_modules()
                                                      if isinstance(m, torch.nn.Linear)]):
        assert (module.weight_mask.bool().numpy() == layer_mask).all()


def test_rewind_uses_the_same_initial_weights():
    a, b = small_model(), small_model()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_lt_prunes_a_fifth_of_survivors_by_magnitude():
    w = [np.arange(1, 11, dtype=float).reshape(1, 10)]
    m = [np.ones((1, 10), bool)]
    new = _prune(w, [np.abs(w[0])], m, lottery_ticket(0.2), "neuron")
    assert new[0].tolist() == [[False, False] + [True] * 8]
    # one-shot ranks by the scores it is given (the first dense model's)
    new = _prune(w, [np.abs(w[0][:, ::-1])], m, one_shot(0.2), "layer")
    assert new[0].tolist() == [[True] * 8 + [False, False]]


def test_sap_driven_darb_runs_exactly_on_the_engine(rng):
    w = rng.normal(size=(12, 64)) * rng.uniform(0.2, 3, size=(12, 1))
    sap_mask = irregular_mask(w, 6)                 # stands in for SAP's neuron budgets
    (mask, sizes), = sap_darb_masks([w], [sap_mask])
    check_layout("sap-darb", mask, sizes, np.ones(12, int))
    counts = sap_mask.sum(axis=1)
    for i in range(12):
        assert (sizes[counts > counts[i]] <= sizes[i]).all()
    layer = SparseLayer.from_float("sap", w, mask, sizes, np.ones(12, int), method="sap-darb")
    x = rng.integers(-128, 128, size=(3, 64))
    assert np.array_equal(run_engine(layer, x, lanes=4).y, spmv_ref(layer, x))


def test_driver_errors(data):
    with pytest.raises(ValueError, match=r"^unknown scope 'row'; choose one of neuron, layer, "
                                         r"global$"):
        iterative_prune(small_model, data, sap(), scope="row")
    with pytest.raises(ValueError, match=r"^prune rate must be between 0 and 1, not 1.5$"):
        lottery_ticket(1.5)
    with pytest.raises(ValueError, match=r"^PQ Index needs 0 < p < q"):
        sap(2, 1)
