"""BLK-REW vs group lasso, and Anwar et al.'s granularities, on the digits CNN.

1. BLK-REW (reweighted group regularization) vs plain group lasso at the same 4×4
   block row/column structure, over λ ∈ {1e-5, 1e-4, 1e-3} and ratios 4, 8, 16: the
   full grid is reported (no selection on the test split).
2. Anwar et al.: feature-map, kernel and strided sparsity of both convolutions,
   chosen by the particle filter, by magnitude and at random, layer by layer with
   retraining.
3. Fixed-point word length: the particle-filter kernel-pruned model with weights
   quantized to 8, 6, 5 and 4 bits (per-row scale), without retraining.
4. The pruned layers export as artifacts; conv2 of each family runs on the generated
   engine in Verilator, exactly equal to the golden model.

Writes ``docs/structured-bench.json``, ``docs/blkrew.png`` and ``docs/structured.png``.
Run: ``.venv/bin/python bench/structured_bench.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from darbgen.format import SparseLayer
from darbgen.pruning.blkrew import blkrew_prune
from darbgen.pruning.examples import digits_cnn, digits_data
from darbgen.pruning.methods import prunable_layers
from darbgen.pruning.sources import masked_artifact, model_layers
from darbgen.pruning.structured import structured_prune
from darbgen.pruning.train import accuracy, train
from darbgen.sim.golden import spmv_ref
from darbgen.sim.runner import simulate_layer

SEED = 0
DOCS = Path(__file__).resolve().parent.parent / "docs"


def export(model, method):
    """The model's layers as stored (CSR layout; no compaction, for engine figures)."""
    masks = [layer.mask() for layer in prunable_layers(model)]
    return masked_artifact(model_layers(model), masks, method, {}).layers


def on_engine(layer, rng) -> dict:
    x = rng.integers(-128, 128, size=(8, layer.cols))
    run = simulate_layer(layer, x, lanes=8)
    return {"exact": bool(np.array_equal(run.y, spmv_ref(layer, x))), "cycles": run.cycles,
            "pruning_ratio": layer.pruning_ratio}


def main() -> int:
    torch.set_num_threads(2)
    start = time.monotonic()
    rng = np.random.default_rng(SEED)
    data = digits_data(SEED)
    dense = digits_cnn(seed=SEED)
    acc_dense = train(dense, data, epochs=30, seed=SEED, progress=False)
    print(f"digits-cnn dense accuracy {acc_dense:.4f}", flush=True)
    out = {"seed": SEED, "accuracy_dense": acc_dense, "blkrew": [], "structured": [],
           "word_length": [], "engine": {}}

    print("\nBLK-REW vs group lasso (4x4 blocks, all layers): accuracy after retraining")
    print(f"{'kind':12} {'lambda':>7} {'ratio':>6} {'reached':>8} {'acc reg':>8} "
          f"{'acc pruned':>10} {'acc':>7}")
    for kind in ("reweighted", "group_lasso"):
        for lam in (1e-5, 1e-4, 1e-3):
            for ratio in (4, 8, 16):
                m = digits_cnn(seed=SEED)
                r = blkrew_prune(m, data, ratio=ratio, kind=kind, lam=lam, epochs=30,
                                 retrain_epochs=20, seed=SEED)
                r["ratio"] = ratio
                out["blkrew"].append(r)
                print(f"{kind:12} {lam:7.0e} {ratio:6} {r['pruning_ratio']:8.2f} "
                      f"{r['accuracy_regularized']:8.4f} {r['accuracy_pruned']:10.4f} "
                      f"{r['accuracy']:7.4f}", flush=True)
                if (kind, lam, ratio) in (("reweighted", 1e-5, 8), ("group_lasso", 1e-5, 8)):
                    conv2 = next(s for s in export(m, "blkrew") if s.name == "conv2")
                    out["engine"][f"{kind} conv2"] = on_engine(conv2, rng)

    print("\nAnwar et al. (both convolutions, layer by layer, 5 retraining epochs each)")
    print(f"{'granularity':12} {'setting':>8} {'selector':10} {'conv pruned':>11} "
          f"{'acc after prune':>15} {'acc':>7}")
    settings = [("feature_map", 0.5, 2), ("feature_map", 0.25, 2), ("kernel", 0.5, 2),
                ("kernel", 0.25, 2), ("strided", 1.0, 2), ("strided", 1.0, 3)]
    best_kernel = None
    for gran, keep, stride in settings:
        for selector in ("particle", "magnitude", "random"):
            m = copy.deepcopy(dense)
            r = structured_prune(m, data, gran, selector, keep_fraction=keep, stride=stride,
                                 retrain_epochs=5, seed=SEED)
            setting = f"s={stride}" if gran == "strided" else f"keep={keep}"
            r["setting"] = setting
            out["structured"].append(r)
            print(f"{gran:12} {setting:>8} {selector:10} {r['conv_pruned']:11.3f} "
                  f"{r['layers'][-1]['accuracy_pruned']:15.4f} {r['accuracy']:7.4f}", flush=True)
            if (gran, keep, selector) == ("kernel", 0.25, "particle"):
                best_kernel = m
            if selector == "particle" and setting in ("keep=0.5", "s=2"):
                conv2 = next(s for s in export(m, f"structured-{gran}") if s.name == "conv2")
                out["engine"][f"{gran} conv2"] = on_engine(conv2, rng)

    print("\nFixed-point word length (kernel keep=0.25, particle filter), no retraining")
    for bits in (8, 6, 5, 4):
        m = copy.deepcopy(best_kernel)
        for layer, sparse in zip(prunable_layers(m), export(best_kernel, "structured")):
            q = SparseLayer.from_float(sparse.name, layer.weight(), sparse.mask(),
                                       sparse.block_sizes, sparse.keep, weight_bits=bits)
            with torch.no_grad():
                orig = getattr(layer.module, "weight_orig", layer.module.weight)
                orig.copy_(torch.from_numpy(q.dequantized()).reshape(orig.shape))
        acc = accuracy(m, data.x_test, data.y_test)
        out["word_length"].append({"bits": bits, "accuracy": acc})
        print(f"  {bits} bits: {acc:.4f}", flush=True)

    print("\non the engine (conv2, P = 8, Verilator):", json.dumps(out["engine"]))
    if not all(v["exact"] for v in out["engine"].values()):
        return 1
    out["seconds"] = time.monotonic() - start
    DOCS.mkdir(exist_ok=True)
    (DOCS / "structured-bench.json").write_text(json.dumps(out, indent=1))
    plot(out)
    print(f"\n{out['seconds']:.0f} s; wrote docs/structured-bench.json, docs/blkrew.png, "
          "docs/structured.png")
    return 0


def plot(out) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, style in (("reweighted", "-"), ("group_lasso", "--")):
        for lam in (1e-5, 1e-4, 1e-3):
            rows = [r for r in out["blkrew"] if r["kind"] == kind and r["lambda"] == lam]
            ax.plot([r["pruning_ratio"] for r in rows], [100 * r["accuracy"] for r in rows],
                    style, marker="o", label=f"{kind} λ={lam:g}")
    ax.axhline(100 * out["accuracy_dense"], color="gray", lw=0.8, label="dense")
    ax.set(xscale="log", xlabel="pruning ratio", ylabel="test accuracy (%)",
           title="BLK-REW vs group lasso, 4×4 block rows/columns, digits CNN")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(DOCS / "blkrew.png", dpi=110)

    fig, ax = plt.subplots(figsize=(7, 4))
    markers = {"particle": "o", "magnitude": "s", "random": "^"}
    colors = {"feature_map": "C0", "kernel": "C1", "strided": "C2"}
    for r in out["structured"]:
        ax.scatter(100 * r["conv_pruned"], 100 * r["accuracy"], marker=markers[r["selector"]],
                   color=colors[r["granularity"]], s=50)
    for g, c in colors.items():
        ax.scatter([], [], color=c, label=g)
    for s, mk in markers.items():
        ax.scatter([], [], color="k", marker=mk, label=s)
    ax.axhline(100 * out["accuracy_dense"], color="gray", lw=0.8)
    ax.set(xlabel="conv weights pruned (%)", ylabel="test accuracy (%) after retraining",
           title="Anwar et al. granularities on the digits CNN")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS / "structured.png", dpi=110)


if __name__ == "__main__":
    sys.exit(main())
