"""bench/iso_accuracy.py: the ratio search, the intervals, the variants' per-layer methods,
and one search on a tiny Fashion-MNIST subset (the full run is in bench/, ~45 minutes)."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from darbgen.pruning.masks import DENSITY_RULES, darb_block_sizes
from darbgen.pruning.methods import BMWM, DARB, NM, Block

_BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(_BENCH))
import iso_accuracy as iso  # noqa: E402  (bench/ is not a package)


def threshold_probe(threshold, calls):
    """A probe whose loss jumps past 1 point above ``threshold``; records the ratios."""
    def probe(ratio):
        calls.append(ratio)
        return {"ratio": ratio, "loss": 0.0 if ratio <= threshold else 0.05}
    return probe


@pytest.mark.parametrize("threshold", [2.5, 7.0, 13.3, 40.0, 100.0])
def test_search_brackets_the_threshold_finer_than_the_claim(threshold):
    calls = []
    grid = iso.geometric_grid()
    out = iso.search(grid, threshold_probe(threshold, calls))
    assert out["best"]["ratio"] <= threshold < out["failing"]["ratio"]
    assert out["bracket"] == pytest.approx(out["failing"]["ratio"] / out["best"]["ratio"])
    assert out["bracket"] < 1.1
    # two ends plus a bisection of the index range
    assert len(calls) == len(set(calls)) <= 2 + math.ceil(math.log2(len(grid) - 1))
    assert [p["ratio"] for p in out["probes"]] == calls


def test_search_all_pass_and_all_fail():
    grid = [2.0, 4.0, 8.0, 16.0]
    out = iso.search(grid, threshold_probe(1000, []))
    assert out["best"]["ratio"] == 16 and out["failing"] is None and out["bracket"] is None
    out = iso.search(grid, threshold_probe(1, []))
    assert out["best"] is None and out["failing"]["ratio"] == 2
    # not monotone (8 would pass): bisection ends at neighbours 2 and 4 all the same
    losses = {2.0: 0.0, 4.0: 0.02, 8.0: 0.0, 16.0: 0.03}
    out = iso.search(grid, lambda r: {"ratio": r, "loss": losses[r]})
    assert (out["best"]["target"], out["failing"]["target"]) == (2.0, 4.0)
    # exactly 1 point passes (accuracy on 10000 images: 100 images)
    assert iso.passes({"loss": 0.0100}) and not iso.passes({"loss": 0.0101})


def test_geometric_grid():
    g = iso.geometric_grid(2, 128, 1.08)
    assert g[0] == 2 and g[-1] <= 128 < g[-1] * 1.08
    assert np.allclose(np.diff(np.log(g)), math.log(1.08), atol=1e-4)


def test_t_interval():
    t = iso.t_interval([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.303; sd 1; sqrt(3)
    assert t["mean"] == 2 and t["half"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert iso.t_interval([5.0])["half"] is None
    assert iso.t_interval([None, None])["mean"] is None
    assert iso.t_interval([2.0, None, 4.0])["n"] == 2


def test_variants_per_layer_methods():
    darb = iso.Variant("d", "darb", option="smaller")
    ms = darb.layer_methods(16.0, 3)
    assert [m.ratio for m in ms] == [16, 16, iso.CLASSIFIER_RATIO]
    assert ms[0].rule is DENSITY_RULES["smaller"]
    assert [m.ratio for m in iso.Variant("u", "block", "uniform", (2, 2)).layer_methods(8, 2)] \
        == [8, 8]
    blk = iso.Variant("b", "block", option=(8, 8)).layer_methods(1.5, 2)
    assert all(isinstance(m, Block) and m.block_shape == (8, 8) for m in blk)
    assert [m.ratio for m in blk] == [1.5, 1.5]        # the classifier never above R
    nm = iso.Variant("n", "nm").layer_methods(16 / 3, 2)
    assert (nm[0].n, nm[0].m, nm[1].n) == (3, iso.NM_M, iso.NM_M // 2)
    assert iso.Variant("n", "nm").candidates()[-1] == iso.NM_M
    bm = iso.Variant("m", "bmwm").method(iso.BMWM_BLOCK / 5)
    assert isinstance(bm, BMWM) and bm.keep == 5
    assert all(isinstance(m, NM) for m in nm) and isinstance(darb.method(4), DARB)
    with pytest.raises(ValueError, match=r"^unknown per-layer policy 'sensitivity'$"):
        iso.Variant("x", "darb", "sensitivity").layer_methods(4, 2)
    labels = [v.label for v in iso.VARIANTS]
    assert len(labels) == len(set(labels))


def test_density_rules_order_and_budget():
    """The smaller-block rule starts every row at or below the nearest rule's size and
    the larger-block rule at or above; the budget correction lands all three within 2%
    of the target ratio (seed 0)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 256)) * rng.uniform(0.2, 3, size=(64, 1))
    counts = (np.abs(w) > 1.5).sum(axis=1)
    sizes = np.array([2, 4, 8, 16, 32, 64])
    near = DENSITY_RULES["nearest"](counts, 256, sizes, 1)
    assert (DENSITY_RULES["smaller"](counts, 256, sizes, 1) <= near).all()
    assert (DENSITY_RULES["larger"](counts, 256, sizes, 1) >= near).all()
    for rule in DENSITY_RULES.values():
        b = darb_block_sizes(w, 8.0, rule=rule)
        assert w.size / (256 // b).sum() == pytest.approx(8.0, rel=0.02), rule


def test_search_on_a_tiny_fashion_subset(request):
    """A real search (DARB, classifier policy) on 1024 training and 300 test images:
    every probe prunes a copy of one dense model, and the engine figures come out."""
    import torch

    from darbgen.pruning.examples import FASHION_DIR, example_data
    from darbgen.pruning.train import Dataset

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"Fashion-MNIST is missing from {FASHION_DIR}: run `make data` as root",
                    pytrace=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(before))
    full = example_data("fashion-lenet300")
    data = Dataset(full.x_train[:1024], full.y_train[:1024], full.x_test[:300],
                   full.y_test[:300])
    from darbgen.pruning.examples import fashion_lenet300
    from darbgen.pruning.train import train

    model = fashion_lenet300(seed=0)
    acc = train(model, data, epochs=2, lr=3e-3, batch_size=64, seed=0, progress=False)
    state = model.state_dict()
    variant = iso.Variant("DARB", "darb")
    layers_seen = []

    def probe(ratio):
        r = iso.dvb.prune_point(variant.layer_methods(ratio, 3), state, data, seed=0,
                                finetune_epochs=1, steps=1, example="fashion-lenet300")
        layers_seen.append(r["layers"])
        return {"ratio": iso.dvb.achieved_ratio(r["layers"]), "loss": acc - r["accuracy_int8"]}

    out = iso.search([2.0, 8.0, 32.0], probe, max_loss=0.05)
    assert len(out["probes"]) == len(layers_seen) <= 3
    # the classifier stays at 2x: fc3 keeps half its weights at every ratio
    assert all(layers[2].nnz == 500 for layers in layers_seen)
    e = iso.engine_figures(layers_seen[0])
    assert e["cycles_per_inference"] == sum(p["cycles"] for p in e["layers"]) > 0
    assert e["weight_memory_bytes"] > sum(l.nnz for l in layers_seen[0])   # >= 1 byte each


def test_iso_processor_reads_best_points_from_the_report_when_the_raw_file_is_gone(
        tmp_path, monkeypatch):
    import json

    import iso_processor

    monkeypatch.setattr(iso, "BUILD", tmp_path / "build")
    monkeypatch.setattr(iso, "DOCS", tmp_path / "docs")
    with pytest.raises(SystemExit, match="neither .*seed0.json nor .*iso-ex.json exists"):
        iso_processor.search_results("ex", 0)
    (tmp_path / "docs").mkdir()
    best = {"target": 8.6314, "ratio": 8.52, "accuracy_int8": 0.881}
    (tmp_path / "docs" / "iso-ex.json").write_text(json.dumps(
        {"seeds": [{"seed": 1, "variants": {"DARB": {"best": best}}}]}))
    assert iso_processor.search_results("ex", 1)["variants"]["DARB"]["best"] == best
    with pytest.raises(SystemExit, match="has no seed 0"):
        iso_processor.search_results("ex", 0)
    raw = tmp_path / "build" / "iso" / "ex"
    raw.mkdir(parents=True)
    (raw / "seed1.json").write_text(json.dumps({"variants": {"DARB": {"best": None}}}))
    assert iso_processor.search_results("ex", 1)["variants"]["DARB"]["best"] is None
