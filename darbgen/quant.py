"""The integer arithmetic every network shares: MLP, CNN and LSTM (numpy only).

Two rounding rules, each defined once here:

* **Float to integer** (a bias in accumulator units, a requantization multiplier),
  done once on the host when the integers are derived: round to nearest, **halves
  away from zero** (:func:`round_half_away`). It is sign-symmetric (the bias ``-b``
  becomes ``-bias_q``), it is C's ``round()`` and what TFLite and gemmlowp use for
  their integer biases and multipliers, so any host reproduces it without numpy.
  Half to even only pays off when many rounded values are summed; a bias is rounded
  once per row. Multipliers are positive, so for them the rule is half up.
* **The requantizer's shift**, done by the hardware on every output:
  ``(a + 2^(s-1)) >> s``, an arithmetic shift, so **halves go up** (towards +inf)
  (:func:`round_shift`). Half away from zero would cost a sign-dependent add on
  every lane; the bias of half an LSB at exact halves is the price.

:func:`requant` is the one requantizer of MLP and CNN layers and of the LSTM's gates;
:func:`fixed_point` turns a real rescale factor into its multiplier and shift. The
hardware (:mod:`darbgen.hdl.network`, :mod:`darbgen.hdl.lstm`) computes these
bit-exactly.
"""

from __future__ import annotations

import numpy as np

from .format import SparseLayer

__all__ = ["MULT_BITS", "round_half_away", "round_shift", "requant", "fixed_point",
           "float_bias"]

#: Requantization multiplier width (unsigned): a multiplier lies in
#: ``[2^(MULT_BITS-1), 2^MULT_BITS)``, its top bit set for precision.
MULT_BITS = 15


def round_half_away(x) -> np.ndarray:
    """Round to the nearest integer, halves away from zero (float64 result).

    ``x - trunc(x)`` is exact in floating point, so values just below a half
    (``0.49999999999999994``) stay below it, which ``floor(|x| + 1/2)`` gets wrong.
    Infinities and NaN pass through, for the caller's range check.

    Examples
    --------
    >>> round_half_away([2.5, -2.5, 0.5, -0.5, 1.4999, -3.0]).tolist()
    [3.0, -3.0, 1.0, -1.0, 1.0, -3.0]
    """
    x = np.asarray(x, dtype=np.float64)
    whole = np.trunc(x)
    with np.errstate(invalid="ignore"):          # inf - inf: NaN, compared False
        up = np.abs(x - whole) >= 0.5
    return np.where(up, whole + np.sign(x), whole)


def round_shift(a, s) -> np.ndarray:
    """Arithmetic right shift by ``s`` with round half up: ``floor(a / 2^s + 1/2)``.

    Parameters
    ----------
    a : array of int
    s : int or array of int
        Shift, ``0 <= s <= 63`` (a 6-bit shift field); broadcasts against ``a``.
        The result is exact while ``a + 2^(s-1)`` fits int64 (the callers' products
        stay below ``2^62``).

    Returns
    -------
    array of int64

    Raises
    ------
    ValueError
        A shift is negative or above 63.

    Examples
    --------
    >>> round_shift([3, -3, 5, -7], [1, 1, 2, 2]).tolist()
    [2, -1, 1, -2]
    """
    a = np.asarray(a, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    if s.size and (s.min() < 0 or s.max() > 63):
        raise ValueError(f"shift must be between 0 and 63, not {int(s.min())}..{int(s.max())}")
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    return (a + half) >> s


def requant(v, mult, shift, lo: int, hi: int) -> np.ndarray:
    """The requantizer: ``clamp(round_shift(v * mult, shift), lo, hi)`` in int64,
    elementwise.

    A hidden layer's output (``v = acc + bias``, ``lo = 0`` after a ReLU) and an LSTM
    gate's pre-activation ``z`` both come out of it.
    """
    v, mult = np.asarray(v, dtype=np.int64), np.asarray(mult, dtype=np.int64)
    return np.clip(round_shift(v * mult, shift), lo, hi)


def fixed_point(ratio) -> tuple[np.ndarray, np.ndarray]:
    """Per element ``mult / 2**shift ≈ ratio`` with ``mult`` in
    ``[2^(MULT_BITS-1), 2^MULT_BITS)``, rounded by :func:`round_half_away`.

    ``ratio = m · 2^e`` with ``m`` in ``[0.5, 1)`` (``frexp``, exact), so
    ``mult = round(m · 2^MULT_BITS)`` and ``shift = MULT_BITS - e``; a mantissa that
    rounds up to ``2^MULT_BITS`` is halved and the shift lowered by one.

    Parameters
    ----------
    ratio : array of float
        Positive and finite (the caller checks, with its own message, and checks the
        returned shifts against its shift field).

    Returns
    -------
    mult, shift : arrays of int64
    """
    m, e = np.frexp(np.asarray(ratio, dtype=np.float64))
    mult = round_half_away(np.ldexp(m, MULT_BITS)).astype(np.int64)
    carry = mult >> MULT_BITS
    return mult >> carry, MULT_BITS - e.astype(np.int64) - carry


def float_bias(layer: SparseLayer) -> np.ndarray:
    """A layer's float bias as float64, zeros if it has none."""
    return np.zeros(layer.rows) if layer.bias is None else layer.bias.astype(np.float64)
