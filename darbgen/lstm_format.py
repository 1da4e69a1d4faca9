"""The LSTM step's integer contract: fixed-point formats, lookup tables and the
derivation of each row's bias, multiplier and shift (numpy only: no torch, no Amaranth).

The host, the step's gateware (:mod:`darbgen.hdl.lstm`, :mod:`darbgen.lstm`) and the
golden step (:mod:`darbgen.sim.lstm_golden`, which also holds the metrics) all read
these definitions; the step itself is written out in the golden model's docstring.

Fixed-point formats
-------------------

============  ====================  =========================================================
quantity      format                meaning
============  ====================  =========================================================
``x_t``       int8, unit ``1/127``  one-hot: ``X_ONE = 127`` at the character, 0 elsewhere
``h_t``       int8, unit ``1/127``  ``h = h_int / 127``, ``h_int`` in ``[-127, 127]``
``acc``       int64 (engine width)  ``spmv_ref(gate, v)``: unit ``scale_i / 127`` on row ``i``
``bias``      int32, per row        the float bias in accumulator units
``z``         Q3.7 (11-bit signed)  gate pre-activation ``z / 2^7``, clamped to ``[-8, 8)``
LUT outputs   Q1.14 (int16)         ``sigma``, ``tanh`` in ``[-1, 1]`` as ``[-16384, 16384]``
``c_t``       int16, ``Q.c_frac``   ``c = c_int / 2^c_frac``; ``c_frac`` in ``[7, 14]``, chosen
                                    per model by calibration (:class:`Calibration`)
============  ====================  =========================================================

``x`` and ``h`` share one unit because they share one accumulator (the per-row weight
scale cannot tell columns apart). The one-hot ``1.0`` must be representable in int8,
so that unit is ``1/127`` and cannot be calibrated finer; ``|h| < 1`` always fits.

The lookup tables hold ``floor(fn(z / 128) * 2^14 + 1/2)`` for ``z`` in
``[-1024, 1023]``, computed once in float64 and stored as int16 arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .format import SparseLayer
from .quant import MULT_BITS, fixed_point, float_bias, round_half_away

__all__ = [
    "X_ONE", "Z_FRAC", "Z_MIN", "Z_MAX", "A_FRAC", "C_MIN", "C_MAX", "BIAS_MIN", "BIAS_MAX",
    "C_HEADROOM", "SIGMOID_LUT", "TANH_LUT", "sigmoid_q", "tanh_q", "lstm_shape",
    "one_hot_inputs", "Calibration", "IntLSTMParams", "derive_params",
]

#: The int8 value of a one-hot input's 1.0, and of h = 1.0: the activation unit is 1/127.
X_ONE = 127
#: Fractional bits of the gate pre-activation z (Q3.7).
Z_FRAC = 7
#: Range of z after the clamp: [-8, 8) in Q3.7, the lookup tables' index range.
Z_MIN, Z_MAX = -1024, 1023
#: Fractional bits of the lookup tables' outputs (Q1.14 in int16).
A_FRAC = 14
#: Range of the cell state c (int16).
C_MIN, C_MAX = -(1 << 15), (1 << 15) - 1
#: Range of an integer bias (int32).
BIAS_MIN, BIAS_MAX = -(1 << 31), (1 << 31) - 1
#: Calibration keeps this factor of headroom over the largest |c| seen.
C_HEADROOM = 2.0


def _build_lut(fn) -> np.ndarray:
    z = np.arange(Z_MIN, Z_MAX + 1, dtype=np.float64) / (1 << Z_FRAC)
    table = np.floor(fn(z) * (1 << A_FRAC) + 0.5).astype(np.int16)
    table.flags.writeable = False
    return table


#: sigma(z) in Q1.14 for z = Z_MIN..Z_MAX (index z - Z_MIN); values 0..16384.
SIGMOID_LUT = _build_lut(lambda z: 1.0 / (1.0 + np.exp(-z)))
#: tanh(z) in Q1.14 for z = Z_MIN..Z_MAX (index z - Z_MIN); values -16384..16384.
TANH_LUT = _build_lut(np.tanh)


def _lut_index(z) -> np.ndarray:
    return np.clip(np.asarray(z, dtype=np.int64), Z_MIN, Z_MAX) - Z_MIN


def sigmoid_q(z) -> np.ndarray:
    """``SIGMOID_LUT`` at the clamped Q3.7 pre-activation ``z`` (Q1.14 result, int64)."""
    return SIGMOID_LUT[_lut_index(z)].astype(np.int64)


def tanh_q(z) -> np.ndarray:
    """``TANH_LUT`` at the clamped Q3.7 pre-activation ``z`` (Q1.14 result, int64)."""
    return TANH_LUT[_lut_index(z)].astype(np.int64)


def lstm_shape(gate: SparseLayer) -> tuple[int, int]:
    """``(inputs, hidden)`` of an LSTM gate layer (``4·hidden × (inputs + hidden)``).

    Raises
    ------
    ValueError
        The rows are not a multiple of 4, the columns do not exceed ``rows / 4``, or
        the layer's columns are compacted.
    """
    if gate.rows % 4:
        raise ValueError(f"gate layer {gate.name!r} must have 4·hidden rows, not {gate.rows}")
    hidden = gate.rows // 4
    if gate.cols <= hidden:
        raise ValueError(f"gate layer {gate.name!r} must have inputs + hidden columns, more "
                         f"than hidden = {hidden}, not {gate.cols}")
    if gate.input_columns is not None:
        raise ValueError(f"gate layer {gate.name!r} must not have compacted columns")
    return gate.cols - hidden, hidden


def one_hot_inputs(ids, inputs: int) -> np.ndarray:
    """Integer one-hot vectors: ``X_ONE`` at each id, 0 elsewhere.

    Parameters
    ----------
    ids : array of int, shape (n,)
        Symbol ids, ``0 <= id < inputs``.
    inputs : int

    Returns
    -------
    array of int64, shape (n, inputs)

    Raises
    ------
    ValueError
        ``ids`` is not one-dimensional or holds an id out of range.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, not shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= inputs):
        raise ValueError(f"ids must be between 0 and {inputs - 1}, not "
                         f"{int(ids.min())}..{int(ids.max())}")
    out = np.zeros((ids.size, inputs), dtype=np.int64)
    out[np.arange(ids.size), ids] = X_ONE
    return out


@dataclass(frozen=True)
class Calibration:
    """Ranges seen when running the float step over calibration text.

    Parameters
    ----------
    max_abs_c : float
        Largest ``|c_t|``; sets the cell format ``c_frac``.
    max_abs_h : float
        Largest ``|h_t|`` (always below 1: the activation unit 1/127 fits).
    max_abs_z : float
        Largest ``|z|`` of a gate pre-activation.
    clamped : float
        Fraction of gate pre-activations outside the tables' ``[-8, 8)``.
    steps : int
        Vectors (time steps × streams) seen.
    """

    max_abs_c: float
    max_abs_h: float
    max_abs_z: float
    clamped: float
    steps: int

    def c_frac(self, headroom: float = C_HEADROOM) -> int:
        """The most fractional bits of int16 ``c`` that still hold ``headroom · max|c|``,
        between ``Z_FRAC`` and ``A_FRAC``."""
        for frac in range(A_FRAC, Z_FRAC, -1):
            if headroom * self.max_abs_c < 2.0 ** (15 - frac):
                return frac
        return Z_FRAC


@dataclass(frozen=True)
class IntLSTMParams:
    """The integer parameters of one LSTM layer's step (see the module docstring).

    Parameters
    ----------
    bias : array of int64, shape (4·hidden,)
        Float bias in accumulator units, int32 range.
    mult : array of int64, shape (4·hidden,)
        Requantization multipliers in ``[2^14, 2^15)``.
    shift : array of int64, shape (4·hidden,)
        Requantization shifts, 1 to 62.
    c_frac : int
        Fractional bits of the int16 cell state, ``Z_FRAC`` to ``A_FRAC``.

    Raises
    ------
    ValueError
        Shapes differ or are not ``(4·hidden,)``, or a value is out of its range.
    """

    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    c_frac: int

    def __post_init__(self):
        arrays = {}
        for name in ("bias", "mult", "shift"):
            a = np.asarray(getattr(self, name))
            if a.dtype.kind not in "iu":
                raise ValueError(f"{name} must hold integers, not {a.dtype}")
            arrays[name] = a.astype(np.int64)
            arrays[name].flags.writeable = False
            object.__setattr__(self, name, arrays[name])
        shape = arrays["bias"].shape
        if len(shape) != 1 or shape[0] == 0 or shape[0] % 4:
            raise ValueError(f"bias must have shape (4·hidden,), not {shape}")
        for name in ("mult", "shift"):
            if arrays[name].shape != shape:
                raise ValueError(f"{name} must have shape {shape} like bias, not "
                                 f"{arrays[name].shape}")
        checks = (("bias", BIAS_MIN, BIAS_MAX),
                  ("mult", 1 << (MULT_BITS - 1), (1 << MULT_BITS) - 1), ("shift", 1, 62))
        for name, lo, hi in checks:
            a = arrays[name]
            if a.min() < lo or a.max() > hi:
                raise ValueError(f"{name} must be between {lo} and {hi}, not "
                                 f"{int(a.min())}..{int(a.max())}")
        if isinstance(self.c_frac, bool) or not isinstance(self.c_frac, (int, np.integer)) \
                or not Z_FRAC <= self.c_frac <= A_FRAC:
            raise ValueError(f"c_frac must be an integer between {Z_FRAC} and {A_FRAC}, "
                             f"not {self.c_frac!r}")
        object.__setattr__(self, "c_frac", int(self.c_frac))

    @property
    def hidden(self) -> int:
        """Hidden units (a quarter of the gate rows)."""
        return self.bias.shape[0] // 4


def derive_params(gate: SparseLayer, calibration: Calibration | None = None, *,
                  c_frac: int | None = None) -> IntLSTMParams:
    """The integer parameters of ``gate``'s step from its scales, float bias and a
    calibration.

    Row ``i``'s accumulator unit is ``scale_i / 127``, so its integer bias is
    ``round(b_i · 127 / scale_i)`` and its requantization factor
    ``r_i = scale_i · 2^7 / 127`` is written ``mult_i / 2^shift_i``
    (:func:`darbgen.quant.fixed_point`). Both round halves away from zero
    (:func:`darbgen.quant.round_half_away`), as the MLP and CNN layers' integers do.

    Parameters
    ----------
    gate : SparseLayer
    calibration : Calibration, optional
        Sets ``c_frac`` (:meth:`Calibration.c_frac`).
    c_frac : int, optional
        Overrides the calibration; one of the two is required.

    Raises
    ------
    ValueError
        Neither ``calibration`` nor ``c_frac`` is given, or a bias or factor does not fit
        its integer range.
    """
    lstm_shape(gate)
    if c_frac is None:
        if calibration is None:
            raise ValueError("derive_params needs a calibration or an explicit c_frac")
        c_frac = calibration.c_frac()
    scale = np.broadcast_to(gate.scale, (gate.rows,)).astype(np.float64)
    bias_f = float_bias(gate) * X_ONE / scale
    bias = round_half_away(bias_f)
    if np.abs(bias).max() > BIAS_MAX:            # as floats: a cast of 1e30 wraps
        r = int(np.argmax(np.abs(bias)))
        raise ValueError(f"gate layer {gate.name!r}: row {r}: bias {bias_f[r]:.4g} in "
                         "accumulator units does not fit int32")
    mult, shift = fixed_point(scale * (1 << Z_FRAC) / X_ONE)
    if shift.min() < 1 or shift.max() > 62:
        r = int(np.argmax((shift < 1) | (shift > 62)))
        raise ValueError(f"gate layer {gate.name!r}: row {r}: scale {scale[r]:.4g} gives "
                         f"shift {int(shift[r])}, outside 1..62")
    return IntLSTMParams(bias.astype(np.int64), mult, shift, c_frac)
