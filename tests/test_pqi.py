"""PQ Index and SAP's prune count against the test vectors of shared/notes/methods.md §2."""

import numpy as np
import pytest

from darbgen.pruning import gini_index, pq_index, sap_prune_count


@pytest.mark.parametrize("w, p, q, pqi, r_ceil, c", [
    ([1, 1, 1, 1], 0.5, 1, 0.0, 4, 0),
    ([1, 1, 1, 1], 1, 2, 0.0, 4, 0),
    ([1, 0, 0, 0], 0.5, 1, 0.75, 1, 3),
    ([1, 0, 0, 0], 1, 2, 0.5, 1, 3),
    ([4, 3, 2, 1], 0.5, 1, 0.055586, 4, 0),
    ([4, 3, 2, 1], 1, 2, 0.087129, 4, 0),
    ([1, .5, .25, .125, 0, 0, 0, 0], 0.5, 1, 0.562868, 4, 4),
    ([1, .5, .25, .125, 0, 0, 0, 0], 1, 2, 0.424776, 3, 5),
])
def test_notes_vectors(w, p, q, pqi, r_ceil, c):
    assert pq_index(w, p, q) == pytest.approx(pqi, abs=1e-6)
    count = sap_prune_count(w, p=p, q=q)
    assert (count.keep, count.prune, count.surviving) == (r_ceil, c, len(w))


@pytest.mark.parametrize("p, q, expected", [(0.5, 1, 0.1483), (1, 2, 0.1988)])
def test_gaussian_pqi(p, q, expected):
    w = np.random.default_rng(0).normal(size=10_000)
    assert pq_index(w, p, q) == pytest.approx(expected, abs=0.003)


@pytest.mark.parametrize("dist, p, q, eta, fraction", [
    ("normal", 0.5, 1, 0, 0.152), ("laplace", 0.5, 1, 0, 0.215),
    ("normal", 1, 2, 0, 0.363), ("laplace", 1, 2, 0, 0.502),
    ("normal", 0.2, 1, 0, 0.071), ("laplace", 1, 1.4, 0, 0.420),
    ("normal", 0.5, 1, 0.1, 0.299), ("laplace", 0.5, 1, 1, 0.804),
])
def test_prune_fraction_table(dist, p, q, eta, fraction):
    """Prune fraction before the β cap, 100 000 i.i.d. weights (notes §2 table)."""
    w = getattr(np.random.default_rng(0), dist)(size=100_000)
    count = sap_prune_count(w, p=p, q=q, eta_r=eta, beta=1.0)
    assert count.prune / count.surviving == pytest.approx(fraction, abs=0.004)


def test_identity_with_hoyer():
    w = np.random.default_rng(1).normal(size=50)
    d = w.size
    hoyer = (np.sqrt(d) - np.abs(w).sum() / np.sqrt((w ** 2).sum())) / (np.sqrt(d) - 1)
    assert pq_index(w, 1, 2) == pytest.approx((1 - 1 / np.sqrt(d)) * hoyer)


def test_mask_restricts_to_survivors():
    w = np.array([5.0, 1, 1, 1, 1])
    mask = np.array([False, True, True, True, True])
    assert pq_index(w, 0.5, 1, mask) == 0.0
    assert sap_prune_count(w, mask, p=0.5, q=1).surviving == 4
    assert sap_prune_count(np.zeros(3), np.zeros(3, bool), p=1, q=2) == (0.0, 0, 0, 0)


def test_beta_caps_and_gamma_scales():
    w = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert sap_prune_count(w, p=1, q=2).prune == 9             # capped at β = 0.9 of 10
    assert sap_prune_count(w, p=1, q=2, beta=0.5).prune == 5
    assert sap_prune_count([4, 3, 2, 1.0], p=1, q=2, gamma=0).prune == 0


def test_gini():
    assert gini_index([1, 1, 1, 1]) == pytest.approx(0)
    assert gini_index([0, 0, 0, 1]) == pytest.approx(1 - 1 / 4)
    assert gini_index([0, 0, 0, 0]) == 0


@pytest.mark.parametrize("call, message", [
    (lambda: pq_index([1, 2], 1, 1), r"^PQ Index needs 0 < p < q, not p=1, q=1$"),
    (lambda: pq_index([1, 2], 1, 2, mask=[True]), r"^mask has 1 entries, the weights 2$"),
    (lambda: sap_prune_count([1, 2], p=0.5, q=1, beta=2),
     r"^SAP needs eta_r >= 0, gamma >= 0 and 0 <= beta <= 1"),
    (lambda: pq_index([np.nan], 0.5, 1), r"^weights have non-finite values$"),
])
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
