"""The integer LSTM step, defined bit-exactly (numpy only, never torch).

One LSTM time step on the sparse engine is one SpMV of the gate layer (the stacked
``[W_ih | W_hh]``, rows in PyTorch's gate order ``i, f, g, o``) over the concatenated
int8 vector ``v = [x_t; h_{t-1}]``, followed by a small integer datapath. Every
operation below is on int64 numpy arrays and is exact; nothing is left to float
rounding except building the lookup tables, which are fixed arrays.

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
                                    per model by calibration (:func:`calibrate`)
============  ====================  =========================================================

``x`` and ``h`` share one unit because they share one accumulator (the per-row weight
scale cannot tell columns apart). The one-hot ``1.0`` must be representable in int8,
so that unit is ``1/127`` and cannot be calibrated finer; ``|h| < 1`` always fits.

The step
--------

``round_shift(a, s) = (a + 2^(s-1)) >> s`` for ``s >= 1`` (``a`` for ``s = 0``), an
arithmetic shift: round half up (towards +inf), so ``round_shift(-3, 1) = -1``.
``clamp(a, lo, hi) = min(max(a, lo), hi)``.

1. ``acc = spmv_ref(gate, [x_t; h_{t-1}])`` (the engine computes exactly this);
2. ``z = clamp(round_shift((acc + bias) * mult, shift), -1024, 1023)`` per row, with
   ``mult`` in ``[2^14, 2^15)`` and ``mult / 2^shift ~= scale_i * 2^7 / 127``;
3. ``i, f, o = SIGMOID_LUT[z + 1024]``, ``g = TANH_LUT[z + 1024]`` (rows ``0:H``,
   ``H:2H``, ``3H:4H``; ``2H:3H``);
4. ``c_t = clamp(round_shift(f * c_{t-1}, 14) + round_shift(i * g, 28 - c_frac),
   -32768, 32767)``;
5. ``t = TANH_LUT[clamp(round_shift(c_t, c_frac - 7), -1024, 1023) + 1024]``;
6. ``h_t = clamp(round_shift(o * t * 127, 28), -127, 127)`` (the clamp never acts:
   ``|o * t| <= 2^28``).

The lookup tables hold ``floor(fn(z / 128) * 2^14 + 1/2)`` for ``z`` in
``[-1024, 1023]``, computed once in float64 and stored as int16 arrays.

The output head (for perplexity) runs on the engine too: ``spmv_ref(head, h_int)``,
then the accumulators are dequantized to float logits (``acc * scale / 127 + bias``)
and the log-softmax is taken in float64: perplexity is a float figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..format import SparseLayer
from .golden import spmv_ref

__all__ = [
    "X_ONE", "Z_FRAC", "Z_MIN", "Z_MAX", "A_FRAC", "C_MIN", "C_MAX", "MULT_BITS",
    "SIGMOID_LUT", "TANH_LUT", "round_shift", "sigmoid_q", "tanh_q", "one_hot_inputs",
    "lstm_shape", "Calibration", "IntLSTMParams", "calibrate", "derive_params",
    "gate_accumulators", "step_from_accumulators", "int_lstm_step", "int_lstm_sequence",
    "float_lstm_step",
    "stream_split", "int_head_logits", "int_perplexity", "float_perplexity",
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
#: Bits of a requantization multiplier: it lies in [2^(MULT_BITS-1), 2^MULT_BITS).
MULT_BITS = 15
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


def _check_state(name: str, a, n: int | None, width: int, lo: int, hi: int) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, not {a.dtype}")
    a = np.atleast_2d(a).astype(np.int64)
    if a.ndim != 2 or a.shape[1] != width or (n is not None and a.shape[0] != n):
        want = f"({width},) or (n, {width})" if n is None else f"({n}, {width})"
        raise ValueError(f"{name} must have shape {want}, not {np.shape(a)}")
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{name} must be between {lo} and {hi}, "
                         f"not {int(a.min())}..{int(a.max())}")
    return a


def gate_accumulators(gate: SparseLayer, x, h) -> np.ndarray:
    """The gate accumulators ``spmv_ref(gate, [x; h])``: what the engine computes.

    Parameters
    ----------
    gate : SparseLayer
        ``4·hidden × (inputs + hidden)``.
    x : array of int, shape (inputs,) or (n, inputs)
        int8 inputs (one-hot: ``X_ONE``).
    h : array of int, shape (hidden,) or (n, hidden)
        Previous hidden state in ``[-127, 127]``.

    Returns
    -------
    array of int64, shape (n, 4·hidden)
    """
    inputs, hidden = lstm_shape(gate)
    x = _check_state("x", x, None, inputs, -128, 127)
    h = _check_state("h", h, x.shape[0], hidden, -X_ONE, X_ONE)
    return spmv_ref(gate, np.concatenate([x, h], axis=1))


def step_from_accumulators(params: IntLSTMParams, acc, c_prev) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2 to 6 of the integer step, from the gate accumulators.

    Parameters
    ----------
    params : IntLSTMParams
    acc : array of int, shape (n, 4·hidden)
        Gate accumulators (from :func:`gate_accumulators` or the engine).
    c_prev : array of int, shape (n, hidden)
        Previous cell state, int16 in ``Q.c_frac``.

    Returns
    -------
    c, h : arrays of int64, shape (n, hidden)
        The new cell state (int16 range) and hidden state (``[-127, 127]``).

    Raises
    ------
    ValueError
        Shapes do not match ``params``.
    """
    hidden = params.hidden
    acc = np.asarray(acc)
    if acc.dtype.kind not in "iu" or acc.ndim != 2 or acc.shape[1] != 4 * hidden:
        raise ValueError(f"accumulators must be integers of shape (n, {4 * hidden}), not "
                         f"{acc.dtype} of shape {acc.shape}")
    acc = acc.astype(np.int64)
    c_prev = _check_state("c", c_prev, acc.shape[0], hidden, C_MIN, C_MAX)
    # |acc + bias| < 2^47 keeps the product below 2^62: exact in int64.
    total = acc + params.bias
    if np.abs(total).max(initial=0) >= 1 << (62 - MULT_BITS):
        raise ValueError("accumulator plus bias overflows the requantization product")
    z = np.clip(round_shift(total * params.mult, params.shift), Z_MIN, Z_MAX)
    i = sigmoid_q(z[:, 0:hidden])
    f = sigmoid_q(z[:, hidden:2 * hidden])
    g = tanh_q(z[:, 2 * hidden:3 * hidden])
    o = sigmoid_q(z[:, 3 * hidden:])
    c = np.clip(round_shift(f * c_prev, A_FRAC) + round_shift(i * g, 2 * A_FRAC - params.c_frac),
                C_MIN, C_MAX)
    t = tanh_q(round_shift(c, params.c_frac - Z_FRAC))
    h = np.clip(round_shift(o * t * X_ONE, 2 * A_FRAC), -X_ONE, X_ONE)
    return c, h


def int_lstm_step(gate: SparseLayer, params: IntLSTMParams, x, h_prev, c_prev):
    """One bit-exact integer LSTM step (module docstring, steps 1 to 6).

    Parameters
    ----------
    gate : SparseLayer
        The gate layer, ``4·hidden × (inputs + hidden)``, int8 weights.
    params : IntLSTMParams
        From :func:`derive_params` for this layer.
    x : array of int, shape (n, inputs)
        int8 inputs.
    h_prev, c_prev : arrays of int, shape (n, hidden)
        Previous hidden state (``[-127, 127]``) and cell state (int16).

    Returns
    -------
    c, h : arrays of int64, shape (n, hidden)

    Raises
    ------
    ValueError
        Shapes do not match, or ``params`` belongs to another size of layer.
    """
    if params.hidden != lstm_shape(gate)[1]:
        raise ValueError(f"params are for hidden = {params.hidden}, the gate layer has "
                         f"{lstm_shape(gate)[1]}")
    return step_from_accumulators(params, gate_accumulators(gate, x, h_prev), c_prev)


def int_lstm_sequence(gate: SparseLayer, params: IntLSTMParams, x, reset):
    """The integer step over a sequence, one vector per step, with the state carried
    from step to step and restarted at ``h = c = 0`` where ``reset`` is set: what the
    step on chip (:class:`darbgen.hdl.lstm.LSTMStep`) computes.

    Parameters
    ----------
    gate : SparseLayer
    params : IntLSTMParams
    x : array of int, shape (steps, inputs)
    reset : array of bool, shape (steps,)
        ``reset[0]`` must be set.

    Returns
    -------
    h, c : arrays of int64, shape (steps, hidden)
        The state after every step.

    Raises
    ------
    ValueError
        Shapes do not match, or the first step does not reset.
    """
    _, hidden = lstm_shape(gate)
    x = np.atleast_2d(np.asarray(x))
    reset = np.asarray(reset, dtype=bool)
    if reset.shape != (x.shape[0],):
        raise ValueError(f"reset must have shape ({x.shape[0]},), not {reset.shape}")
    if x.shape[0] and not reset[0]:
        raise ValueError("the first step must reset the state")
    hs = np.zeros((x.shape[0], hidden), np.int64)
    cs = np.zeros_like(hs)
    h = c = np.zeros((1, hidden), np.int64)
    for t in range(x.shape[0]):
        if reset[t]:
            h = c = np.zeros((1, hidden), np.int64)
        c, h = int_lstm_step(gate, params, x[t:t + 1], h, c)
        hs[t], cs[t] = h[0], c[0]
    return hs, cs


def float_lstm_step(gate: SparseLayer, x, h, c) -> tuple[np.ndarray, np.ndarray]:
    """The float64 LSTM step with the layer's dequantized weights and float bias.

    The reference the integer step approximates: ``x`` is float (one-hot 1.0), ``h``
    and ``c`` are float, shapes ``(n, inputs)``, ``(n, hidden)``, ``(n, hidden)``.

    Returns
    -------
    c, h : arrays of float64, shape (n, hidden)
    """
    inputs, hidden = lstm_shape(gate)
    x, h, c = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (x, h, c))
    if x.shape[1:] != (inputs,) or h.shape != (x.shape[0], hidden) or c.shape != h.shape:
        raise ValueError(f"x, h and c must have shapes (n, {inputs}), (n, {hidden}) and "
                         f"(n, {hidden}), not {x.shape}, {h.shape} and {c.shape}")
    return _float_step(gate.dequantized(), _float_bias(gate), x, h, c)[:2]


def _float_bias(layer: SparseLayer) -> np.ndarray:
    return np.zeros(layer.rows) if layer.bias is None else layer.bias.astype(np.float64)


def _float_step(w, b, x, h, c):
    hidden = h.shape[1]
    z = np.concatenate([x, h], axis=1) @ w.T + b
    sig = 1.0 / (1.0 + np.exp(-z))
    i, f, o = sig[:, :hidden], sig[:, hidden:2 * hidden], sig[:, 3 * hidden:]
    g = np.tanh(z[:, 2 * hidden:3 * hidden])
    c = f * c + i * g
    return c, o * np.tanh(c), z


def stream_split(ids, n_streams: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a text into ``n_streams`` contiguous streams for batched evaluation.

    Stream ``s`` reads ``ids[s·L : s·L + L]`` and predicts ``ids[s·L + 1 : s·L + L + 1]``
    with ``L = (len(ids) - 1) // n_streams``; every stream starts from a zero state and
    the last ``len(ids) - 1 - n_streams·L`` predictions are dropped. The float and the
    integer perplexities use this same split.

    Returns
    -------
    inputs, targets : arrays of int64, shape (n_streams, L)

    Raises
    ------
    ValueError
        ``ids`` is not one-dimensional or too short for ``n_streams`` streams.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, not shape {ids.shape}")
    if isinstance(n_streams, bool) or not isinstance(n_streams, (int, np.integer)) or n_streams < 1:
        raise ValueError(f"stream count must be a positive integer, not {n_streams!r}")
    length = (ids.size - 1) // n_streams
    if length < 1:
        raise ValueError(f"{ids.size} ids are too few for {n_streams} streams")
    starts = np.arange(n_streams)[:, None] * length + np.arange(length)[None, :]
    return ids[starts], ids[starts + 1]


def calibrate(gate: SparseLayer, ids, *, n_streams: int = 16, steps: int = 256) -> Calibration:
    """Run the float step (:func:`float_lstm_step`'s arithmetic) over calibration text
    and record the ranges the integer formats must hold.

    Parameters
    ----------
    gate : SparseLayer
    ids : array of int
        Calibration text as symbol ids (take it from the training split).
    n_streams, steps : int
        Streams (see :func:`stream_split`) and time steps per stream to run.
    """
    inputs, hidden = lstm_shape(gate)
    xs, _ = stream_split(ids, n_streams)
    xs = xs[:, :steps]
    w, b = gate.dequantized(), _float_bias(gate)
    h = np.zeros((n_streams, hidden))
    c = np.zeros_like(h)
    max_c = max_h = max_z = 0.0
    clamped = 0
    for t in range(xs.shape[1]):
        x = one_hot_inputs(xs[:, t], inputs) / X_ONE
        c, h, z = _float_step(w, b, x, h, c)
        max_c, max_h = max(max_c, float(np.abs(c).max())), max(max_h, float(np.abs(h).max()))
        max_z = max(max_z, float(np.abs(z).max()))
        zq = z * (1 << Z_FRAC)
        clamped += int(((zq < Z_MIN) | (zq > Z_MAX)).sum())
    n = xs.shape[0] * xs.shape[1]
    return Calibration(max_c, max_h, max_z, clamped / (n * 4 * hidden), n)


def derive_params(gate: SparseLayer, calibration: Calibration | None = None, *,
                  c_frac: int | None = None) -> IntLSTMParams:
    """The integer parameters of ``gate``'s step from its scales, float bias and a
    calibration.

    Row ``i``'s accumulator unit is ``scale_i / 127``, so its integer bias is
    ``round(b_i · 127 / scale_i)`` (half away from zero) and its requantization
    factor ``r_i = scale_i · 2^7 / 127`` is written ``mult_i / 2^shift_i`` with
    ``mult_i = round(m · 2^15)``, ``r_i = m · 2^e``, ``m`` in ``[0.5, 1)`` (``frexp``),
    ``shift_i = 15 - e``.

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
    bias_f = _float_bias(gate) * X_ONE / scale
    if np.abs(bias_f).max() > BIAS_MAX:
        r = int(np.argmax(np.abs(bias_f)))
        raise ValueError(f"gate layer {gate.name!r}: row {r}: bias {bias_f[r]:.4g} in "
                         "accumulator units does not fit int32")
    bias = (np.sign(bias_f) * np.floor(np.abs(bias_f) + 0.5)).astype(np.int64)
    m, e = np.frexp(scale * (1 << Z_FRAC) / X_ONE)
    mult = np.round(m * (1 << MULT_BITS)).astype(np.int64)
    carry = mult == 1 << MULT_BITS               # m rounded up to 1.0
    mult = np.where(carry, mult >> 1, mult)
    shift = MULT_BITS - (e + carry)
    if shift.min() < 1 or shift.max() > 62:
        r = int(np.argmax((shift < 1) | (shift > 62)))
        raise ValueError(f"gate layer {gate.name!r}: row {r}: scale {scale[r]:.4g} gives "
                         f"shift {int(shift[r])}, outside 1..62")
    return IntLSTMParams(bias, mult, shift.astype(np.int64), c_frac)


def int_head_logits(head: SparseLayer, h) -> np.ndarray:
    """Float logits of the output head from int8 hidden states.

    ``spmv_ref(head, h)`` (the engine's integer SpMV), dequantized:
    ``acc · scale / 127 + bias``.

    Parameters
    ----------
    head : SparseLayer
        ``vocab × hidden``.
    h : array of int, shape (n, hidden)

    Returns
    -------
    array of float64, shape (n, vocab)
    """
    if head.input_columns is not None:
        raise ValueError(f"head layer {head.name!r} must not have compacted columns")
    h = _check_state("h", h, None, head.cols, -X_ONE, X_ONE)
    acc = spmv_ref(head, h)
    scale = head.scale[None, :] if head.scale.ndim else head.scale
    return acc * scale / X_ONE + _float_bias(head)


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return float((lse - logits[np.arange(targets.size), targets]).sum())


def _check_pair(gate: SparseLayer, head: SparseLayer) -> tuple[int, int]:
    inputs, hidden = lstm_shape(gate)
    if head.cols != hidden or head.rows != inputs:
        raise ValueError(f"head layer {head.name!r} must be {inputs} × {hidden} (vocab × "
                         f"hidden), not {head.rows} × {head.cols}")
    return inputs, hidden


def int_perplexity(gate: SparseLayer, head: SparseLayer, params: IntLSTMParams, ids, *,
                   n_streams: int = 64, check_every: int = 32) -> float:
    """Perplexity of the integer model over a text (split by :func:`stream_split`).

    The LSTM runs the integer step from ``h = c = 0``; the head is
    :func:`int_head_logits`; the log-softmax is float64.

    For speed the accumulators come from a float64 matrix product with the dense
    integer weights, which is exact: every product and partial sum is an integer
    below ``2^53`` (the layers' accumulator widths are checked). Every
    ``check_every``-th step they are compared with :func:`spmv_ref`.

    Parameters
    ----------
    gate, head : SparseLayer
        ``4H × (V + H)`` and ``V × H``.
    params : IntLSTMParams
    ids : array of int
        The text as symbol ids ``< V``.
    n_streams : int
    check_every : int

    Returns
    -------
    float
        ``exp`` of the mean negative log-likelihood per predicted symbol.

    Raises
    ------
    ValueError
        The layers do not fit together or ``params``.
    """
    inputs, hidden = _check_pair(gate, head)
    if params.hidden != hidden:
        raise ValueError(f"params are for hidden = {params.hidden}, the gate layer has {hidden}")
    xs, ys = stream_split(ids, n_streams)
    gate_acc, head_acc = _ExactProduct(gate), _ExactProduct(head)
    head_scale = head.scale[None, :] if head.scale.ndim else head.scale
    head_bias = _float_bias(head)
    h = np.zeros((n_streams, hidden), dtype=np.int64)
    c = np.zeros_like(h)
    nll = 0.0
    for t in range(xs.shape[1]):
        check = t % check_every == 0
        v = np.concatenate([one_hot_inputs(xs[:, t], inputs), h], axis=1)
        c, h = step_from_accumulators(params, gate_acc(v, check), c)
        logits = head_acc(h, check) * head_scale / X_ONE + head_bias
        nll += _nll(logits, ys[:, t])
    return math.exp(nll / ys.size)


class _ExactProduct:
    """``spmv_ref(layer, v)`` by a float64 BLAS product: exact while the accumulator
    width is at most 53 bits (integers below 2^53 are exact doubles)."""

    def __init__(self, layer: SparseLayer):
        if layer.accumulator_width() > 53:
            raise ValueError(f"layer {layer.name!r}: accumulators of "
                             f"{layer.accumulator_width()} bits are not exact in float64")
        self.layer = layer
        self.dense_t = layer.to_dense().astype(np.float64).T.copy()

    def __call__(self, v: np.ndarray, check: bool = False) -> np.ndarray:
        acc = (v.astype(np.float64) @ self.dense_t).astype(np.int64)
        if check and not np.array_equal(acc, spmv_ref(self.layer, v)):
            raise AssertionError(f"layer {self.layer.name!r}: float64 product differs from "
                                 "spmv_ref")
        return acc


def float_perplexity(gate: SparseLayer, head: SparseLayer, ids, *, n_streams: int = 64) -> float:
    """Perplexity of the float64 model with the layers' dequantized int8 weights (the
    same split as :func:`int_perplexity`): isolates weight quantization from the
    integer datapath.

    Parameters
    ----------
    gate, head : SparseLayer
        ``4H × (V + H)`` and ``V × H``.
    ids : array of int
        The text as symbol ids ``< V``.
    n_streams : int

    Returns
    -------
    float
    """
    inputs, hidden = _check_pair(gate, head)
    xs, ys = stream_split(ids, n_streams)
    w, b = gate.dequantized(), _float_bias(gate)
    wh, bh = head.dequantized(), _float_bias(head)
    h = np.zeros((n_streams, hidden))
    c = np.zeros_like(h)
    nll = 0.0
    for t in range(xs.shape[1]):
        c, h, _ = _float_step(w, b, one_hot_inputs(xs[:, t], inputs) / X_ONE, h, c)
        nll += _nll(h @ wh.T + bh, ys[:, t])
    return math.exp(nll / ys.size)
