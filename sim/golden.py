"""The integer golden model every hardware result is compared against (numpy only).

:func:`spmv_ref` computes ``y = Wq @ x`` exactly from the artifact's own
encoding: it decodes every entry's column as ``(block << log2 b_i) | offset``
(the hardware's decode) and sums in int64, which is exact because the
contract's accumulator width (:meth:`SparseLayer.accumulator_width`) is at most
64 bits. :meth:`SparseLayer.to_dense` is a second, independent path used to
check this one.
"""

from __future__ import annotations

import numpy as np

from .. import conv
from ..format import SparseLayer
from ..network import NetworkPlan
from ..quant import requant

__all__ = ["INPUT_BITS", "check_inputs", "spmv_ref", "network_ref", "im2col", "conv2d_ref"]

#: Width of a signed input-vector element (the engine's activations are int8).
INPUT_BITS = 8


def check_inputs(layer: SparseLayer, x, input_bits: int = INPUT_BITS,
                 cols: int | None = None) -> np.ndarray:
    """Validate input vectors for ``layer``: integers in the signed ``input_bits`` range,
    shape ``(cols,)`` or ``(n, cols)``. Returns them as an ``(n, cols)`` int64 array.
    ``cols`` defaults to the layer's (a convolution takes its whole input map).

    Raises
    ------
    TypeError
        ``x`` does not hold integers.
    ValueError
        Wrong shape, or a value outside the input range.
    """
    if isinstance(input_bits, bool) or not isinstance(input_bits, (int, np.integer)) or \
            not 2 <= input_bits <= 16:
        raise ValueError(f"input bits must be an integer between 2 and 16, "
                         f"not {input_bits!r}")
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"inputs must be integers, not {x.dtype}")
    cols = layer.cols if cols is None else cols
    if x.ndim not in (1, 2) or x.shape[-1] != cols:
        raise ValueError(f"inputs must have shape ({cols},) or (n, {cols}) for "
                         f"layer {layer.name!r}, not {x.shape}")
    lo, hi = -(1 << (input_bits - 1)), (1 << (input_bits - 1)) - 1
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"inputs must fit in {input_bits} signed bits ({lo}..{hi}), "
                         f"not {x.min()}..{x.max()}")
    return np.atleast_2d(x).astype(np.int64)


def spmv_ref(layer: SparseLayer, x, input_bits: int = INPUT_BITS) -> np.ndarray:
    """Exact integer sparse matrix-vector products ``Wq @ x``.

    Parameters
    ----------
    layer : SparseLayer
    x : array of int, shape (cols,) or (n, cols)
        Signed ``input_bits`` inputs.

    Returns
    -------
    array of int64, shape (rows,) or (n, rows)
        Exact; every value fits the layer's signed ``accumulator_width(input_bits)``.
    """
    xs = check_inputs(layer, x, input_bits)
    products = layer.values[None, :] * xs[:, layer.columns]        # (n, nnz)
    sums = np.concatenate([np.zeros((xs.shape[0], 1), np.int64), products.cumsum(axis=1)], axis=1)
    starts = layer.row_starts
    y = sums[:, starts[1:]] - sums[:, starts[:-1]]
    width = layer.accumulator_width(input_bits)
    assert np.all(np.abs(y) < (1 << (width - 1))), "accumulator width derivation is wrong"
    return y[0] if np.ndim(x) == 1 else y


def network_ref(net: NetworkPlan, x) -> np.ndarray:
    """Exact integer logits of a whole network (:func:`darbgen.network.plan`).

    Parameters
    ----------
    net : NetworkPlan
    x : array of int, shape (cols,) or (n, cols)
        The network's integer inputs (:meth:`NetworkPlan.quantize_input`).

    Returns
    -------
    array of int64, shape (classes,) or (n, classes)
        ``acc + bias`` of the last layer; every hidden layer requantized in between.
        A convolution runs on the im2col patches of its input map (one product per
        output position), then requantizes per channel, max-pools the integers and
        flattens channel-major (:mod:`darbgen.conv`).
    """
    h = check_inputs(net.layers[0].layer, x, net.input_bits, net.cols)
    for q in net.layers:
        g = q.layer.conv_geometry
        n = len(h)
        if g is not None:
            h = conv.im2col(h, g).reshape(n * g.positions, -1)
        v = spmv_ref(q.layer, h, net.input_bits) + q.bias
        h = v if q.final else requant(v, q.mult, q.shift, q.lo, q.hi)
        if g is not None:
            maps = h.reshape(n, *g.output_size, g.filters).transpose(0, 3, 1, 2)
            h = conv.maxpool(maps, g.spec.pool).reshape(n, -1)
    return h[0] if np.ndim(x) == 1 else h


def im2col(x, kernel: tuple, padding: int = 0) -> np.ndarray:
    """Lower ``(n, C, H, W)`` feature maps to GEMM inputs for a stride-1 convolution.

    Returns ``(n, H_out·W_out, C·kh·kw)``: one input vector per output position, its
    elements in the GEMM view's column order (channel, then kernel row, then column),
    matching a Conv2d weight reshaped to ``F × C·kh·kw``.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"feature maps must be (n, C, H, W), not shape {x.shape}")
    n, c, h, w = x.shape
    return conv.im2col(x, conv.ConvGeometry((1, c, *kernel), conv.ConvSpec((h, w), padding)))


def conv2d_ref(layer: SparseLayer, x, padding: int = 0, input_bits: int = INPUT_BITS):
    """Exact integer stride-1 convolution of a Conv2d layer (GEMM view, possibly
    compacted) over ``(n, C, H, W)`` inputs: im2col, then :func:`spmv_ref` per position.

    Returns ``(n, F, H_out, W_out)`` int64.
    """
    if len(layer.shape) != 4:
        raise ValueError(f"layer {layer.name!r} is not a convolution (shape {layer.shape})")
    f, c, kh, kw = layer.shape
    x = np.asarray(x)
    patches = im2col(x, (kh, kw), padding)
    n, positions, _ = patches.shape
    y = spmv_ref(layer, layer.gather(patches.reshape(n * positions, -1)), input_bits)
    ho = x.shape[2] + 2 * padding - kh + 1
    return y.reshape(n, ho, -1, f).transpose(0, 3, 1, 2)
