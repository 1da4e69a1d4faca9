"""SAP on an MLP example: PQ Index over the pruning iterations, against LT(0.2) and OS(0.2).

Runs the SAP driver (neuron scope, rewinding to the same initial weights) for SAP(0.5,1)
with η_r = 0 and 0.1, SAP(1,2), LT(0.2) and OS(0.2): on the digits MLP 64-128-256-10
(default) 20 iterations of 10 epochs; on ``--example fashion-lenet300`` (LeNet-300-100 on
Fashion-MNIST) SAP(0.5,1), SAP(1,2) and LT(0.2), 20 iterations of 1 epoch (an epoch is
60000 images). Then it turns the final neuron budgets of the first SAP(0.5,1) run into
DARB block sizes (SAP-driven DARB), fine-tunes, exports and runs the first layer on the
engine in Verilator (exact against the golden model). Writes ``docs/sap-bench.json`` and
``docs/sap.png`` (another example: ``-EXAMPLE`` before the suffix; a seed other than 0:
``-seedN``, so seed 0's files keep their names).

Run: ``.venv/bin/python bench/sap_bench.py [--example fashion-lenet300] [--seed N]``
(digits: about 5 minutes on 2 cores; fashion-lenet300: about 23).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from darbgen.format import SparseLayer
from darbgen.pruning.examples import digits_mlp, example_data, fashion_lenet300
from darbgen.pruning.methods import prunable_layers
from darbgen.pruning.sap import finetune_sap_darb, iterative_prune, lottery_ticket, one_shot, sap
from darbgen.sim.golden import spmv_ref
from darbgen.sim.runner import simulate_layer

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: Per example: the model (a function of the seed giving its initial weights),
#: iterations, epochs per iteration, batch size and the runs.
SETUPS = {
    "digits-mlp": {"model": lambda seed: digits_mlp(hidden=(128, 256), seed=seed),
                   "title": "digits MLP 64-128-256-10", "iterations": 20, "epochs": 10,
                   "batch_size": 32,
                   "runs": [("SAP(0.5,1)", sap(0.5, 1)), ("SAP(0.5,1) η_r=0.1", sap(0.5, 1, eta_r=0.1)),
                            ("SAP(1,2)", sap(1, 2)), ("LT(0.2)", lottery_ticket(0.2)),
                            ("OS(0.2)", one_shot(0.2))],
                   "darb_from": "SAP(0.5,1) η_r=0.1"},
    "fashion-lenet300": {"model": lambda seed: fashion_lenet300(seed=seed),
                         "title": "LeNet-300-100 on Fashion-MNIST", "iterations": 20,
                         "epochs": 1, "batch_size": 128,
                         "runs": [("SAP(0.5,1)", sap(0.5, 1)), ("SAP(1,2)", sap(1, 2)),
                                  ("LT(0.2)", lottery_ticket(0.2))],
                         "darb_from": "SAP(0.5,1)"},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--example", default="digits-mlp", choices=tuple(SETUPS),
                        help="the MLP example (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the initial weights, data order and pruning (default 0)")
    args = parser.parse_args(argv)
    setup, seed = SETUPS[args.example], args.seed
    suffix = ("" if args.example == "digits-mlp" else f"-{args.example}") + \
        (f"-seed{seed}" if seed else "")
    # one thread on the shared 2-core machine for the large data set (two ran 3x slower)
    torch.set_num_threads(2 if args.example == "digits-mlp" else 1)
    start = time.monotonic()
    torch.manual_seed(seed)
    data = example_data(args.example, seed)
    runs = {}
    for label, criterion in setup["runs"]:
        t = time.monotonic()
        result = iterative_prune(lambda: setup["model"](seed), data, criterion, scope="neuron",
                                 iterations=setup["iterations"], epochs=setup["epochs"],
                                 seed=seed, batch_size=setup["batch_size"])
        runs[label] = result
        print(f"\n{label}, neuron scope ({time.monotonic() - t:.0f} s)")
        print(" it  remaining  acc(retrained)  acc(just pruned)  PQI(0.5,1)  PQI(1,2)   Gini")
        for row in result.log:
            pruned = "" if row["accuracy_pruned"] is None else f"{row['accuracy_pruned']:.4f}"
            print(f"{row['iteration']:3}  {row['remaining']:9.4f}  {row['accuracy']:14.4f}  "
                  f"{pruned:>16}  {row['pqi_0.5_1']:10.4f}  {row['pqi_1_2']:8.4f}  "
                  f"{row['gini']:.4f}", flush=True)

    # SAP-driven DARB from the budgets of a SAP(0.5,1) run
    source = runs[setup["darb_from"]]
    epochs = setup["epochs"]
    darb = finetune_sap_darb(source.model, source.masks, data, epochs=epochs, seed=seed)
    acc_before, acc_darb = darb["accuracy_before"], darb["accuracy"]
    layers = list(prunable_layers(source.model))
    sparse = [SparseLayer.from_float(layer.name, layer.weight(), layer.mask(), sizes,
                                     np.ones(len(sizes), int), method="sap-darb")
              for layer, sizes in zip(layers, darb["row_block_sizes"])]
    kept = sum(s.nnz for s in sparse)
    total = sum(s.rows * s.cols for s in sparse)
    x = np.random.default_rng(seed).integers(-128, 128, size=(16, sparse[0].cols))
    run = simulate_layer(sparse[0], x, lanes=8)
    exact = bool(np.array_equal(run.y, spmv_ref(sparse[0], x)))
    sap_darb = {"source": f"{setup['darb_from']}, final masks", "pruning_ratio": total / kept,
                "sap_pruning_ratio": 1 / source.log[-1]["remaining"],
                "sap_accuracy": source.log[-1]["accuracy"],
                "accuracy_before_finetune": acc_before, "accuracy": acc_darb,
                "block_sizes": {s.name: dict(zip(*map(lambda a: a.tolist(),
                                                      np.unique(s.block_sizes,
                                                                return_counts=True))))
                                for s in sparse},
                "engine_fc1": {"exact": exact, "cycles": run.cycles,
                               "utilization": sparse[0].nnz * 16 / (8 * run.cycles)}}
    print(f"\nSAP-driven DARB: {sap_darb['pruning_ratio']:.1f}x (SAP alone "
          f"{sap_darb['sap_pruning_ratio']:.1f}x at {sap_darb['sap_accuracy']:.4f}); accuracy "
          f"{acc_before:.4f} after the DARB mask, {acc_darb:.4f} after {epochs} epochs; fc1 on "
          f"the engine: exact={exact}, utilization {sap_darb['engine_fc1']['utilization']:.3f}")
    if not exact:
        return 1

    DOCS.mkdir(exist_ok=True)
    (DOCS / f"sap-bench{suffix}.json").write_text(json.dumps({
        "example": args.example, "seed": seed, "iterations": setup["iterations"],
        "epochs": epochs, "batch_size": setup["batch_size"], "scope": "neuron",
        "model": setup["title"], "seconds": time.monotonic() - start,
        "runs": {k: v.log for k, v in runs.items()}, "sap_darb": sap_darb}, indent=1))
    plot(runs, setup["title"], suffix)
    print(f"\n{time.monotonic() - start:.0f} s; wrote docs/sap-bench{suffix}.json and "
          f"docs/sap{suffix}.png")
    return 0


def plot(runs, title: str, suffix: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, result in runs.items():
        it = [r["iteration"] for r in result.log]
        rem = [100 * r["remaining"] for r in result.log]
        axes[0].plot(it, [r["pqi_0.5_1"] for r in result.log], marker=".", label=label)
        axes[1].plot(it, rem, marker=".", label=label)
        axes[2].plot(rem, [100 * r["accuracy"] for r in result.log], marker=".", label=label)
    axes[0].set(title="PQ Index (p=0.5, q=1) of the retrained weights", xlabel="iteration")
    axes[1].set(title="weights remaining (%)", xlabel="iteration", yscale="log")
    axes[2].set(title="test accuracy (%) vs weights remaining (%)", xlabel="remaining (%)",
                xscale="log")
    axes[2].invert_xaxis()
    axes[0].legend()
    fig.suptitle(f"SAP vs {', '.join(l for l in runs if not l.startswith('SAP'))}, neuron "
                 f"scope, {title}")
    fig.tight_layout()
    fig.savefig(DOCS / f"sap{suffix}.png", dpi=110)


if __name__ == "__main__":
    sys.exit(main())
