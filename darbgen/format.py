"""The sparse-layer contract and the ``.darb`` artifact (numpy only, never torch).

A :class:`SparseLayer` is a ``rows × cols`` matrix of quantized integers stored
as *regular blocks*:

* row ``i`` is cut into aligned blocks of ``block_sizes[i]`` columns (a power of
  two, ``b_i``); the last block of a row is partial when ``cols`` is not a
  multiple of ``b_i``;
* every block of row ``i`` keeps exactly ``keep[i]`` entries (``k_i``), a partial
  block ``min(k_i, width)``;
* each kept entry stores its quantized value and its *in-block offset*
  (``log2 b_i`` bits); its column decodes as ``(block << log2 b_i) | offset``.

Entries are stored in canonical order: row, then block, then ascending offset.
The same format covers every pruning method and the baselines:

============================  ==============================  ===================
layout                        block size ``b_i``              keep ``k_i``
============================  ==============================  ===================
DARB                          per row, from the row density   1 (or k)
BMWM                          one ``b`` for the layer         1 (or k)
N:M                           ``M``                           ``N``
dense                         1                               1
irregular / block (CSR-like)  ``next_pow2(cols)``: one block  nonzeros of the row
============================  ==============================  ===================

Quantization is symmetric: the float weight is ``values * scale``; ``scale`` is
one float per row (the default, because DARB rows differ in density and range)
or one for the layer. Everything else (nnz, pruning ratio, index bits, the
accumulator width) is derived, never stored.

The artifact is a zip of ``manifest.json`` and ``.npy`` arrays, readable with
numpy alone and validated on load.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .conv import ConvGeometry, ConvSpec
from .files import MAX_INPUT_BYTES, atomic_write, open_input

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "ACTIVATIONS", "ArtifactError", "SparseLayer", "Artifact",
    "ceil_log2", "check_layout", "single_block_layout", "infer_layout", "quantize", "beat_dtype",
    "pack_beats", "atomic_write", "read_npy", "MAX_ROWS", "MAX_COLS", "MAX_WEIGHTS",
    "MAX_ENTRIES", "MAX_BLOCK_SIZE", "MAX_MEMBER_BYTES", "MAX_ARTIFACT_BYTES",
]

FORMAT_NAME = "darbgen-artifact"
FORMAT_VERSION = 1

#: What may follow a layer in a network.
ACTIVATIONS = ("none", "relu")

# Widest accumulator the numpy golden model computes exactly in int64.
MAX_ACCUMULATOR_WIDTH = 64

# Limits on every size a layer may declare (docs/format.md). They are checked before
# anything derived from them is allocated, and they keep all size arithmetic far inside
# int64: a row keeps at most ``cols`` entries, so nnz <= rows * cols <= 2^26.
#: Most rows (outputs) of a layer.
MAX_ROWS = 1 << 20
#: Most columns (inputs) of a layer, at its original width too.
MAX_COLS = 1 << 20
#: Largest dense view of a layer, rows × original columns: what ``to_dense`` and
#: ``mask`` allocate.
MAX_WEIGHTS = 1 << 26
#: Most kept entries of a layer.
MAX_ENTRIES = 1 << 24
#: Largest block size: one block spans the widest row.
MAX_BLOCK_SIZE = MAX_COLS
#: Largest inflated member of an artifact (the offsets of MAX_ENTRIES entries as uint32,
#: plus the .npy header).
MAX_MEMBER_BYTES = 4 * MAX_ENTRIES + 4096
#: Largest artifact: the file on disk, and all its members inflated.
MAX_ARTIFACT_BYTES = MAX_INPUT_BYTES


class ArtifactError(ValueError):
    """A sparse layer or an artifact file breaks the contract.

    The message names the file (when there is one), the layer and the row or
    field at fault.
    """


def ceil_log2(n: int) -> int:
    """Number of bits needed to address ``n`` items (0 for ``n <= 1``)."""
    return max(int(n) - 1, 0).bit_length()


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _int_array(name, field_name, data, ndim):
    arr = np.asarray(data)
    if arr.dtype.kind not in "iu" and arr.size:
        raise TypeError(f"layer {name!r}: field {field_name!r} must hold integers, "
                        f"not {arr.dtype}")
    if arr.ndim != ndim:
        raise ArtifactError(f"layer {name!r}: field {field_name!r} must have {ndim} "
                            f"dimension(s), not shape {arr.shape}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ArtifactError(f"layer {name!r}: field {field_name!r} holds {arr.max()}, "
                            "beyond any size or value a layer can have")
    out = arr.astype(np.int64)
    out.flags.writeable = False
    return out


def _readonly(arr):
    arr.flags.writeable = False
    return arr


def _value_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _value_dtype(bits: int):
    return np.int8 if bits <= 8 else np.int16


def _offset_dtype(max_block: int):
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_block - 1 <= np.iinfo(dt).max:
            return dt
    return np.uint64


@dataclass(frozen=True, eq=False)
class SparseLayer:
    """One pruned, quantized weight matrix in regular-block form.

    Parameters
    ----------
    name : str
        Layer name, unique within an artifact (e.g. ``"fc1"``).
    rows, cols : int
        Shape of the matrix in its GEMM view (outputs × inputs).
    block_sizes : array of int, shape (rows,)
        Per-row block size ``b_i``, a power of two (1 is allowed: dense).
    keep : array of int, shape (rows,)
        Per-row keep count ``k_i`` of every block, ``0 <= k_i <= b_i``.
    offsets : array of int, shape (nnz,)
        In-block offset of every kept entry, canonical order.
    values : array of int, shape (nnz,)
        Quantized value of every kept entry, canonical order.
    scale : float or array of float, shape (rows,)
        Dequantization scale: the float weight is ``values * scale``.
    weight_bits : int
        Width of a signed value, 2 to 16.
    method : str
        Pruning method that produced the layer (provenance).
    params : dict
        The method's parameters (provenance), JSON-serializable.
    bias : array of float, shape (rows,), optional
        Float bias of the layer, carried for whole-network inference.
    shape : tuple of int, optional
        Original tensor shape (e.g. a Conv2d's ``(F, C, kh, kw)``); defaults to
        ``(rows, cols)``.
    input_columns : array of int, shape (cols,), optional
        Compaction map: the original input column of each stored column, strictly
        increasing. Columns empty in every row (pruned feature maps, strided positions)
        are dropped at export; the host gathers ``x[input_columns]`` (:meth:`gather`)
        before the engine sees it. ``shape`` then describes the original weight.
    input_scale : float, optional
        Quantization step of the layer's input activations (the float input is
        ``x * input_scale``): set by calibration, needed to run whole networks in
        integers (:mod:`darbgen.network`).
    activation : {"none", "relu"}
        What follows the layer in the network.
    conv : ConvSpec, optional
        A convolution's input size, padding, stride and the max-pool after its
        activation (:mod:`darbgen.conv`); only for a 4-D ``shape``, needed to run the
        layer in a whole network (im2col).

    Raises
    ------
    TypeError
        A field has the wrong type (e.g. float offsets).
    ArtifactError
        A field breaks the contract; the message names the layer, row or field.
    """

    name: str
    rows: int
    cols: int
    block_sizes: np.ndarray
    keep: np.ndarray
    offsets: np.ndarray
    values: np.ndarray
    scale: np.ndarray
    weight_bits: int = 8
    method: str = "custom"
    params: dict = field(default_factory=dict)
    bias: np.ndarray | None = None
    shape: tuple | None = None
    input_columns: np.ndarray | None = None
    input_scale: float | None = None
    activation: str = "none"
    conv: ConvSpec | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"layer name must be a non-empty string, not {self.name!r}")
        name = self.name
        for dim, most in (("rows", MAX_ROWS), ("cols", MAX_COLS)):
            v = getattr(self, dim)
            if not _is_int(v):
                raise TypeError(f"layer {name!r}: {dim} must be an integer, not {v!r}")
            if not 1 <= v <= most:
                raise ArtifactError(f"layer {name!r}: {dim} must be between 1 and {most}, "
                                    f"not {v}")
            object.__setattr__(self, dim, int(v))
        if not _is_int(self.weight_bits):
            raise TypeError(f"layer {name!r}: weight_bits must be an integer, "
                            f"not {self.weight_bits!r}")
        if not 2 <= self.weight_bits <= 16:
            raise ArtifactError(f"layer {name!r}: weight_bits must be between 2 and 16, "
                                f"not {self.weight_bits}")
        object.__setattr__(self, "weight_bits", int(self.weight_bits))
        if not isinstance(self.method, str):
            raise TypeError(f"layer {name!r}: method must be a string, not {self.method!r}")
        if not isinstance(self.params, dict):
            raise TypeError(f"layer {name!r}: params must be a dict, not {self.params!r}")
        for f in ("block_sizes", "keep", "offsets", "values"):
            object.__setattr__(self, f, _int_array(name, f, getattr(self, f), 1))
        self._validate_scale()
        self._validate_extras()
        self.validate()

    def _validate_scale(self):
        name = self.name
        scale = np.asarray(self.scale)
        if scale.dtype.kind not in "fiu":
            raise TypeError(f"layer {name!r}: field 'scale' must hold numbers, not {scale.dtype}")
        scale = scale.astype(np.float64)
        if scale.shape not in ((), (self.rows,)):
            raise ArtifactError(f"layer {name!r}: field 'scale' must be a scalar or have "
                                f"shape ({self.rows},), not {scale.shape}")
        bad = ~(np.isfinite(scale) & (scale > 0))
        if bad.any():
            where = "" if scale.ndim == 0 else f" at row {int(np.argmax(bad))}"
            raise ArtifactError(f"layer {name!r}: field 'scale' must be finite and "
                                f"positive{where}, not {scale.flat[int(np.argmax(bad))]}")
        object.__setattr__(self, "scale", _readonly(scale))

    def _validate_extras(self):
        name = self.name
        if self.input_scale is not None:
            if not isinstance(self.input_scale, (int, float, np.floating, np.integer)) or \
                    isinstance(self.input_scale, bool):
                raise TypeError(f"layer {name!r}: input_scale must be a number, "
                                f"not {self.input_scale!r}")
            if not (math.isfinite(self.input_scale) and self.input_scale > 0):
                raise ArtifactError(f"layer {name!r}: field 'input_scale' must be finite and "
                                    f"positive, not {self.input_scale}")
            object.__setattr__(self, "input_scale", float(self.input_scale))
        if self.activation not in ACTIVATIONS:
            raise ArtifactError(f"layer {name!r}: field 'activation' must be one of "
                                f"{', '.join(map(repr, ACTIVATIONS))}, not {self.activation!r}")
        if self.bias is not None:
            bias = np.asarray(self.bias)
            if bias.dtype.kind != "f" or bias.shape != (self.rows,):
                raise ArtifactError(f"layer {name!r}: field 'bias' must be {self.rows} floats, "
                                    f"not {bias.dtype} of shape {bias.shape}")
            # Stored as float32: a float64 bias beyond its range would become infinite.
            if not (np.isfinite(bias).all() and
                    (np.abs(bias) <= np.finfo(np.float32).max).all()):
                raise ArtifactError(f"layer {name!r}: field 'bias' must be finite float32 "
                                    "numbers")
            object.__setattr__(self, "bias", _readonly(bias.astype(np.float32)))
        if self.shape is not None and not isinstance(self.shape, (tuple, list)):
            raise TypeError(f"layer {name!r}: shape must be a tuple of integers, "
                            f"not {self.shape!r}")
        shape = (self.rows, self.cols) if self.shape is None else tuple(self.shape)
        width = self.cols
        if self.input_columns is not None:
            cols = _int_array(name, "input_columns", self.input_columns, 1)
            width = math.prod(shape[1:]) if all(_is_int(d) for d in shape) else -1
            if cols.shape != (self.cols,):
                raise ArtifactError(f"layer {name!r}: field 'input_columns' must have {self.cols} "
                                    f"entries (one per column), not {cols.shape[0]}")
            if cols.size and (cols[0] < 0 or cols[-1] >= width or (np.diff(cols) <= 0).any()):
                raise ArtifactError(f"layer {name!r}: field 'input_columns' must be strictly "
                                    f"increasing columns of the original {width}")
            object.__setattr__(self, "input_columns", cols)
        if (not shape or not all(_is_int(d) and d > 0 for d in shape) or shape[0] != self.rows
                or math.prod(shape[1:]) != width):
            raise ArtifactError(f"layer {name!r}: field 'shape' {shape} does not flatten "
                                f"to ({self.rows}, {width})")
        if width > MAX_COLS or self.rows * width > MAX_WEIGHTS:
            raise ArtifactError(f"layer {name!r}: {self.rows} × {width} weights, more than "
                                f"the {MAX_WEIGHTS} (at most {MAX_COLS} columns) a layer "
                                "may have")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        if self.conv is not None:
            if not isinstance(self.conv, ConvSpec):
                raise TypeError(f"layer {name!r}: conv must be a ConvSpec, not {self.conv!r}")
            if len(self.shape) != 4:
                raise ArtifactError(f"layer {name!r}: field 'conv' needs a 4-D shape (F, C, kh, "
                                    f"kw), not {self.shape}")
            try:
                ConvGeometry(self.shape, self.conv)
            except ValueError as e:
                raise ArtifactError(f"layer {name!r}: field 'conv': {e}") from None

    # -- validation -------------------------------------------------------------

    def validate(self) -> None:
        """Check the layout and every entry against the contract.

        Raises
        ------
        ArtifactError
            Naming the layer and the first row, block or field at fault.
        """
        name, rows, cols = self.name, self.rows, self.cols
        b, k = self.block_sizes, self.keep
        for f, arr in (("block_sizes", b), ("keep", k)):
            if arr.shape != (rows,):
                raise ArtifactError(f"layer {name!r}: field {f!r} must have {rows} entries "
                                    f"(one per row), not {arr.shape[0]}")
        _check_block_sizes(name, b)
        bad = (k < 0) | (k > b)
        if bad.any():
            r = int(np.argmax(bad))
            raise ArtifactError(f"layer {name!r}: row {r}: keep must be between 0 and the "
                                f"block size {b[r]}, not {k[r]}")
        nnz = int(self.row_nnz.sum())
        if nnz == 0:
            raise ArtifactError(f"layer {name!r}: keeps no weights")
        if nnz > MAX_ENTRIES:
            raise ArtifactError(f"layer {name!r}: keeps {nnz} weights, more than the "
                                f"{MAX_ENTRIES} a layer may have")
        for f in ("offsets", "values"):
            n = getattr(self, f).shape[0]
            if n != nnz:
                raise ArtifactError(f"layer {name!r}: field {f!r} has {n} entries, "
                                    f"the layout needs {nnz}")
        lo, hi = _value_range(self.weight_bits)
        bad = (self.values < lo) | (self.values > hi)
        if bad.any():
            i = int(np.argmax(bad))
            raise ArtifactError(f"layer {name!r}: row {self.entry_rows[i]}: value "
                                f"{self.values[i]} does not fit in {self.weight_bits} bits")
        off = self.offsets
        rows_e, blocks_e = self.entry_rows, self.entry_blocks
        width = np.minimum(b[rows_e], cols - (blocks_e << self.log2_block_sizes[rows_e]))
        bad = (off < 0) | (off >= width)
        if bad.any():
            i = int(np.argmax(bad))
            raise ArtifactError(f"layer {name!r}: row {rows_e[i]}, block {blocks_e[i]}: "
                                f"offset {off[i]} is outside the block (width {width[i]})")
        same_block = (rows_e[1:] == rows_e[:-1]) & (blocks_e[1:] == blocks_e[:-1])
        bad = same_block & (off[1:] <= off[:-1])
        if bad.any():
            i = int(np.argmax(bad)) + 1
            raise ArtifactError(f"layer {name!r}: row {rows_e[i]}, block {blocks_e[i]}: "
                                f"offsets must be distinct and ascending, got {off[i - 1]} "
                                f"then {off[i]}")
        if self.accumulator_width() > MAX_ACCUMULATOR_WIDTH:
            raise ArtifactError(f"layer {name!r}: needs a {self.accumulator_width()}-bit "
                                f"accumulator, more than {MAX_ACCUMULATOR_WIDTH}")

    # -- derived quantities (never stored) --------------------------------------

    @cached_property
    def log2_block_sizes(self) -> np.ndarray:
        """Per-row ``log2 b_i``: the shift of the column decode."""
        return _readonly(np.log2(self.block_sizes).astype(np.int64))

    @cached_property
    def blocks_per_row(self) -> np.ndarray:
        """Per-row block count, ``ceil(cols / b_i)``."""
        return _readonly(-(-self.cols // self.block_sizes))

    @cached_property
    def row_nnz(self) -> np.ndarray:
        """Per-row number of kept entries: ``k_i`` per full block, ``min(k_i, width)`` for a
        partial last block."""
        nb = self.blocks_per_row
        last_width = self.cols - (nb - 1) * self.block_sizes
        return _readonly((nb - 1) * self.keep + np.minimum(self.keep, last_width))

    @cached_property
    def row_starts(self) -> np.ndarray:
        """Index of each row's first entry; ``row_starts[rows]`` is nnz."""
        return _readonly(np.concatenate([[0], np.cumsum(self.row_nnz)]))

    @property
    def nnz(self) -> int:
        """Number of kept entries (a kept weight may quantize to 0; it is still stored)."""
        return int(self.row_nnz.sum())

    @property
    def pruning_ratio(self) -> float:
        """Dense size (at the original width) over kept entries, e.g. 16.0 for a 16×
        pruned layer."""
        return self.rows * self.input_width / self.nnz

    @cached_property
    def entry_rows(self) -> np.ndarray:
        """Row of every entry."""
        return _readonly(np.repeat(np.arange(self.rows), self.row_nnz))

    @cached_property
    def entry_blocks(self) -> np.ndarray:
        """Block (within its row) of every entry."""
        rows = self.entry_rows
        pos = np.arange(rows.shape[0]) - self.row_starts[rows]
        k = np.maximum(self.keep[rows], 1)
        return _readonly(np.minimum(pos // k, self.blocks_per_row[rows] - 1))

    @cached_property
    def columns(self) -> np.ndarray:
        """Decoded column of every entry: ``(block << log2 b_i) | offset``."""
        rows = self.entry_rows
        return _readonly((self.entry_blocks << self.log2_block_sizes[rows]) | self.offsets)

    @property
    def offset_width(self) -> int:
        """Bits of the widest in-block offset, ``max log2 b_i``."""
        return int(self.log2_block_sizes.max())

    def header_bits(self) -> int:
        """Per-row header bits: a block-size code when ``b_i`` varies, a keep count
        when ``k_i`` varies; nothing for a field that is constant over the layer."""
        lg = self.log2_block_sizes
        bits = ceil_log2(int(lg.max() - lg.min()) + 1)
        if self.keep.min() != self.keep.max():
            bits += ceil_log2(int(self.keep.max()) + 1)
        return bits

    @property
    def index_bits_per_nnz(self) -> float:
        """Index storage per kept entry: in-block offsets plus per-row headers.

        For the one-block-per-row (CSR-like) layout this is ``ceil(log2 cols)``
        column bits plus a row-length field per row: the CSR cost.
        """
        offset_bits = int((self.row_nnz * self.log2_block_sizes).sum())
        return (offset_bits + self.rows * self.header_bits()) / self.nnz

    def accumulator_width(self, input_bits: int = 8) -> int:
        """Signed width that holds any row sum exactly for ``input_bits`` signed inputs.

        A product of a ``w``-bit and an ``x``-bit signed number needs ``w + x`` bits
        (``-2^(w-1) · -2^(x-1)`` is the extreme); a sum of ``n`` of them needs
        ``ceil(log2 n)`` more.
        """
        if not _is_int(input_bits) or input_bits < 2:
            raise ValueError(f"input bits must be an integer of at least 2, not {input_bits!r}")
        return self.weight_bits + input_bits + ceil_log2(int(self.row_nnz.max()))

    @property
    def is_uniform(self) -> bool:
        """True when every row has the same block size and keep count."""
        return bool((self.block_sizes == self.block_sizes[0]).all()
                    and (self.keep == self.keep[0]).all())

    # -- conversions ------------------------------------------------------------

    @property
    def input_width(self) -> int:
        """Columns of the original weight (``cols`` unless compacted)."""
        return math.prod(self.shape[1:])

    @cached_property
    def conv_geometry(self) -> ConvGeometry | None:
        """Every size of the convolution (``None`` unless the layer has ``conv``)."""
        return None if self.conv is None else ConvGeometry(self.shape, self.conv)

    def gather(self, x) -> np.ndarray:
        """Input vectors of the original width reduced to the stored columns."""
        x = np.asarray(x)
        return x if self.input_columns is None else x[..., self.input_columns]

    def to_dense(self, expanded: bool = False) -> np.ndarray:
        """The masked, quantized integer matrix, ``rows × cols`` (int8 or int16); with
        ``expanded``, at the original width (compacted columns back as zeros)."""
        out = np.zeros((self.rows, self.cols), dtype=_value_dtype(self.weight_bits))
        out[self.entry_rows, self.columns] = self.values
        if expanded and self.input_columns is not None:
            full = np.zeros((self.rows, self.input_width), dtype=out.dtype)
            full[:, self.input_columns] = out
            return full
        return out

    def mask(self) -> np.ndarray:
        """Boolean ``rows × cols`` mask of the kept entries."""
        out = np.zeros((self.rows, self.cols), dtype=bool)
        out[self.entry_rows, self.columns] = True
        return out

    def dequantized(self) -> np.ndarray:
        """Float ``rows × cols`` matrix ``to_dense() * scale``."""
        scale = self.scale[:, None] if self.scale.ndim else self.scale
        return self.to_dense().astype(np.float64) * scale

    @classmethod
    def encode(cls, name, qweight, mask, block_sizes, keep, scale, **kwargs) -> "SparseLayer":
        """Build a layer from a dense integer matrix, its mask and its layout.

        Parameters
        ----------
        name : str
            Layer name.
        qweight : array of int, shape (rows, cols)
            Quantized weights; entries outside ``mask`` are ignored.
        mask : array of bool, shape (rows, cols)
            Kept entries; must match the layout exactly.
        block_sizes, keep : array of int, shape (rows,)
            The layout (see :class:`SparseLayer`).
        scale : float or array of float
            Dequantization scale.
        **kwargs
            Other :class:`SparseLayer` fields (``weight_bits``, ``method``, ...).

        Raises
        ------
        ArtifactError
            The mask does not match the layout; the message names the row and block.
        """
        qweight, mask = np.asarray(qweight), np.asarray(mask, dtype=bool)
        if qweight.ndim != 2 or mask.shape != qweight.shape:
            raise ArtifactError(f"layer {name!r}: weight {qweight.shape} and mask {mask.shape} "
                                "must be matrices of the same shape")
        rows, cols = mask.shape
        check_layout(name, mask, block_sizes, keep)
        r, c = np.nonzero(mask)        # row-major: the canonical order
        b = np.asarray(block_sizes, dtype=np.int64)
        return cls(name=name, rows=rows, cols=cols, block_sizes=b, keep=keep,
                   offsets=c & (b[r] - 1), values=qweight[r, c], scale=scale, **kwargs)

    @classmethod
    def from_float(cls, name, weight, mask, block_sizes, keep, *, weight_bits=8,
                   per_row_scale=True, **kwargs) -> "SparseLayer":
        """Quantize a float matrix symmetrically (see :func:`quantize`) and encode it."""
        q, scale = quantize(weight, mask, weight_bits, per_row=per_row_scale)
        return cls.encode(name, q, mask, block_sizes, keep, scale,
                          weight_bits=weight_bits, **kwargs)


def _check_block_sizes(name: str, b: np.ndarray) -> None:
    """Raise :class:`ArtifactError` naming the first row whose block size is no power of 2
    up to :data:`MAX_BLOCK_SIZE`."""
    bad = (b < 1) | (b & (b - 1) != 0)
    if bad.any():
        r = int(np.argmax(bad))
        raise ArtifactError(f"layer {name!r}: row {r}: block size must be a power of 2, "
                            f"not {b[r]}")
    if b.size and b.max() > MAX_BLOCK_SIZE:
        r = int(np.argmax(b))
        raise ArtifactError(f"layer {name!r}: row {r}: block size must be at most "
                            f"{MAX_BLOCK_SIZE}, not {b[r]}")


def check_layout(name, mask, block_sizes, keep) -> None:
    """Raise :class:`ArtifactError` unless every block of ``mask`` keeps exactly its
    ``min(k_i, width)`` entries under the given per-row layout."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = mask.shape
    b = np.asarray(block_sizes, dtype=np.int64)
    k = np.asarray(keep, dtype=np.int64)
    if b.shape != (rows,) or k.shape != (rows,):
        raise ArtifactError(f"layer {name!r}: layout must have one block size and one keep "
                            f"count per row ({rows}), not {b.shape[0]} and {k.shape[0]}")
    _check_block_sizes(name, b)
    for size in np.unique(b):
        sel = np.nonzero(b == size)[0]
        nb = -(-cols // size)
        if nb == 1:                    # one block (of any size) covers the row
            counts = mask[sel].sum(axis=1, keepdims=True)
        else:                          # nb * size < 2 * cols
            padded = np.zeros((sel.size, nb * size), dtype=np.int64)
            padded[:, :cols] = mask[sel]
            counts = padded.reshape(sel.size, nb, size).sum(axis=2)
        width = np.minimum(size, cols - np.arange(nb) * size)
        need = np.minimum(k[sel][:, None], width[None, :])
        bad = counts != need
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ArtifactError(f"layer {name!r}: row {sel[i]}, block {j}: keeps {counts[i, j]} "
                                f"weights, the layout needs {need[i, j]}")


def single_block_layout(mask) -> tuple[np.ndarray, np.ndarray]:
    """Layout of an arbitrary mask: one block of ``next_pow2(cols)`` per row, keep = the
    row's nonzeros. Its offsets are absolute columns, so its index cost is CSR's."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = mask.shape
    return (np.full(rows, 1 << ceil_log2(cols), dtype=np.int64),
            mask.sum(axis=1).astype(np.int64))


def infer_layout(mask, keep: int, sizes=None, name: str = "mask") -> tuple[np.ndarray, np.ndarray]:
    """Recover the per-row block sizes of a regular-block mask with ``keep`` per block.

    A row's kept count falls strictly as its block size grows (until one block covers
    the row), so the count names the block size: the smallest of ``sizes`` (default:
    every power of two) that gives it. :func:`check_layout` then confirms the mask.

    Raises
    ------
    ArtifactError
        A row's count matches none of the block sizes, or the mask breaks the layout.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, cols = mask.shape
    if sizes is None:
        sizes = 1 << np.arange(ceil_log2(cols) + 1)
    sizes = np.array(sorted(int(b) for b in sizes if b >= keep), dtype=np.int64)
    nb = -(-cols // sizes)
    kept = (nb - 1) * keep + np.minimum(keep, cols - (nb - 1) * sizes)
    counts = mask.sum(axis=1)
    hit = kept[None, :] == counts[:, None]
    missing = ~hit.any(axis=1)
    if missing.any():
        r = int(np.argmax(missing))
        raise ArtifactError(f"layer {name!r}: row {r}: keeps {counts[r]} weights, which no "
                            f"allowed block size with {keep} per block gives for {cols} columns")
    b = sizes[np.argmax(hit, axis=1)]
    k = np.full(rows, keep, dtype=np.int64)
    check_layout(name, mask, b, k)
    return b, k


def quantize(weight, mask, bits: int = 8, *, per_row: bool = True):
    """Symmetric quantization of the kept weights.

    ``scale = max|w_kept| / (2^(bits-1) - 1)`` per row (or per layer);
    ``q = round(w / scale)`` clipped to ``±(2^(bits-1) - 1)``. An all-zero row gets
    scale 1.

    Returns
    -------
    q : array of int64, shape (rows, cols)
        Quantized weights, zero outside the mask.
    scale : array of float64, shape (rows,) or ()
    """
    w = np.asarray(weight, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if w.ndim != 2 or m.shape != w.shape:
        raise ValueError(f"weight {w.shape} and mask {m.shape} must be matrices of the same shape")
    if not np.isfinite(w).all():
        raise ValueError("weight has non-finite values")
    if not _is_int(bits) or not 2 <= bits <= 16:
        raise ValueError(f"weight bits must be an integer between 2 and 16, not {bits!r}")
    qmax = (1 << (bits - 1)) - 1
    kept = np.abs(np.where(m, w, 0.0))
    peak = kept.max(axis=1) if per_row else np.asarray(kept.max())
    scale = np.where(peak > 0, peak / qmax, 1.0)
    s = scale[:, None] if per_row else scale
    q = np.clip(np.rint(w / s), -qmax, qmax).astype(np.int64)
    return np.where(m, q, 0), scale


# -- the packing function ---------------------------------------------------------

def beat_dtype(layer: SparseLayer) -> np.dtype:
    """numpy record of one weight beat; field widths follow the layer's contract."""
    return np.dtype([("value", _value_dtype(layer.weight_bits)),
                     ("offset", _offset_dtype(int(layer.block_sizes.max())))])


def pack_beats(layer: SparseLayer) -> np.ndarray:
    """The stream of ``(value, offset)`` beats of a layer, in canonical order.

    This is the one packing function: the engine's weight memory, the testbench
    stimulus and the host's weight frames are all built from its output.
    Row boundaries are not in the stream: they follow from the per-row layout
    (``row_nnz``), which travels as the row header table.
    """
    out = np.empty(layer.nnz, dtype=beat_dtype(layer))
    out["value"] = layer.values
    out["offset"] = layer.offsets
    return out


# -- the artifact -------------------------------------------------------------------

_ARRAYS = ("block_sizes", "keep", "offsets", "values", "scale", "bias", "input_columns")
_OPTIONAL_ARRAYS = ("bias", "input_columns")


def _members(i: int, layer: SparseLayer) -> dict:
    """Field name -> archive member of layer ``i``'s arrays."""
    return {f: f"layers/{i}/{f}.npy" for f in _ARRAYS if getattr(layer, f) is not None}


@dataclass(eq=False)
class Artifact:
    """A versioned set of sparse layers plus provenance: the file between stages.

    Parameters
    ----------
    layers : list of SparseLayer
        In network order; names must be unique.
    provenance : dict
        Where the layers came from: ``source``, ``method``, ``parameters`` and any
        figures (accuracy) worth keeping; JSON-serializable.
    """

    layers: list
    provenance: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        if not isinstance(self.layers, (list, tuple)) or not all(
                isinstance(layer, SparseLayer) for layer in self.layers):
            raise TypeError(f"layers must be a list of SparseLayer, not {self.layers!r:.80}")
        if not isinstance(self.provenance, dict):
            raise TypeError(f"provenance must be a dict, not {self.provenance!r:.80}")
        self.layers = list(self.layers)
        if not self.layers:
            raise ArtifactError("an artifact needs at least one layer")
        names = [layer.name for layer in self.layers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ArtifactError(f"layer names must be unique, {sorted(dup)[0]!r} repeats")

    def layer(self, name: str) -> SparseLayer:
        """The layer called ``name``.

        Raises
        ------
        ArtifactError
            No such layer; the message lists the names there are.
        """
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ArtifactError(f"no layer {name!r}; the artifact has "
                            f"{', '.join(repr(layer.name) for layer in self.layers)}")

    def manifest(self) -> dict:
        """The JSON manifest: everything but the arrays."""
        layers = []
        for i, layer in enumerate(self.layers):
            arrays = _members(i, layer)
            layers.append({"name": layer.name, "rows": layer.rows, "cols": layer.cols,
                           "shape": list(layer.shape), "method": layer.method,
                           "params": layer.params, "weight_bits": layer.weight_bits,
                           "scale_per": "row" if layer.scale.ndim else "layer",
                           "activation": layer.activation, "arrays": arrays})
            if layer.input_scale is not None:
                layers[-1]["input_scale"] = layer.input_scale
            if layer.conv is not None:
                layers[-1]["conv"] = layer.conv.to_json()
        return {"format": FORMAT_NAME, "format_version": self.format_version,
                "provenance": self.provenance, "layers": layers}

    def save(self, path) -> None:
        """Write the artifact to ``path`` atomically (a zip of JSON and ``.npy``).

        The bytes are read back with the loader's own checks before they are written:
        what :meth:`load` would refuse is never saved.

        Raises
        ------
        ArtifactError
            The artifact would not load back (e.g. provenance that is no JSON, or a
            file beyond the loader's limits); nothing is written.
        """
        try:
            manifest_json = json.dumps(self.manifest(), indent=1, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"the manifest (provenance, params) must be plain JSON: "
                                f"{e}") from None
        buf = io.BytesIO()
        self._write_zip(buf, manifest_json)
        data = buf.getvalue()
        if len(data) > MAX_ARTIFACT_BYTES:
            raise ArtifactError(f"the artifact would be {len(data)} bytes, more than the "
                                f"{MAX_ARTIFACT_BYTES} an artifact may have")
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            self._read(z)
        atomic_write(path, lambda f: f.write(data))

    def _write_zip(self, file, manifest_json: str) -> None:
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("manifest.json", manifest_json)
            for i, layer in enumerate(self.layers):
                stored = {"values": layer.values.astype(_value_dtype(layer.weight_bits)),
                          "offsets": layer.offsets.astype(
                              _offset_dtype(int(layer.block_sizes.max()))),
                          "block_sizes": layer.block_sizes.astype(np.uint32),
                          "keep": layer.keep.astype(np.uint32),
                          "scale": layer.scale, "bias": layer.bias,
                          "input_columns": None if layer.input_columns is None else
                          layer.input_columns.astype(np.uint32)}
                for f, member in _members(i, layer).items():
                    buf = io.BytesIO()
                    np.save(buf, stored[f], allow_pickle=False)
                    z.writestr(member, buf.getvalue())

    @classmethod
    def load(cls, path) -> "Artifact":
        """Read and validate an artifact.

        Raises
        ------
        ArtifactError
            The file is missing, not an artifact, truncated or corrupt, or breaks the
            contract; the message names the file and the layer, row or field.
        """
        path = Path(path)
        try:
            with open_input(path, max_bytes=MAX_ARTIFACT_BYTES, what="an artifact") as f:
                _check_directory(f)
                with zipfile.ZipFile(f) as z:
                    return cls._read(z)
        except ArtifactError as e:
            raise ArtifactError(f"{path}: {e}") from None
        except _ZIP_ERRORS as e:
            raise ArtifactError(f"{path}: not a readable darbgen artifact "
                                f"(corrupt or truncated zip: {e})") from None
        except (TypeError, ValueError) as e:   # open_input's messages name the path
            raise ArtifactError(e if str(e).startswith(str(path)) else f"{path}: {e}") \
                from None
        except RecursionError:
            raise ArtifactError(f"{path}: manifest.json nests too deeply") from None

    @classmethod
    def _read(cls, z: zipfile.ZipFile) -> "Artifact":
        inflated = sum(info.file_size for info in z.infolist())
        if inflated > MAX_ARTIFACT_BYTES:
            raise ArtifactError(f"the members inflate to {inflated} bytes, more than the "
                                f"{MAX_ARTIFACT_BYTES} an artifact may have")
        try:
            manifest = json.loads(_read_member(z, "manifest.json"),
                                  parse_constant=_no_constants)
        except KeyError:
            raise ArtifactError("not a darbgen artifact (no manifest.json)") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"manifest.json is not valid JSON ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise ArtifactError(f"not a darbgen artifact (manifest format is not {FORMAT_NAME!r})")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ArtifactError(f"format version {version!r} is not supported "
                                f"(this darbgen reads version {FORMAT_VERSION})")
        layers = _field(manifest, "layers", list, "manifest")
        provenance = _field(manifest, "provenance", dict, "manifest")
        out = []
        for i, entry in enumerate(layers):
            if not isinstance(entry, dict):
                raise ArtifactError(f"manifest layer {i} must be an object")
            name = _field(entry, "name", str, f"layer {i}")
            where = f"layer {name!r}"
            arrays = _field(entry, "arrays", dict, where)
            data = {}
            for f in _ARRAYS:
                if f not in arrays:
                    if f in _OPTIONAL_ARRAYS:
                        continue
                    raise ArtifactError(f"{where}: field {f!r} is missing")
                try:
                    data[f] = read_npy(_read_member(z, arrays[f]))
                except (KeyError, TypeError):
                    raise ArtifactError(f"{where}: field {f!r}: array {arrays[f]!r} is "
                                        "missing from the archive") from None
                except (ValueError, EOFError, OSError) as e:
                    raise ArtifactError(f"{where}: field {f!r}: unreadable array ({e})") from None
            if entry.get("scale_per") == "layer" and data["scale"].ndim != 0:
                raise ArtifactError(f"{where}: field 'scale' must be a scalar for a per-layer scale")
            shape = _field(entry, "shape", list, where)
            network = {}
            if "input_scale" in entry:
                network["input_scale"] = _field(entry, "input_scale", (int, float), where)
            if "activation" in entry:
                network["activation"] = _field(entry, "activation", str, where)
            if "conv" in entry:
                try:
                    network["conv"] = ConvSpec.from_json(entry["conv"])
                except (TypeError, ValueError) as e:
                    raise ArtifactError(f"{where}: field 'conv': {e}") from None
            out.append(SparseLayer(**network,
                name=name, rows=_field(entry, "rows", int, where),
                cols=_field(entry, "cols", int, where),
                weight_bits=_field(entry, "weight_bits", int, where),
                method=_field(entry, "method", str, where),
                params=_field(entry, "params", dict, where), shape=tuple(shape), **data))
        return cls(out, provenance, version)

    def validate(self) -> None:
        """Validate every layer (layers also validate themselves when built)."""
        for layer in self.layers:
            layer.validate()


def read_npy(data: bytes) -> np.ndarray:
    """The array in ``.npy`` bytes, without pickles.

    Unlike :func:`numpy.load`, it checks the header's shape and dtype against the bytes
    that follow before allocating anything: ``np.load`` first allocates what the header
    claims, so a damaged header could ask for terabytes (a ``MemoryError``).

    Raises
    ------
    ValueError
        Not a ``.npy`` file, a damaged header, an object array, or a data size other
        than the header's.
    """
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (TypeError, SyntaxError) as e:
        raise ValueError(f"damaged .npy header ({e})") from None
    if not dtype.hasobject:            # object arrays: np.load refuses them below
        need, left = math.prod(shape) * dtype.itemsize, len(data) - f.tell()
        if need != left:
            raise ValueError(f"the .npy header claims shape {shape} of {dtype} ({need} bytes), "
                             f"but {left} bytes follow it")
    f.seek(0)
    return np.load(f, allow_pickle=False)


# What zipfile raises on damaged archives: bad headers and CRCs, bad deflate streams,
# short reads, and header bits that claim encryption or unknown compression.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
               RuntimeError, UnicodeDecodeError)


#: Largest zip central directory: zipfile parses all of it when it opens the file.
MAX_DIRECTORY_BYTES = 1 << 20
#: Largest manifest.json.
MAX_MANIFEST_BYTES = 4 << 20
_END_OF_DIRECTORY = b"PK\x05\x06"


def _check_directory(f) -> None:
    """Refuse a zip whose central directory is beyond :data:`MAX_DIRECTORY_BYTES` (or
    zip64, which darbgen never writes) before :mod:`zipfile` parses it."""
    size = f.seek(0, io.SEEK_END)
    tail_start = max(0, size - (22 + 0xFFFF))     # the end record and the longest comment
    f.seek(tail_start)
    tail = f.read()
    f.seek(0)
    at = tail.rfind(_END_OF_DIRECTORY)
    if at < 0 or len(tail) - at < 22:
        return                                     # zipfile names what is wrong
    entries, directory_bytes = int.from_bytes(tail[at + 10:at + 12], "little"), \
        int.from_bytes(tail[at + 12:at + 16], "little")
    if entries == 0xFFFF or directory_bytes == 0xFFFFFFFF or \
            directory_bytes > MAX_DIRECTORY_BYTES:
        raise ArtifactError(f"not a darbgen artifact (a zip directory of {entries} members "
                            f"in {directory_bytes} bytes; at most {MAX_DIRECTORY_BYTES})")


def _read_member(z: zipfile.ZipFile, name: str) -> bytes:
    limit = MAX_MANIFEST_BYTES if name == "manifest.json" else MAX_MEMBER_BYTES
    size = z.getinfo(name).file_size               # zipfile never inflates past it
    if size > limit:
        raise ArtifactError(f"member {name!r} inflates to {size} bytes, more than the "
                            f"{limit} it may have")
    try:
        return z.read(name)
    except KeyError:
        raise
    except _ZIP_ERRORS as e:
        raise ArtifactError(f"member {name!r} is corrupt ({e})") from None


def _no_constants(name: str):
    """``json.loads`` takes NaN and Infinity, which JSON does not have (and which
    :meth:`Artifact.save` never writes)."""
    raise ArtifactError(f"manifest.json is not valid JSON ({name} is no JSON number)")


#: JSON names of the Python types json.loads makes (for messages about manifest fields).
JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               float: "a number", bool: "true or false", type(None): "null"}


def _field(obj: dict, key: str, kind, where: str):
    if key not in obj:
        raise ArtifactError(f"{where}: field {key!r} is missing")
    value = obj[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise ArtifactError(f"{where}: field {key!r} must be "
                            f"{' or '.join(JSON_NAMES[k] for k in kinds)}, "
                            f"not {JSON_NAMES[type(value)]}")
    return value
