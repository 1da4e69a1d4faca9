"""The integer arithmetic every network shares: MLP, CNN and LSTM (numpy only).

The requantizer's multiplier width and its rounding shift are defined here once;
:mod:`darbgen.network` and :mod:`darbgen.lstm_format` derive their integers with them
and the golden models compute with them.
"""

from __future__ import annotations

import numpy as np

from .format import SparseLayer

__all__ = ["MULT_BITS", "round_shift", "float_bias"]

#: Requantization multiplier width (unsigned): a multiplier lies in
#: ``[2^(MULT_BITS-1), 2^MULT_BITS)``, its top bit set for precision.
MULT_BITS = 15


def round_shift(a, s) -> np.ndarray:
    """Arithmetic right shift by ``s`` with round half up: ``floor(a / 2^s + 1/2)``.

    Parameters
    ----------
    a : array of int
    s : int or array of int
        Shift, ``0 <= s <= 62``; broadcasts against ``a``.

    Returns
    -------
    array of int64

    Raises
    ------
    ValueError
        A shift is negative or above 62.

    Examples
    --------
    >>> round_shift([3, -3, 5, -7], [1, 1, 2, 2]).tolist()
    [2, -1, 1, -2]
    """
    a = np.asarray(a, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    if s.size and (s.min() < 0 or s.max() > 62):
        raise ValueError(f"shift must be between 0 and 62, not {int(s.min())}..{int(s.max())}")
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    return (a + half) >> s


def float_bias(layer: SparseLayer) -> np.ndarray:
    """A layer's float bias as float64, zeros if it has none."""
    return np.zeros(layer.rows) if layer.bias is None else layer.bias.astype(np.float64)
