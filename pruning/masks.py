"""Pure mask functions: a float weight matrix in, a boolean keep-mask out (numpy only).

Every function takes the GEMM view of a weight (``rows × cols``: a Linear's
weight, an LSTM's stacked ``[W_ih | W_hh]``, a Conv2d's ``F × C·kh·kw``) and
never modifies it. The regular-block ones (:func:`bmwm_mask`, :func:`nm_mask`,
:func:`darb_mask`) return masks whose layout :mod:`darbgen.format` stores
exactly; :func:`irregular_mask` and :func:`block_mask` are the baselines.

Ties in ``|w|`` go to the lower column, so every mask is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..format import MAX_BLOCK_SIZE

__all__ = [
    "DEFAULT_BLOCK_SIZES", "irregular_mask", "block_mask", "nm_mask", "bmwm_mask",
    "darb_block_sizes", "darb_mask", "nearest_density_rule", "smaller_block_rule",
    "larger_block_rule", "DENSITY_RULES", "kept_per_row",
]

DEFAULT_BLOCK_SIZES = (2, 4, 8, 16, 32, 64)


def _matrix(weight) -> np.ndarray:
    w = np.asarray(weight)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"weight must hold numbers, not {w.dtype}")
    if w.ndim != 2:
        raise ValueError(f"weight must be a matrix (rows × cols), not shape {w.shape}")
    if w.size == 0:
        raise ValueError(f"weight must not be empty, not shape {w.shape}")
    w = w.astype(np.float64)
    if not np.isfinite(w).all():
        raise ValueError("weight has non-finite values")
    return w


def _check_ratio(ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating, np.integer)):
        raise TypeError(f"pruning ratio must be a number, not {ratio!r}")
    if not (math.isfinite(min(ratio, math.inf)) and ratio >= 1):  # min: ints past float
        raise ValueError(f"pruning ratio must be at least 1 (dense size / kept weights), "
                         f"not {ratio}")
    return float(ratio)


def _check_power_of_two(what: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, not {n!r}")
    if n < 1 or n & (n - 1):
        raise ValueError(f"{what} must be a power of 2, not {n}")
    if n > MAX_BLOCK_SIZE:
        raise ValueError(f"{what} must be at most {MAX_BLOCK_SIZE}, not {n}")
    return int(n)


def check_block_sizes(block_sizes) -> tuple:
    """The allowed DARB block sizes, sorted and distinct.

    Raises
    ------
    TypeError
        Not a sequence of integers.
    ValueError
        Empty, or a size that is not a power of 2 up to the largest block size.
    """
    if isinstance(block_sizes, (str, bytes, dict)) or not isinstance(block_sizes, Iterable):
        raise TypeError(f"allowed block sizes must be a sequence of integers, "
                        f"not {block_sizes!r}")
    sizes = tuple(sorted({_check_power_of_two("block size", b) for b in block_sizes}))
    if not sizes:
        raise ValueError("allowed block sizes must not be empty")
    return sizes


def _check_keep(keep, smallest_block: int) -> int:
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)):
        raise TypeError(f"keep must be an integer, not {keep!r}")
    if not 1 <= keep <= smallest_block:
        raise ValueError(f"keep must be between 1 and the block size {smallest_block}, not {keep}")
    return int(keep)


def _top_count(size: int, ratio: float) -> int:
    return max(1, int(round(size / ratio)))


def irregular_mask(weight, ratio: float) -> np.ndarray:
    """Keep the ``round(size / ratio)`` largest ``|w|`` of the matrix (at least one).

    The irregular baseline; its index cost is CSR's.
    """
    w = np.abs(_matrix(weight))
    n = _top_count(w.size, _check_ratio(ratio))
    order = np.argsort(-w, axis=None, kind="stable")[:n]
    mask = np.zeros(w.size, dtype=bool)
    mask[order] = True
    return mask.reshape(w.shape)


def block_mask(weight, ratio: float, block_shape=(4, 4)) -> np.ndarray:
    """Uniform ``bh × bw`` block pruning: keep the ``round(n_blocks / ratio)`` blocks of
    largest L2 norm (at least one). Edge blocks may be partial.

    The structured baseline DARB is measured against (Narang et al. block-sparse
    RNNs prune ``4 × 4`` blocks).
    """
    w = _matrix(weight)
    bh, bw = _check_block_shape(block_shape)
    rows, cols = w.shape
    bh, bw = min(bh, rows), min(bw, cols)       # a block past the edge is the whole edge
    nbr, nbc = -(-rows // bh), -(-cols // bw)
    padded = np.zeros((nbr * bh, nbc * bw))
    padded[:rows, :cols] = w
    norms = (padded.reshape(nbr, bh, nbc, bw) ** 2).sum(axis=(1, 3))
    n = _top_count(norms.size, _check_ratio(ratio))
    keep = np.zeros(norms.size, dtype=bool)
    keep[np.argsort(-norms, axis=None, kind="stable")[:n]] = True
    full = np.repeat(np.repeat(keep.reshape(nbr, nbc), bh, axis=0), bw, axis=1)
    return full[:rows, :cols]


def _check_block_shape(block_shape) -> tuple[int, int]:
    if isinstance(block_shape, (int, np.integer)) and not isinstance(block_shape, bool):
        block_shape = (block_shape, block_shape)
    try:
        bh, bw = block_shape
    except (TypeError, ValueError):
        raise TypeError(f"block shape must be an integer or a pair (bh, bw), "
                        f"not {block_shape!r}") from None
    for d in (bh, bw):
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"block shape must be integers, not {block_shape!r}")
        if not 1 <= d <= MAX_BLOCK_SIZE:
            raise ValueError(f"block shape must be integers between 1 and {MAX_BLOCK_SIZE}, "
                             f"not {block_shape!r}")
    return int(bh), int(bw)


def bmwm_mask(weight, block_size, keep: int = 1) -> np.ndarray:
    """Block-max weight masking: in every aligned block of every row keep the ``keep``
    largest ``|w|`` (a partial last block keeps ``min(keep, width)``).

    Parameters
    ----------
    weight : array, shape (rows, cols)
    block_size : int or array of int, shape (rows,)
        One power-of-two block size for the layer, or one per row (DARB).
    keep : int
        Survivors per block, ``1 <= keep <= min(block_size)``.

    Examples
    --------
    >>> bmwm_mask([[1., -3., 2., 0.5]], 2).astype(int)
    array([[0, 1, 1, 0]])
    """
    w = np.abs(_matrix(weight))
    rows, cols = w.shape
    sizes = np.asarray(block_size)
    if sizes.ndim > 1 or sizes.ndim == 1 and sizes.shape != (rows,):
        raise ValueError(f"block size must be one integer or one per row ({rows}), "
                         f"not shape {sizes.shape}")
    sizes = np.broadcast_to(sizes, (rows,))
    if sizes.dtype.kind not in "iu":
        raise TypeError(f"block size must be an integer, not {sizes.dtype}")
    for b in np.unique(sizes):
        _check_power_of_two("block size", int(b))
    keep = _check_keep(keep, int(sizes.min()))
    mask = np.zeros((rows, cols), dtype=bool)
    for b in np.unique(sizes):
        sel = np.nonzero(sizes == b)[0]
        nb = -(-cols // b)
        span = b if nb > 1 else cols                # one block past the edge is the row
        padded = np.full((sel.size, nb * span), -1.0)  # below any |w|: never kept
        padded[:, :cols] = w[sel]
        blocks = padded.reshape(sel.size, nb, span)
        top = np.argsort(-blocks, axis=2, kind="stable")[:, :, :keep]
        chosen = np.zeros_like(blocks, dtype=bool)
        np.put_along_axis(chosen, top, True, axis=2)
        mask[sel] = chosen.reshape(sel.size, nb * span)[:, :cols]
    return mask


def nm_mask(weight, n: int, m: int) -> np.ndarray:
    """N:M sparsity: ``n`` survivors in every aligned group of ``m`` (a power of two).
    Identical to :func:`bmwm_mask` with ``block_size=m, keep=n``."""
    _check_power_of_two("M", m)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= m:
        raise ValueError(f"N must be an integer between 1 and M={m}, not {n!r}")
    return bmwm_mask(weight, m, keep=n)


def kept_per_row(cols: int, block_sizes, keep: int) -> np.ndarray:
    """Entries a row of ``cols`` keeps at each block size (partial last block included)."""
    b = np.asarray(block_sizes, dtype=np.int64)
    nb = -(-cols // b)
    return (nb - 1) * keep + np.minimum(keep, cols - (nb - 1) * b)


DensityRule = Callable[[np.ndarray, int, np.ndarray, int], np.ndarray]


def _ideal_log2(counts, cols: int, keep: int) -> np.ndarray:
    """log2 of each row's ideal block size ``keep · cols / count`` (an empty row: 2·cols)."""
    return np.log2(keep * cols / np.maximum(np.asarray(counts, dtype=np.float64), 0.5))


def nearest_density_rule(counts, cols: int, sizes, keep: int) -> np.ndarray:
    """Default DARB selection rule: the allowed size nearest (in log2) to the row's
    ideal ``keep · cols / count``, where ``count`` is the row's survivors under
    irregular pruning at the target ratio. A denser row gets a smaller block.

    Returns the index into ``sizes`` (sorted ascending) for every row.
    """
    dist = np.abs(_ideal_log2(counts, cols, keep)[:, None] - np.log2(np.asarray(sizes))[None, :])
    return np.argmin(dist, axis=1)   # ties go to the smaller block (keeps more)


def smaller_block_rule(counts, cols: int, sizes, keep: int) -> np.ndarray:
    """Variant: the largest allowed size at or below the ideal (a row keeps at least its
    irregular count; the budget correction then grows the blocks of the rows furthest
    below their ideal)."""
    below = np.log2(np.asarray(sizes))[None, :] <= _ideal_log2(counts, cols, keep)[:, None] + 1e-9
    return np.maximum(below.sum(axis=1) - 1, 0)


def larger_block_rule(counts, cols: int, sizes, keep: int) -> np.ndarray:
    """Variant: the smallest allowed size at or above the ideal (a row keeps at most its
    irregular count; the correction then shrinks the blocks of the rows furthest above)."""
    below = np.log2(np.asarray(sizes))[None, :] < _ideal_log2(counts, cols, keep)[:, None] - 1e-9
    return np.minimum(below.sum(axis=1), len(sizes) - 1)


#: DARB's selection rules by name (``bench/iso_accuracy.py`` compares them).
DENSITY_RULES = {"nearest": nearest_density_rule, "smaller": smaller_block_rule,
                 "larger": larger_block_rule}


def darb_block_sizes(weight, ratio: float, block_sizes: Sequence[int] = DEFAULT_BLOCK_SIZES,
                     keep: int = 1, rule: DensityRule = nearest_density_rule,
                     counts=None) -> np.ndarray:
    """Choose DARB's per-row block sizes.

    1. Irregular magnitude pruning at the target ratio gives each row's density.
    2. ``rule`` maps densities to allowed block sizes (dense rows → small blocks).
    3. A greedy correction meets the layer's budget ``rows·cols / ratio``: while a
       move brings the kept total closer to it, the row whose block is furthest
       below (or above) its ideal doubles (or halves) its block. Rows with equal
       blocks keep equal counts, so the correction never gives a denser row a
       larger block than a sparser one.

    This reconstructs the DARB paper's abstract (the full text was not available);
    ``rule`` is the pluggable part. See ``docs/darb.md``. ``counts`` replaces step 1 with
    given per-row budgets (SAP-driven DARB uses SAP's neuron-scope survivors).

    Returns
    -------
    array of int64, shape (rows,)
    """
    w = _matrix(weight)
    ratio = _check_ratio(ratio)
    sizes = np.array(check_block_sizes(block_sizes), dtype=np.int64)
    keep = _check_keep(keep, int(sizes[0]))
    if not callable(rule):
        raise TypeError(f"block-size rule must be callable, not {rule!r}")
    rows, cols = w.shape
    if counts is None:
        counts = irregular_mask(w, ratio).sum(axis=1)
    counts = np.asarray(counts)
    if counts.shape != (rows,):
        raise ValueError(f"row budgets must be one count per row ({rows}), not shape "
                         f"{counts.shape}")
    idx = np.asarray(rule(counts, cols, sizes, keep), dtype=np.int64)
    if idx.shape != (rows,) or (idx < 0).any() or (idx >= sizes.size).any():
        raise ValueError("block-size rule must return one index into the allowed sizes per row")
    kept = kept_per_row(cols, sizes, keep)
    # Distance of each row's block from its ideal size, in octaves (priority of a move).
    ideal = _ideal_log2(counts, cols, keep)
    target = rows * cols / ratio
    total = int(kept[idx].sum())
    while total != target:
        err = total - target
        if err > 0:       # too many kept: grow a block, most undersized row first
            cand = np.nonzero(idx < sizes.size - 1)[0]
            step = 1
            cand = cand[np.argsort(np.log2(sizes[idx[cand]]) - ideal[cand], kind="stable")]
        else:             # too few kept: shrink a block, most oversized row first
            cand = np.nonzero(idx > 0)[0]
            step = -1
            cand = cand[np.argsort(ideal[cand] - np.log2(sizes[idx[cand]]), kind="stable")]
        if cand.size == 0:
            break
        delta = kept[idx[cand] + step] - kept[idx[cand]]
        better = np.nonzero(np.abs(err + delta) < abs(err))[0]
        if better.size == 0:
            break
        r = cand[better[0]]
        idx[r] += step
        total += int(delta[better[0]])
    # Sizes past a whole row keep the same entries: store the smallest, it costs fewer
    # offset bits and names the same mask (what infer_layout recovers).
    return sizes[_smallest_equivalent(kept, idx)]


def _smallest_equivalent(kept: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """For each chosen index, the smallest index with the same kept count."""
    first = {}
    for j, n in enumerate(kept):
        first.setdefault(int(n), j)
    return np.array([first[int(kept[i])] for i in idx], dtype=np.int64)


def darb_mask(weight, ratio: float, block_sizes: Sequence[int] = DEFAULT_BLOCK_SIZES,
              keep: int = 1, rule: DensityRule = nearest_density_rule):
    """Density-adaptive regular-block pruning: :func:`darb_block_sizes`, then per-row BMWM.

    Returns
    -------
    mask : array of bool, shape (rows, cols)
    row_block_sizes : array of int64, shape (rows,)

    Examples
    --------
    >>> w = np.random.default_rng(0).normal(size=(8, 64))
    >>> mask, sizes = darb_mask(w, ratio=8)
    >>> round(w.size / mask.sum(), 1)
    8.0
    """
    sizes = darb_block_sizes(weight, ratio, block_sizes, keep, rule)
    return bmwm_mask(weight, sizes, keep), sizes
