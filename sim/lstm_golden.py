"""The integer LSTM step, defined bit-exactly (numpy only, never torch).

One LSTM time step on the sparse engine is one SpMV of the gate layer (the stacked
``[W_ih | W_hh]``, rows in PyTorch's gate order ``i, f, g, o``) over the concatenated
int8 vector ``v = [x_t; h_{t-1}]``, followed by a small integer datapath. Every
operation below is on int64 numpy arrays and is exact; nothing is left to float
rounding except building the lookup tables, which are fixed arrays.

The fixed-point formats, the lookup tables and the parameters (:class:`IntLSTMParams`,
:func:`derive_params`) are the contract of :mod:`darbgen.lstm_format`; the rounding
shift is :func:`darbgen.quant.round_shift`. This module holds the step and the metrics.

The step
--------

``round_shift(a, s) = (a + 2^(s-1)) >> s`` for ``s >= 1`` (``a`` for ``s = 0``), an
arithmetic shift: round half up (towards +inf), so ``round_shift(-3, 1) = -1``.
``clamp(a, lo, hi) = min(max(a, lo), hi)``.

1. ``acc = spmv_ref(gate, [x_t; h_{t-1}])`` (the engine computes exactly this);
2. ``z = requant(acc + bias, mult, shift, -1024, 1023)``
   ``= clamp(round_shift((acc + bias) * mult, shift), -1024, 1023)`` per row (the
   requantizer of every network, :func:`darbgen.quant.requant`), with
   ``mult`` in ``[2^14, 2^15)`` and ``mult / 2^shift ~= scale_i * 2^7 / 127``;
3. ``i, f, o = SIGMOID_LUT[z + 1024]``, ``g = TANH_LUT[z + 1024]`` (rows ``0:H``,
   ``H:2H``, ``3H:4H``; ``2H:3H``);
4. ``c_t = clamp(round_shift(f * c_{t-1}, 14) + round_shift(i * g, 28 - c_frac),
   -32768, 32767)``;
5. ``t = TANH_LUT[clamp(round_shift(c_t, c_frac - 7), -1024, 1023) + 1024]``;
6. ``h_t = clamp(round_shift(o * t * 127, 28), -127, 127)`` (the clamp never acts:
   ``|o * t| <= 2^28``).

The output head (for perplexity) runs on the engine too: ``spmv_ref(head, h_int)``,
then the accumulators are dequantized to float logits (``acc * scale / 127 + bias``)
and the log-softmax is taken in float64: perplexity is a float figure.
"""

from __future__ import annotations

import math

import numpy as np

from ..format import SparseLayer
from ..lstm_format import (A_FRAC, C_MAX, C_MIN, X_ONE, Z_FRAC, Z_MAX, Z_MIN, Calibration,
                           IntLSTMParams, lstm_shape, one_hot_inputs, sigmoid_q, tanh_q)
from ..quant import MULT_BITS, float_bias, requant, round_shift
from .golden import spmv_ref

__all__ = [
    "calibrate", "gate_accumulators", "step_from_accumulators", "int_lstm_step",
    "int_lstm_sequence", "float_lstm_step", "stream_split", "int_head_logits",
    "int_perplexity", "float_perplexity",
]


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
    z = requant(total, params.mult, params.shift, Z_MIN, Z_MAX)
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
    return _float_step(gate.dequantized(), float_bias(gate), x, h, c)[:2]


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
    w, b = gate.dequantized(), float_bias(gate)
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
    return acc * scale / X_ONE + float_bias(head)


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
    head_bias = float_bias(head)
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
    w, b = gate.dequantized(), float_bias(gate)
    wh, bh = head.dequantized(), float_bias(head)
    h = np.zeros((n_streams, hidden))
    c = np.zeros_like(h)
    nll = 0.0
    for t in range(xs.shape[1]):
        c, h, _ = _float_step(w, b, one_hot_inputs(xs[:, t], inputs) / X_ONE, h, c)
        nll += _nll(h @ wh.T + bh, ys[:, t])
    return math.exp(nll / ys.size)
