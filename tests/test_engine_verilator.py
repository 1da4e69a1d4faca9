"""The generated Verilog in Verilator through cocotb: exact equality with the golden model.

One engine (sized generously) is built once and serves every layer here, so the
suite pays for a single Verilator build (cached across runs by the Verilog hash).
"""

import numpy as np
import pytest

from darbgen.config import EngineConfig
from darbgen.format import SparseLayer, single_block_layout
from darbgen.packing import load_words, pack_fields, unpack_fields
from darbgen.pruning.masks import bmwm_mask, darb_mask
from darbgen.sim.golden import spmv_ref
from darbgen.sim.runner import simulate_layer, simulator_available

from conftest import random_layer

SHARED = EngineConfig(lanes=4, shifts=tuple(range(8)), max_keep=32, max_row_nnz=128,
                      max_cols=128, lane_depth=2048, lane_rows=128, input_width=4)

pytestmark = pytest.mark.skipif(not simulator_available("verilator"),
                                reason="verilator is not installed")


def from_mask(rng, w, mask, block_sizes, keep=1, name="layer"):
    q = rng.integers(-128, 128, size=w.shape)
    return SparseLayer.encode(name, q, mask, block_sizes, np.full(w.shape[0], keep), 1.0)


def check(layer, rng, n=6, **kw):
    x = rng.integers(-128, 128, size=(n, layer.cols))
    run = simulate_layer(layer, x, SHARED, **kw)
    assert np.array_equal(run.y, spmv_ref(layer, x))
    return run


@pytest.mark.parametrize("seed", range(4))
def test_random_darb_layers(seed):
    rng = np.random.default_rng(seed)
    rows, cols = int(rng.integers(1, 40)), int(rng.integers(2, 129))
    w = rng.normal(size=(rows, cols)) * rng.uniform(0.2, 3, size=(rows, 1))
    mask, sizes = darb_mask(w, float(rng.uniform(2, 16)))
    check(from_mask(rng, w, mask, sizes), rng, idle=0.2, backpressure=0.4, seed=seed)


@pytest.mark.parametrize("rows, cols, b, keep", [
    (5, 37, 2, 1),        # b = 2, cols not a multiple of b
    (6, 100, 64, 1),      # b = 64, partial second block
    (1, 64, 64, 1),       # a single row, b = cols
    (9, 50, 16, 4),       # k = 4
])
def test_bmwm_layers(rng, rows, cols, b, keep):
    w = rng.normal(size=(rows, cols))
    mask = bmwm_mask(w, b, keep)
    check(from_mask(rng, w, mask, np.full(rows, b), keep), rng, backpressure=0.5)


def test_extremes(rng):
    w = rng.normal(size=(8, 128))
    mask, sizes = darb_mask(w, 2)
    layer = SparseLayer.encode("ext", np.full(w.shape, -128), mask, sizes, np.ones(8, int), 1.0)
    x = np.full((3, 128), -128)
    run = simulate_layer(layer, x, SHARED)
    assert np.array_equal(run.y, spmv_ref(layer, x))
    assert run.y.max() == layer.row_nnz.max() * 128 * 128


def test_dense_and_csr_layouts(rng):
    w = rng.integers(-128, 128, size=(7, 30))
    dense = SparseLayer.encode("dense", w, np.ones_like(w, bool), np.ones(7, int),
                               np.ones(7, int), 1.0)
    check(dense, rng)
    mask = rng.random((7, 30)) < 0.25
    b, k = single_block_layout(mask)
    check(SparseLayer.encode("csr", w, mask, b, k, 1.0), rng)


@pytest.mark.parametrize("field", ["value", "offset"])
def test_mutation_is_caught(rng, field):
    """One corrupted weight or offset in the load stream makes the comparison fail."""
    layer = random_layer(rng, 12, 64, [4, 8, 16])
    words = load_words(layer, SHARED)
    fields = unpack_fields(SHARED.load_fields, words)
    i = np.nonzero(fields["header"] == 0)[0][5]
    beat = {k: int(v[0]) for k, v in unpack_fields(SHARED.beat_fields, [fields["data"][i]]).items()}
    if field == "value":
        beat["value"] = beat["value"] + 1 if beat["value"] < 127 else -128
    else:
        beat["offset"] ^= 1
    fields["data"][i] = pack_fields(SHARED.beat_fields, beat, 1)[0]
    x = rng.integers(-128, 128, size=(4, 64))
    run = simulate_layer(layer, x, SHARED, load=pack_fields(SHARED.load_fields, fields,
                                                            len(words)))
    assert not np.array_equal(run.y, spmv_ref(layer, x))


def test_darb_utilization_at_8_lanes(rng):
    """P = 8 on a DARB layer shaped like digits fc2 (100 × 300, 16×): ≥ 0.95."""
    w = rng.normal(size=(100, 300)) * rng.uniform(0.3, 3, size=(100, 1))
    mask, sizes = darb_mask(w, 16)
    layer = from_mask(rng, w, mask, sizes)
    x = rng.integers(-128, 128, size=(32, 300))
    run = simulate_layer(layer, x, lanes=8)
    assert np.array_equal(run.y, spmv_ref(layer, x))
    utilization = layer.nnz * len(x) / (8 * run.cycles)
    assert utilization >= 0.95, utilization


@pytest.mark.skipif(not simulator_available("icarus"), reason="icarus (iverilog) is not installed")
def test_icarus_agrees(rng):
    layer = random_layer(rng, 6, 20, [2, 4])
    config = EngineConfig.for_layers([layer], lanes=2)
    x = rng.integers(-128, 128, size=(2, 20))
    run = simulate_layer(layer, x, config, simulator="icarus", backpressure=0.3)
    assert np.array_equal(run.y, spmv_ref(layer, x))


@pytest.mark.parametrize("rows, lanes", [(3, 8)])      # lanes of one row and of none
def test_one_row_per_lane(rows, lanes):
    """A layer sized to at most one row per lane once made Amaranth emit a 1-word memory
    with a `wire [-1:0]` address, which Verilator refused (issue 16)."""
    rng = np.random.default_rng(rows * 100 + lanes)
    layer = random_layer(rng, rows, 16, [2, 4])
    x = rng.integers(-128, 128, size=(2, 16))
    run = simulate_layer(layer, x, lanes=lanes)
    assert np.array_equal(run.y, spmv_ref(layer, x)), f"seed {rows * 100 + lanes}"
