"""BLK-REW vs group lasso, and Anwar et al.'s granularities, on a CNN example.

1. BLK-REW (reweighted group regularization) vs plain group lasso at the same 4×4
   block row/column structure, over the example's λ and ratio grid, with Adam and (on
   Fashion-MNIST) SGD in the regularized phase: the full grid is reported (no selection
   on the test split).
2. Anwar et al.: feature-map, kernel and strided sparsity of both convolutions,
   chosen by the particle filter, by magnitude and (digits) at random, layer by layer
   with retraining.
3. Fixed-point word length: the particle-filter kernel-pruned model with weights
   quantized to 8, 6, 5 and 4 bits (per-row scale), without retraining.
4. The pruned layers export as artifacts; conv2 of each family runs on the generated
   engine in Verilator, exactly equal to the golden model.

``--example digits-cnn`` (default) writes ``docs/structured-bench.json``,
``docs/blkrew.png`` and ``docs/structured.png``; another example writes the same names
with ``-EXAMPLE`` before the suffix, and a seed other than 0 adds ``-seedN`` (so seed 0's
files keep their names). ``--arms`` restricts BLK-REW to chosen (penalty, optimizer, λ)
arms, e.g. each arm's best λ of another seed. Run: ``.venv/bin/python
bench/structured_bench.py [--example fashion-lenet5] [--seed N]`` (digits: a few minutes on
2 cores; fashion-lenet5: about 35 minutes).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from darbgen.format import SparseLayer
from darbgen.pruning.blkrew import blkrew_prune
from darbgen.pruning.examples import EXAMPLES, example_data
from darbgen.pruning.methods import prunable_layers
from darbgen.pruning.sources import masked_artifact, model_layers
from darbgen.pruning.structured import structured_prune
from darbgen.pruning.train import accuracy, train
from darbgen.sim.golden import spmv_ref
from darbgen.sim.runner import simulate_layer

DOCS = Path(__file__).resolve().parent.parent / "docs"
_ANWAR_DIGITS = [("feature_map", 0.5, 2), ("feature_map", 0.25, 2), ("kernel", 0.5, 2),
                 ("kernel", 0.25, 2), ("strided", 1.0, 2), ("strided", 1.0, 3)]
#: Per example: the dense schedule, the BLK-REW grid (regularized epochs, retraining
#: epochs, optimizers with their learning rates) and Anwar's settings
#: ``(granularity, keep fraction, stride)``. Fashion-MNIST's 60000 images make an epoch of
#: fashion-lenet5 ~10 s on one core, so its grid is smaller and its epochs fewer; its
#: Anwar settings sit near the 70 % the paper reports.
SETUPS = {
    "digits-cnn": {"epochs": 30, "batch_size": 32, "lambdas": (1e-5, 1e-4, 1e-3),
                   "ratios": (4, 8, 16), "reg_epochs": 30, "retrain_epochs": 20,
                   "optimizers": {"adam": 1e-3}, "anwar": _ANWAR_DIGITS,
                   "selectors": ("particle", "magnitude", "random"), "anwar_retrain": 5,
                   "word_length_from": ("kernel", 0.25)},
    "fashion-lenet5": {"epochs": 6, "batch_size": 256, "lambdas": (1e-4, 1e-3),
                       "ratios": (8,), "reg_epochs": 3, "retrain_epochs": 1,
                       "optimizers": {"adam": 1e-3, "sgd": 0.02},
                       "anwar": [("feature_map", 0.3, 2), ("kernel", 0.3, 2),
                                 ("strided", 1.0, 3)],
                       "selectors": ("particle", "magnitude"), "anwar_retrain": 1,
                       "word_length_from": ("kernel", 0.3)},
}


def export(model, method):
    """The model's layers as stored (CSR layout; no compaction, for engine figures)."""
    masks = [layer.mask() for layer in prunable_layers(model)]
    return masked_artifact(model_layers(model), masks, method, {}).layers


def on_engine(layer, rng) -> dict:
    x = rng.integers(-128, 128, size=(8, layer.cols))
    run = simulate_layer(layer, x, lanes=8)
    return {"exact": bool(np.array_equal(run.y, spmv_ref(layer, x))), "cycles": run.cycles,
            "pruning_ratio": layer.pruning_ratio}


def _arms(text: str) -> list[tuple[str, str, float]]:
    """``kind:optimizer:lambda,...`` as a list of BLK-REW arms, checked."""
    arms = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 3 or parts[0] not in ("reweighted", "group_lasso") \
                or parts[1] not in ("adam", "sgd"):
            raise ValueError(f"a BLK-REW arm is reweighted|group_lasso:adam|sgd:LAMBDA, not "
                             f"{item!r}")
        try:
            arms.append((parts[0], parts[1], float(parts[2])))
        except ValueError:
            raise ValueError(f"the λ of arm {item!r} is not a number") from None
    return arms


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--example", default="digits-cnn", choices=tuple(SETUPS),
                        help="the CNN example (default %(default)s)")
    parser.add_argument("--lambdas", default=None, metavar="L,L,...",
                        help="BLK-REW's λ grid instead of the example's")
    parser.add_argument("--blkrew-only", action="store_true",
                        help="only the BLK-REW grid (no Anwar, no word length)")
    parser.add_argument("--arms", default=None, metavar="KIND:OPT:L,...",
                        help="only these BLK-REW arms (e.g. reweighted:sgd:1e-5) instead of "
                             "the full penalty x optimizer x λ grid")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the model, data order and selectors (default 0)")
    parser.add_argument("--tag", default="", metavar="TAG",
                        help="appended to the output names (-TAG), to keep another run's")
    args = parser.parse_args(argv)
    example, setup = args.example, SETUPS[args.example]
    if args.lambdas:
        setup = {**setup, "lambdas": tuple(float(v) for v in args.lambdas.split(","))}
    seed = args.seed
    if args.arms:
        setup = {**setup, "arms": _arms(args.arms)}
        for kind, opt, lam in setup["arms"]:
            if opt not in setup["optimizers"]:
                raise ValueError(f"{example} runs BLK-REW with "
                                 f"{' or '.join(setup['optimizers'])}, not {opt}")
    arms = setup.get("arms") or [(kind, opt, lam) for kind in ("reweighted", "group_lasso")
                                 for opt in setup["optimizers"] for lam in setup["lambdas"]]
    suffix = ("" if example == "digits-cnn" else f"-{example}") + \
        (f"-{args.tag}" if args.tag else "") + (f"-seed{seed}" if seed else "")
    # one thread on the shared 2-core machine (two ran 3x slower there)
    torch.set_num_threads(1 if example != "digits-cnn" else 2)
    start = time.monotonic()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = example_data(example, seed)
    bs = setup["batch_size"]
    dense = EXAMPLES[example](seed=seed)
    acc_dense = train(dense, data, epochs=setup["epochs"], seed=seed, progress=False,
                      batch_size=bs)
    print(f"{example} dense accuracy {acc_dense:.4f} ({time.monotonic() - start:.0f} s)",
          flush=True)
    out = {"example": example, "seed": seed, "setup": setup, "accuracy_dense": acc_dense,
           "blkrew": [], "structured": [], "word_length": [], "engine": {}}

    print("\nBLK-REW vs group lasso (4x4 blocks, all layers): accuracy after retraining")
    print(f"{'kind':12} {'opt':4} {'lambda':>7} {'ratio':>6} {'reached':>8} {'acc reg':>8} "
          f"{'acc pruned':>10} {'acc':>7}")
    for kind, opt, lam in arms:
        for ratio in setup["ratios"]:
            m = EXAMPLES[example](seed=seed)
            r = blkrew_prune(m, data, ratio=ratio, kind=kind, lam=lam, epochs=setup["reg_epochs"],
                             retrain_epochs=setup["retrain_epochs"], seed=seed, optimizer=opt,
                             lr=setup["optimizers"][opt], batch_size=bs)
            r["ratio"] = ratio
            out["blkrew"].append(r)
            print(f"{kind:12} {opt:4} {lam:7.0e} {ratio:6} {r['pruning_ratio']:8.2f} "
                  f"{r['accuracy_regularized']:8.4f} {r['accuracy_pruned']:10.4f} "
                  f"{r['accuracy']:7.4f}  [{time.monotonic() - start:.0f} s]", flush=True)
            # conv2 of each penalty's first Adam arm at 8x runs on the engine
            if opt == "adam" and ratio == 8 and f"{kind} conv2" not in out["engine"]:
                conv2 = next(s for s in export(m, "blkrew") if s.name == "conv2")
                out["engine"][f"{kind} conv2"] = on_engine(conv2, rng)

    if args.blkrew_only:
        return _write(out, start, suffix)
    print(f"\nAnwar et al. (both convolutions, layer by layer, {setup['anwar_retrain']} "
          "retraining epochs each)")
    print(f"{'granularity':12} {'setting':>8} {'selector':10} {'conv pruned':>11} "
          f"{'acc after prune':>15} {'acc':>7}")
    best_kernel = None
    for gran, keep, stride in setup["anwar"]:
        for selector in setup["selectors"]:
            m = copy.deepcopy(dense)
            r = structured_prune(m, data, gran, selector, keep_fraction=keep, stride=stride,
                                 retrain_epochs=setup["anwar_retrain"], seed=seed,
                                 batch_size=bs)
            setting = f"s={stride}" if gran == "strided" else f"keep={keep}"
            r["setting"] = setting
            out["structured"].append(r)
            print(f"{gran:12} {setting:>8} {selector:10} {r['conv_pruned']:11.3f} "
                  f"{r['layers'][-1]['accuracy_pruned']:15.4f} {r['accuracy']:7.4f}  "
                  f"[{time.monotonic() - start:.0f} s]", flush=True)
            if (gran, keep, selector) == (*setup["word_length_from"], "particle"):
                best_kernel = m
            if selector == "particle" and f"{gran} conv2" not in out["engine"]:
                conv2 = next(s for s in export(m, f"structured-{gran}") if s.name == "conv2")
                out["engine"][f"{gran} conv2"] = on_engine(conv2, rng)

    print(f"\nFixed-point word length (kernel keep={setup['word_length_from'][1]}, particle "
          "filter), no retraining")
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

    return _write(out, start, suffix)


def _write(out, start, suffix) -> int:
    print("\non the engine (conv2, P = 8, Verilator):", json.dumps(out["engine"]))
    if not all(v["exact"] for v in out["engine"].values()):
        return 1
    out["seconds"] = time.monotonic() - start
    DOCS.mkdir(exist_ok=True)
    (DOCS / f"structured-bench{suffix}.json").write_text(json.dumps(out, indent=1))
    plot(out, suffix)
    print(f"\n{out['seconds']:.0f} s; wrote docs/structured-bench{suffix}.json, "
          f"docs/blkrew{suffix}.png, docs/structured{suffix}.png")
    return 0


def plot(out, suffix: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    example = out.get("example", "digits-cnn")
    for kind, style in (("reweighted", "-"), ("group_lasso", "--")):
        for opt in dict.fromkeys(r.get("optimizer", "adam") for r in out["blkrew"]):
            for lam in dict.fromkeys(r["lambda"] for r in out["blkrew"]):
                rows = [r for r in out["blkrew"] if r["kind"] == kind and r["lambda"] == lam
                        and r.get("optimizer", "adam") == opt]
                if not rows:     # --arms runs part of the grid
                    continue
                ax.plot([r["pruning_ratio"] for r in rows], [100 * r["accuracy"] for r in rows],
                        style, marker="o", label=f"{kind} {opt} λ={lam:g}")
    ax.axhline(100 * out["accuracy_dense"], color="gray", lw=0.8, label="dense")
    ax.set(xscale="log", xlabel="pruning ratio", ylabel="test accuracy (%)",
           title=f"BLK-REW vs group lasso, 4×4 block rows/columns, {example}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(DOCS / f"blkrew{suffix}.png", dpi=110)

    if not out["structured"]:
        return
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
           title=f"Anwar et al. granularities on {example}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS / f"structured{suffix}.png", dpi=110)


if __name__ == "__main__":
    sys.exit(main())
