"""The helpers of bench/darb_vs_block.py: cycle model, ratios, index bits, iso-accuracy.

The sweep itself runs from bench/ (about 10 minutes); these check its arithmetic on
hand-made layers and points, and that its shortcut (one dense model shared by every
point) prunes exactly as ``run_example`` does.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from darbgen.format import SparseLayer

_PATH = Path(__file__).resolve().parent.parent / "bench" / "darb_vs_block.py"
_spec = importlib.util.spec_from_file_location("darb_vs_block", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def hand_layer(name="hand") -> SparseLayer:
    """4 × 16, block sizes 4, 4, 8, 16 with k = 1: row nnz 4, 4, 2, 1 (11 in all)."""
    offsets = [0, 1, 2, 3,   3, 2, 1, 0,   5, 0,   7]
    return SparseLayer(name=name, rows=4, cols=16, block_sizes=np.array([4, 4, 8, 16]),
                       keep=np.ones(4, dtype=np.int64), offsets=np.array(offsets),
                       values=np.arange(1, 12), scale=np.full(4, 0.1), method="darb")


def test_layer_cycles_parts_by_hand():
    # LPT on 2 lanes: rows 0 and 1 (4 each) to lanes 0 and 1, row 2 (2) to lane 0,
    # row 3 (1) to lane 1: lane beats 6 and 5, 2 rows per lane.
    parts = bench.layer_cycles(hand_layer(), lanes=2, input_width=8)
    assert parts == {"lane_beats_max": 6, "issue": 7, "x_load": 2,
                     "drain": 2 + bench.DRAIN_OVERHEAD, "cycles": 7}


def test_layer_cycles_x_bound_with_default_input_width():
    # 2 lanes -> 2 elements per input beat: 16 columns take 8 beats > 7 issue cycles
    parts = bench.layer_cycles(hand_layer(), lanes=2)
    assert parts["x_load"] == 8 and parts["cycles"] == 8


def test_layer_cycles_drain_bound():
    # one lane runs all 4 rows: 11 beats, but a 1-row-per-beat drain of 4 slots + overhead
    parts = bench.layer_cycles(hand_layer(), lanes=1, input_width=16)
    assert parts["issue"] == 12 and parts["drain"] == 4 + bench.DRAIN_OVERHEAD
    assert parts["cycles"] == max(12, 1, 4 + bench.DRAIN_OVERHEAD)


def test_cycles_per_inference_sums_layers():
    layers = [hand_layer("a"), hand_layer("b")]
    assert bench.cycles_per_inference(layers, lanes=2, input_width=8) == 14
    assert bench.cycles_per_inference(layers, lanes=2) == 16


def test_achieved_ratio_and_index_bits():
    a = hand_layer("a")
    assert bench.achieved_ratio([a]) == pytest.approx(64 / 11)
    # offsets 4·2 + 4·2 + 2·3 + 1·4 = 26 bits; a 2-bit size code per row (sizes 4..16)
    assert a.index_bits_per_nnz == pytest.approx((26 + 4 * 2) / 11)
    dense = SparseLayer(name="dense", rows=2, cols=4, block_sizes=np.ones(2, dtype=np.int64),
                        keep=np.ones(2, dtype=np.int64), offsets=np.zeros(8, dtype=np.int64),
                        values=np.ones(8, dtype=np.int64), scale=np.ones(2))
    assert dense.index_bits_per_nnz == 0
    # weighted by nnz: (34 + 0) bits over 11 + 8 entries, not the mean of 34/11 and 0
    assert bench.index_bits_per_nnz([a, dense]) == pytest.approx(34 / 19)
    assert bench.achieved_ratio([a, dense]) == pytest.approx((64 + 8) / 19)


def test_bsr_index_bits():
    # 8 × 8 with 4 × 4 blocks (0, 0) and (1, 1) kept: 2 blocks × 1 column bit plus a
    # 2-bit count (0..2) per block row, over 32 entries
    mask = np.zeros((8, 8), dtype=bool)
    mask[:4, :4] = mask[4:, 4:] = True
    b, k = bench_layout(mask)
    layer = SparseLayer.from_float("blk", np.ones((8, 8)), mask, b, k, method="block")
    assert bench.bsr_index_bits_per_nnz(layer, (4, 4)) == pytest.approx((2 * 1 + 2 * 2) / 32)


def bench_layout(mask):
    from darbgen.format import single_block_layout
    return single_block_layout(mask)


def point(method, ratio, loss):
    return {"method": method, "ratio": ratio, "loss": loss}


def test_iso_accuracy_picks_the_highest_passing_ratio():
    pts = [point("darb", 4, 0.0), point("darb", 8, 0.005), point("darb", 16, 0.02),
           point("darb", 32, 0.1), point("block", 2, 0.0), point("block", 4, 0.011)]
    iso = bench.iso_accuracy(pts)
    assert iso["darb"]["ratio"] == 8 and iso["darb"]["next_failing"] == 16
    assert iso["darb"]["monotone"]
    assert iso["block"]["ratio"] == 2 and iso["block"]["next_failing"] == 4
    fig = bench.iso_figure(iso)
    assert fig == {"ratio": 4.0, "low": 2.0, "high": 8.0}


def test_iso_accuracy_exactly_one_point_passes():
    # 0.975 - 0.965 is 0.010000000000000009 in floating point: still "within 1 point"
    iso = bench.iso_accuracy([point("block", 3, 0.975 - 0.965), point("block", 4, 0.0112)])
    assert iso["block"]["ratio"] == 3
    # one image of 360 more is not
    iso = bench.iso_accuracy([point("block", 3, 4 / 360)])
    assert iso["block"]["ratio"] is None and iso["block"]["next_failing"] == 3


def test_iso_accuracy_not_monotone_and_none_passing():
    pts = [point("darb", 2, 0.02), point("darb", 4, 0.0), point("block", 2, 0.05)]
    iso = bench.iso_accuracy(pts)
    assert iso["darb"]["ratio"] == 4 and not iso["darb"]["monotone"]
    assert iso["darb"]["next_failing"] is None
    assert iso["block"]["point"] is None
    assert bench.iso_figure(iso) == {"ratio": None, "low": None, "high": None}
    # unbounded above: no failing DARB point beyond the best
    iso = bench.iso_accuracy([point("darb", 4, 0.0), point("block", 2, 0.0),
                              point("block", 3, 0.03)])
    assert bench.iso_figure(iso) == {"ratio": 2.0, "low": 4 / 3, "high": None}


def test_prune_point_matches_run_example():
    """The bench trains dense once and prunes copies; that must equal run_example."""
    import torch

    from darbgen.pruning.examples import run_example

    torch.set_num_threads(1)
    sched = {"epochs": 2, "finetune_epochs": 1, "steps": 2}
    ref = run_example("digits-mlp", bench.make("block", 3), seed=5, progress=False, **sched)
    state, acc_dense, data = bench.train_dense(5, sched["epochs"])
    got = bench.prune_point(bench.make("block", 3), state, data, seed=5,
                            finetune_epochs=sched["finetune_epochs"], steps=sched["steps"])
    assert acc_dense == ref.accuracy_dense
    assert got["accuracy_int8"] == ref.accuracy_quantized
    assert got["accuracy_pruned_float"] == ref.accuracy_pruned
    assert [l.nnz for l in got["layers"]] == [l.nnz for l in ref.artifact.layers]
    for a, b in zip(got["layers"], ref.artifact.layers):
        assert np.array_equal(a.values, b.values) and np.array_equal(a.offsets, b.offsets)
