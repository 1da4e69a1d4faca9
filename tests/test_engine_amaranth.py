"""The engine in Amaranth's simulator: exact against the golden model, small configs."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from darbgen.config import ConfigError, EngineConfig
from darbgen.format import SparseLayer, single_block_layout
from darbgen.hdl import IndexDecoder
from darbgen.packing import load_words, pack_fields, unpack_fields
from darbgen.sim.amaranth_tb import run_engine
from darbgen.sim.golden import spmv_ref

from conftest import random_layer


def test_index_decoder_matches_the_contract(rng):
    layer = random_layer(rng, 6, 45, [2, 4, 16, 64], keep=2)
    config = EngineConfig.for_layers([layer], lanes=1)
    dut = IndexDecoder(config)
    code = {s: i for i, s in enumerate(config.shifts)}
    got = []

    async def tb(ctx):
        for i in range(layer.nnz):
            r = layer.entry_rows[i]
            ctx.set(dut.valid, 1)
            ctx.set(dut.first, bool(i == layer.row_starts[r]))
            ctx.set(dut.shift, code[int(layer.log2_block_sizes[r])])
            ctx.set(dut.keep, int(layer.keep[r]))
            ctx.set(dut.offset, int(layer.offsets[i]))
            await ctx.delay(1e-9)
            got.append(ctx.get(dut.col))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got == layer.columns.tolist()


@pytest.mark.parametrize("rows, cols, sizes, keep, lanes", [
    (13, 37, [2, 4, 16], 1, 4),        # cols not a multiple of any block
    (1, 50, [8], 1, 4),                # a single row, more lanes than rows
    (9, 64, [64], 1, 2),               # b = cols: one weight per row
    (7, 20, [2], 1, 3),                # b = 2
    (8, 30, [4, 8], 2, 4),             # k = 2
    (5, 16, [32, 64], 1, 8),           # blocks wider than the row
])
def test_engine_exact(rng, rows, cols, sizes, keep, lanes):
    layer = random_layer(rng, rows, cols, sizes, keep=keep)
    x = rng.integers(-128, 128, size=(4, cols))
    run = run_engine(layer, x, lanes=lanes, idle=0.3, backpressure=0.3, seed=1)
    assert np.array_equal(run.y, spmv_ref(layer, x))


def test_engine_extremes(rng):
    layer = random_layer(rng, 6, 33, [2, 8])
    layer = SparseLayer.encode("ext", np.full((6, 33), -128), layer.mask(), layer.block_sizes,
                               layer.keep, 1.0)
    x = np.full((2, 33), -128)
    run = run_engine(layer, x, lanes=2)
    assert np.array_equal(run.y, spmv_ref(layer, x))
    assert run.y.max() == 17 * 128 * 128


def test_engine_runs_dense_and_csr_layouts(rng):
    w = rng.integers(-128, 128, size=(6, 20))
    dense = SparseLayer.encode("dense", w, np.ones_like(w, bool), np.ones(6, int),
                               np.ones(6, int), 1.0)
    mask = rng.random((6, 20)) < 0.3
    mask[2] = False                                   # an empty row: output 0
    b, k = single_block_layout(mask)
    csr = SparseLayer.encode("csr", w, mask, b, k, 1.0)
    for layer in (dense, csr):
        x = rng.integers(-128, 128, size=(3, 20))
        run = run_engine(layer, x, lanes=4, backpressure=0.5, seed=2)
        assert np.array_equal(run.y, spmv_ref(layer, x)), layer.name


@pytest.mark.parametrize("field", ["value", "offset"])
def test_corrupted_load_word_is_caught(rng, field):
    """Flip one weight or one offset in the load stream: the results must differ."""
    layer = random_layer(rng, 8, 40, [4, 8])
    config = EngineConfig.for_layers([layer], lanes=2)
    words = load_words(layer, config)
    fields = unpack_fields(config.load_fields, words)
    beats = np.nonzero(fields["header"] == 0)[0]
    i = beats[len(beats) // 2]
    beat = unpack_fields(config.beat_fields, [fields["data"][i]])
    beat = {k: int(v[0]) for k, v in beat.items()}
    if field == "value":
        beat["value"] = beat["value"] + 1 if beat["value"] < 127 else -128
    else:
        beat["offset"] ^= 1                         # still inside a block of 4 or 8
    fields["data"][i] = pack_fields(config.beat_fields, beat, 1)[0]
    bad = pack_fields(config.load_fields, fields, len(words))
    x = rng.integers(-128, 128, size=(3, 40))
    run = run_engine(layer, x, config, load=bad)
    assert not np.array_equal(run.y, spmv_ref(layer, x))


def test_utilization_on_a_balanced_layer(rng):
    layer = random_layer(rng, 32, 128, [4, 8, 16])
    x = rng.integers(-128, 128, size=(12, 128))
    run = run_engine(layer, x, lanes=4)
    assert np.array_equal(run.y, spmv_ref(layer, x))
    utilization = layer.nnz * len(x) / (4 * run.cycles)
    assert utilization > 0.9, utilization


def test_layer_that_does_not_fit_is_refused(rng):
    small = random_layer(rng, 4, 16, [2])
    big = random_layer(rng, 4, 16, [8])
    config = EngineConfig.for_layers([small], lanes=2)
    with pytest.raises(ConfigError, match=r"^layer 'layer' uses block size 8, the engine "
                                          r"supports 2$"):
        load_words(big, config)
    with pytest.raises(ConfigError, match=r"^input_width must be a power of 2, not 3$"):
        EngineConfig.from_json({**config.to_json(), "input_width": 3})


# -- tests that kill mutants the ones above let through (bench/mutation_bench.py) --------

@pytest.mark.parametrize("lanes", [1, 2])
def test_single_beat_rows_between_other_rows(rng, lanes):
    """Rows of one beat (one block, k = 1) between rows of other block sizes: the header
    prefetch must already present the row after a one-beat row."""
    sizes = np.array([2, 16, 4, 16, 8, 32, 2, 16, 16, 4, 32, 2])
    layer = _one_per_block(rng, sizes, 16)
    assert (layer.row_nnz == 1).sum() >= 5
    x = rng.integers(-128, 128, size=(3, 16))
    run = run_engine(layer, x, lanes=lanes)
    assert np.array_equal(run.y, spmv_ref(layer, x))


def _one_per_block(rng, sizes, cols):
    """A layer keeping one random weight per block, block size per row from ``sizes``."""
    mask = np.zeros((len(sizes), cols), bool)
    for r, b in enumerate(sizes):
        for start in range(0, cols, b):
            mask[r, start + rng.integers(min(b, cols - start))] = True
    w = rng.integers(-128, 128, size=mask.shape)
    return SparseLayer.encode("one", w, mask, sizes, np.ones(len(sizes), int), 1.0)


def test_extremes_at_the_exact_accumulator_width(rng):
    """Rows of 16 entries of -128 times inputs of -128 sum to 2^18, which needs every bit
    of the derived accumulator width (16 + log2 16): none of it is slack."""
    layer = _one_per_block(rng, np.full(4, 2), 32)
    layer = SparseLayer.encode("tight", np.full((4, 32), -128), layer.mask(), layer.block_sizes,
                               layer.keep, 1.0)
    config = EngineConfig.for_layers([layer], lanes=2)
    assert config.acc_width == 20 and layer.row_nnz.max() == 16
    run = run_engine(layer, np.full((2, 32), -128), config)
    assert np.array_equal(run.y, spmv_ref(layer, np.full((2, 32), -128)))
    assert run.y.max() == 1 << 18


def test_a_second_load_replaces_the_first(rng):
    """Load one layer, then another (back to back, as the controller restarts a load):
    the engine must hold only the second, whatever the first left in the lanes."""
    first = random_layer(rng, 14, 30, [2, 4], keep=2)
    second = random_layer(rng, 5, 30, [8, 16])
    config = EngineConfig.for_layers([first, second], lanes=4)
    x = rng.integers(-128, 128, size=(3, 30))
    run = run_engine(second, x, config, preload=load_words(first, config))
    assert np.array_equal(run.y, spmv_ref(second, x))


@pytest.mark.parametrize("lanes, gap", [(1, 1), (2, 2), (4, 0)])
def test_vectors_offered_while_loading_wait_for_the_load(rng, lanes, gap):
    """Input vectors offered from the first cycle, while the weights still stream in with
    gaps between words (as from the serial controller): no vector starts before the
    load has settled, so every output is exact."""
    first = random_layer(rng, 9, 20, [2, 4])
    layer = random_layer(rng, 6, 20, [2, 4, 8])
    config = EngineConfig.for_layers([first, layer], lanes=lanes)
    x = rng.integers(-128, 128, size=(2, 20))
    run = run_engine(layer, x, config, preload=load_words(first, config), load_gap=gap,
                     x_during_load=True)
    assert np.array_equal(run.y, spmv_ref(layer, x))
