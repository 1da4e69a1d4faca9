"""The integer golden model: exact, independent of the dense path, and able to fail."""

from dataclasses import replace

import numpy as np
import pytest

from darbgen.format import SparseLayer
from darbgen.sim.golden import check_inputs, spmv_ref

from conftest import random_layer


@pytest.mark.parametrize("rows, cols, sizes, keep", [
    (1, 1, [1], 1), (1, 64, [64], 1), (7, 45, [2, 4, 16, 64], 1), (20, 300, [2, 64], 2),
    (3, 17, [32], 1), (16, 100, [1], 1),
])
def test_golden_equals_dense_matmul(rng, rows, cols, sizes, keep):
    layer = random_layer(rng, rows, cols, sizes, keep=keep)
    x = rng.integers(-128, 128, size=(9, cols))
    expected = x @ layer.to_dense().astype(np.int64).T
    assert np.array_equal(spmv_ref(layer, x), expected)
    assert np.array_equal(spmv_ref(layer, x[0]), expected[0])


def test_golden_extremes_fit_the_accumulator(rng):
    layer = random_layer(rng, 4, 64, [2])
    layer = replace(layer, values=np.full(layer.nnz, -128))
    y = spmv_ref(layer, np.full(64, -128))
    assert y.tolist() == [32 * 128 * 128] * 4
    assert int(y.max()) < 1 << (layer.accumulator_width() - 1)


def test_golden_matches_float_within_quantization_error(rng):
    from darbgen.pruning.masks import darb_mask
    w = rng.normal(size=(30, 80))
    mask, b = darb_mask(w, 4)
    layer = SparseLayer.from_float("f", w, mask, b, np.ones(30, int))
    x = rng.integers(-128, 128, size=(5, 80))
    y_float = x @ (w * mask).T
    y_int = spmv_ref(layer, x) * layer.scale[None, :]
    # each weight is off by at most scale/2
    bound = np.abs(x) @ mask.T * layer.scale[None, :] / 2
    assert (np.abs(y_int - y_float) <= bound + 1e-9).all()


@pytest.mark.parametrize("field", ["values", "offsets"])
def test_mutation_is_caught(rng, field):
    """Corrupting one weight or one offset changes the golden output: a comparison
    against it can fail."""
    layer = random_layer(rng, 10, 64, [4, 8])
    x = rng.integers(-128, 128, size=(8, 64))
    good = spmv_ref(layer, x)
    mutated = np.array(getattr(layer, field))
    i = int(np.nonzero(layer.values)[0][0])            # an entry with a nonzero weight
    row = layer.entry_rows[i]
    if field == "values":
        mutated[i] = mutated[i] + 1 if mutated[i] < 127 else mutated[i] - 1
    else:
        # move the entry to another free offset of its block (stays a valid layer)
        width = layer.block_sizes[row]
        taken = set(layer.offsets[layer.row_starts[row]:layer.row_starts[row + 1]]
                    [layer.entry_blocks[layer.row_starts[row]:layer.row_starts[row + 1]]
                     == layer.entry_blocks[i]].tolist())
        mutated[i] = next(o for o in range(width) if o not in taken)
    bad = replace(layer, **{field: mutated})
    assert not np.array_equal(spmv_ref(bad, x), good)


@pytest.mark.parametrize("x, error, message", [
    (np.zeros(5, np.int8), ValueError, r"^inputs must have shape \(8,\) or \(n, 8\) for layer "
                                       r"'layer', not \(5,\)$"),
    (np.zeros(8), TypeError, r"^inputs must be integers, not float64$"),
    (np.full(8, 128), ValueError, r"^inputs must fit in 8 signed bits \(-128\.\.127\), not 128\.\.128$"),
    (np.zeros((2, 2, 8), int), ValueError, r"^inputs must have shape"),
])
def test_input_errors(rng, x, error, message):
    layer = random_layer(rng, 2, 8, [2])
    with pytest.raises(error, match=message):
        check_inputs(layer, x)


@pytest.mark.parametrize("padding", [0, 1])
def test_conv_through_im2col_equals_torch(rng, padding):
    """A Conv2d layer runs on the engine as a GEMM over im2col patches: exact."""
    import torch
    from darbgen.pruning.masks import bmwm_mask
    from darbgen.sim.golden import conv2d_ref
    w = rng.integers(-128, 128, size=(6, 3, 3, 3))
    mask = bmwm_mask(w.reshape(6, 27).astype(float), 4)
    layer = SparseLayer.encode("conv", w.reshape(6, 27), mask, np.full(6, 4), np.ones(6, int),
                               1.0, shape=(6, 3, 3, 3))
    x = rng.integers(-128, 128, size=(2, 3, 7, 8))
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x).double(), torch.from_numpy(layer.to_dense().reshape(6, 3, 3, 3))
        .double(), padding=padding).numpy()
    assert np.array_equal(conv2d_ref(layer, x, padding), expected.astype(np.int64))
