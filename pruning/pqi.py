"""PQ Index and SAP's prune count (Diao et al., ICLR 2023), as the authors' code computes
them; numpy only.

``I_{p,q}(w) = 1 − d^{1/q − 1/p} ‖w‖_p / ‖w‖_q`` over the ``d`` surviving weights, in the
code's mean form ``1 − (mean|w|^p)^{1/p} / (mean|w|^q)^{1/q}`` (equal to Definition 1).
SAP keeps at least ``r = d (1 + η_r)^{−q/(q−p)} (1 − I)^{qp/(q−p)}`` weights (rounded up)
and prunes ``c = ⌊d · min(γ (1 − r/d), β)⌋`` of them (the ratio clamped at 0).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["pq_index", "sap_prune_count", "SAPCount", "gini_index"]


def _surviving(w, mask) -> np.ndarray:
    a = np.abs(np.asarray(w, dtype=np.float64)).reshape(-1)
    if mask is not None:
        m = np.asarray(mask, dtype=bool).reshape(-1)
        if m.shape != a.shape:
            raise ValueError(f"mask has {m.size} entries, the weights {a.size}")
        a = a[m]
    if not np.isfinite(a).all():
        raise ValueError("weights have non-finite values")
    return a


def _check_pq(p, q):
    if not (0 < p < q):
        raise ValueError(f"PQ Index needs 0 < p < q, not p={p}, q={q}")


def pq_index(w, p: float, q: float, mask=None) -> float:
    """PQ Index of the surviving weights: 0 for a constant vector, larger when sparser.

    Guards as in the authors' code: no survivors or all zeros give 0, and round-off
    just below 0 is clamped to 0.

    Examples
    --------
    >>> round(pq_index([1, 0, 0, 0], 0.5, 1.0), 6)
    0.75
    """
    _check_pq(p, q)
    a = _surviving(w, mask)
    if a.size == 0 or not a.any():
        return 0.0
    norm_p = np.mean(a ** p) ** (1 / p)
    norm_q = np.mean(a ** q) ** (1 / q)
    value = 1.0 - norm_p / norm_q
    return 0.0 if -1e-5 < value < 0 else float(value)


class SAPCount(NamedTuple):
    """SAP's step on one group of weights."""

    pqi: float      #: PQ Index of the surviving weights
    keep: int       #: lower bound r on the weights to keep, rounded up
    prune: int      #: c, the number of smallest surviving weights to prune now
    surviving: int  #: d


def sap_prune_count(w, mask=None, *, p: float, q: float, eta_r: float = 0.0,
                    gamma: float = 1.0, beta: float = 0.9) -> SAPCount:
    """How many of the surviving weights SAP prunes in one iteration.

    Examples
    --------
    >>> sap_prune_count([1, .5, .25, .125, 0, 0, 0, 0], p=1, q=2)[1:]
    (3, 5, 8)
    """
    _check_pq(p, q)
    if eta_r < 0 or gamma < 0 or not 0 <= beta <= 1:
        raise ValueError(f"SAP needs eta_r >= 0, gamma >= 0 and 0 <= beta <= 1, not "
                         f"eta_r={eta_r}, gamma={gamma}, beta={beta}")
    d = _surviving(w, mask).size
    if d == 0:
        return SAPCount(0.0, 0, 0, 0)
    pqi = pq_index(w, p, q, mask)
    r = d * (1 + eta_r) ** (-q / (q - p)) * (1 - pqi) ** (q * p / (q - p))
    keep = min(d, math.ceil(r - 1e-9))        # tolerate round-off in an exact r
    ratio = min(max(gamma * (1 - keep / d), 0.0), beta)
    return SAPCount(pqi, keep, math.floor(d * ratio + 1e-9), d)


def gini_index(w, mask=None) -> float:
    """Gini index of the surviving magnitudes (Hurley & Rickard): 0 for a constant
    vector, towards 1 for a one-hot one."""
    a = np.sort(_surviving(w, mask))
    n = a.size
    if n == 0 or not a.any():
        return 0.0
    k = np.arange(1, n + 1)
    return float(1 - 2 * np.sum(a / a.sum() * (n - k + 0.5) / n))
