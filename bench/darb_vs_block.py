"""DARB vs uniform block pruning at iso-accuracy on the digits MLP.

The DARB paper claims a 2.8–4.3× higher pruning ratio than structured block pruning
at equal accuracy. This benchmark measures that comparison on darbgen's own
``digits-mlp`` example (64-300-100-10): one dense model per seed, then for each
method and target ratio the same progressive prune + masked fine-tune schedule as
:func:`darbgen.pruning.examples.run_example` (every layer at the same ratio), int8
export, and per point:

* the pruning ratio reached (dense weights over the artifact layers' nnz),
* dense accuracy and pruned int8 accuracy (per-row int8 weights, float activations:
  run_example's ``accuracy_quantized``),
* engine cycles per inference at ``LANES`` lanes (:func:`cycles_per_inference`,
  a model of the engine's steady state, checked against Verilator on the best
  point of each method),
* index bits per nonzero (``SparseLayer.index_bits_per_nnz``, weighted by nnz),
* the index decoder's logic: ``darbgen.hdl.IndexDecoder`` for the ``EngineConfig``
  the artifact needs, through Yosys ``synth_ice40 -dsp`` (``bench/engine_bench.py``'s
  ``synth_stats``).

Then the iso-accuracy comparison: the highest ratio each method reaches with an
accuracy loss of at most ``MAX_LOSS`` against dense, and their ratio DARB / block.

Writes ``docs/darb-vs-block.json`` and ``docs/darb-vs-block.png`` (another ``--example``:
``darb-vs-block-EXAMPLE.*``; ``--quick``: the same
names under ``build/``).
Run: ``.venv/bin/python bench/darb_vs_block.py [--quick] [--seeds 0,1,2]`` (the full
sweep, seeds 0, 1, 2: about 10 minutes on the shared 2-core machine; ``--quick``, seed 0
and a short schedule: about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from darbgen.format import ceil_log2

EXAMPLE = "digits-mlp"
LANES = 8
#: Accuracy loss against dense that still counts as "equal accuracy" (1 point).
MAX_LOSS = 0.01
#: Accuracies are fractions of 360 test images; compare with a margin below one image.
_EPS = 1e-6
DARB_RATIOS = (2, 4, 8, 12, 16, 24, 32, 48)
BLOCK_RATIOS = (2, 3, 4, 6, 8, 12, 16)
BLOCK_SHAPE = (4, 4)
#: The full sweep's schedule: run_example's defaults for digits-mlp (dense epochs,
#: fine-tune epochs per step, progressive steps), identical for both methods.
FULL_SCHEDULE = {"epochs": 60, "finetune_epochs": 30, "steps": 6}
QUICK_SCHEDULE = {"epochs": 20, "finetune_epochs": 4, "steps": 3}
QUICK_DARB_RATIOS = (4, 16)
QUICK_BLOCK_RATIOS = (2, 4)
#: Vectors per Verilator run; two batch sizes give the per-vector slope.
CHECK_BATCHES = (4, 12)
#: Measured drain cost: a vector whose lanes issue fewer beats than it has output
#: slots is paced by the y drain, ``slots + DRAIN_OVERHEAD`` cycles (41.5 measured for
#: 38 slots and 38 beats at P = 8; see docs/darb-vs-block.md).
DRAIN_OVERHEAD = 4
DOCS = Path(__file__).resolve().parent.parent / "docs"
BUILD = Path(__file__).resolve().parent.parent / "build"
STEM = "darb-vs-block"


# -- pure helpers (tests/test_darb_vs_block.py) ------------------------------------------

def achieved_ratio(layers) -> float:
    """Dense weights over kept entries, over all ``layers`` together."""
    return sum(layer.rows * layer.input_width for layer in layers) / sum(l.nnz for l in layers)


def index_bits_per_nnz(layers) -> float:
    """Index storage per kept entry over all ``layers`` (each layer's figure weighted by
    its nnz): total index bits / total nnz."""
    return sum(l.index_bits_per_nnz * l.nnz for l in layers) / sum(l.nnz for l in layers)


def default_input_width(lanes: int) -> int:
    """The input beat width ``EngineConfig.for_layers`` picks for ``lanes``."""
    return 1 << ceil_log2(lanes)


def layer_cycles(layer, lanes: int = LANES, input_width: int | None = None) -> dict:
    """Steady-state cycles per vector of ``layer`` on the engine, and their parts.

    The engine issues one beat per lane per cycle with no bubble between rows; all
    lanes start a vector together and the next vector starts the cycle after the
    busiest lane finished issuing, so the issue time is ``max lane beats + 1``. x and
    y are double-buffered, so loading the next vector (``ceil(cols / input_width)``
    beats) and draining the previous one (``slots`` beats) overlap the issue and only
    set the pace when they take longer. Fill and drain of a batch (about
    ``x beats + slots + 6`` cycles once per batch and layer) are not counted.
    """
    from darbgen.packing import schedule

    input_width = input_width or default_input_width(lanes)
    sched = schedule(layer, lanes)
    beats = int(sched.lane_beats.max())
    x_beats = -(-layer.cols // input_width)
    parts = {"lane_beats_max": beats, "issue": beats + 1, "x_load": x_beats,
             "drain": sched.slots + DRAIN_OVERHEAD}
    parts["cycles"] = max(parts["issue"], parts["x_load"], parts["drain"])
    return parts


def cycles_per_inference(layers, lanes: int = LANES, input_width: int | None = None) -> int:
    """Cycles per inference on one engine that runs the layers one after another over a
    batch: the sum of :func:`layer_cycles` over ``layers``."""
    return sum(layer_cycles(layer, lanes, input_width)["cycles"] for layer in layers)


def bsr_index_bits_per_nnz(layer, block_shape=BLOCK_SHAPE) -> float:
    """Index bits per kept entry if ``layer`` were stored block-sparse (BSR) with
    ``block_shape`` blocks: one block-column index per kept block plus a kept-block count
    per block row. Informational: the artifact has no 2-D block layout and stores a
    block-pruned layer in the CSR layout."""
    bh, bw = block_shape
    nbr, nbc = -(-layer.rows // bh), -(-layer.cols // bw)
    mask = layer.mask()
    padded = np.zeros((nbr * bh, nbc * bw), dtype=bool)
    padded[:layer.rows, :layer.cols] = mask
    kept = padded.reshape(nbr, bh, nbc, bw).any(axis=(1, 3))
    bits = int(kept.sum()) * ceil_log2(nbc) + nbr * ceil_log2(nbc + 1)
    return bits / layer.nnz


def iso_accuracy(points, max_loss: float = MAX_LOSS) -> dict:
    """Per method, the highest reached ratio whose accuracy loss is at most ``max_loss``.

    ``points`` are dicts with ``method``, ``ratio`` (reached), ``loss`` (dense minus
    pruned accuracy). Returns per method ``{"ratio", "point", "next_failing",
    "monotone"}``: the best passing point (None if none passes), the lowest failing ratio
    above it (the true threshold lies between the two; None if none fails above) and
    whether every lower ratio passes too.
    """
    out = {}
    for method in dict.fromkeys(p["method"] for p in points):
        mine = sorted((p for p in points if p["method"] == method), key=lambda p: p["ratio"])
        ok = [p for p in mine if p["loss"] <= max_loss + _EPS]
        best = max(ok, key=lambda p: p["ratio"]) if ok else None
        above = [p["ratio"] for p in mine
                 if p["loss"] > max_loss + _EPS and (best is None or p["ratio"] > best["ratio"])]
        below_fail = best is not None and any(p["loss"] > max_loss + _EPS and
                                              p["ratio"] < best["ratio"] for p in mine)
        out[method] = {"ratio": best["ratio"] if best else None, "point": best,
                       "next_failing": min(above) if above else None,
                       "monotone": not below_fail}
    return out


def per_seed_points(points) -> list:
    """The sweep as seen by each seed alone: per seed, points with that seed's ratio and
    loss (for the spread of the iso-accuracy figure)."""
    n = len(points[0]["accuracy_int8_per_seed"])
    return [[{"method": p["method"], "ratio": p["ratios_per_seed"][i],
              "loss": p["accuracy_dense_per_seed"][i] - p["accuracy_int8_per_seed"][i]}
             for p in points] for i in range(n)]


def iso_figure(iso: dict, a: str = "darb", b: str = "block") -> dict:
    """The iso-accuracy ratio ``a / b`` and the bracket the grid allows.

    ``low`` pairs ``a``'s best passing ratio with ``b``'s first failing one,
    ``high`` ``a``'s first failing with ``b``'s best passing (None when unbounded).
    """
    ra, rb = iso[a]["ratio"], iso[b]["ratio"]
    if ra is None or rb is None:
        return {"ratio": None, "low": None, "high": None}
    fa, fb = iso[a]["next_failing"], iso[b]["next_failing"]
    return {"ratio": ra / rb, "low": ra / fb if fb else None, "high": fa / rb if fa else None}


# -- training ------------------------------------------------------------------------

def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (darbgen's own code uses
    explicit generators; this guards anything that does not)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_dense(seed: int, epochs: int, example: str = EXAMPLE):
    """The dense ``example`` as run_example trains it: ``(state_dict, accuracy, data)``."""
    from darbgen.pruning.examples import EXAMPLES, SCHEDULES, example_data
    from darbgen.pruning.train import train

    seed_all(seed)
    data = example_data(example, seed)
    model = EXAMPLES[example](seed=seed)
    acc = train(model, data, epochs=epochs, seed=seed, desc="dense", progress=False,
                batch_size=SCHEDULES[example]["batch_size"])
    return {k: v.clone() for k, v in model.state_dict().items()}, acc, data


def prune_point(method, dense_state, data, *, seed: int, finetune_epochs: int,
                steps: int, example: str = EXAMPLE) -> dict:
    """Prune a copy of the dense model with ``method`` (one method, or one per layer)
    exactly as run_example does after its dense phase (progressive schedule, fine-tune
    seeds ``seed + 1 + step``, int8 export with per-row scales); the exported layers and
    accuracies."""
    from darbgen.pruning.examples import EXAMPLES, INPUT_SCALES, SCHEDULES, prune_trained

    model = EXAMPLES[example](seed=seed)
    model.load_state_dict(dense_state)
    out = prune_trained(model, data, method, weight_bits=8, seed=seed,
                        finetune_epochs=finetune_epochs, steps=steps,
                        input_scale=INPUT_SCALES.get(example),
                        batch_size=SCHEDULES[example]["batch_size"])
    return {"layers": out["layers"], "accuracy_pruned_float": out["accuracy_pruned"],
            "accuracy_int8": out["accuracy_quantized"], "log": out["log"]}


def make(method: str, ratio: float):
    from darbgen.pruning.methods import make_method

    return (make_method("darb", ratio=ratio) if method == "darb"
            else make_method("block", ratio=ratio, block_shape=BLOCK_SHAPE))


# -- hardware ------------------------------------------------------------------------

_SYNTH_CACHE: dict = {}


def decoder_logic(config) -> dict:
    """Yosys ``synth_ice40 -dsp`` of the IndexDecoder for ``config`` (one lane's)."""
    from amaranth.back import verilog

    from darbgen.hdl import IndexDecoder

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from engine_bench import synth_stats

    text = verilog.convert(IndexDecoder(config), name="decoder", emit_src=False)
    if text not in _SYNTH_CACHE:
        _SYNTH_CACHE[text] = synth_stats(text, "decoder")
    return _SYNTH_CACHE[text]


def verilator_check(layers, seed: int) -> dict:
    """Run each layer on the engine the artifact needs, ``CHECK_BATCHES`` vectors at a
    time; outputs must equal the golden model. The per-vector slope between the two
    batch sizes is the measured steady state, compared with :func:`layer_cycles`."""
    from darbgen.config import EngineConfig
    from darbgen.sim.golden import spmv_ref
    from darbgen.sim.runner import simulate_layer

    rng = np.random.default_rng(seed)
    config = EngineConfig.for_layers(layers, LANES)
    out = {"layers": [], "exact": True}
    for layer in layers:
        cycles = {}
        for n in CHECK_BATCHES:
            x = rng.integers(-128, 128, size=(n, layer.cols))
            run = simulate_layer(layer, x, config)
            out["exact"] &= bool(np.array_equal(run.y, spmv_ref(layer, x)))
            cycles[n] = run.cycles
        n1, n2 = CHECK_BATCHES
        slope = (cycles[n2] - cycles[n1]) / (n2 - n1)
        out["layers"].append({"layer": layer.name, "cycles": {str(k): v for k, v in cycles.items()},
                              "measured_per_vector": slope,
                              "batch_overhead": cycles[n1] - n1 * slope,
                              "model": layer_cycles(layer, LANES, config.input_width)})
    out["measured_per_inference"] = sum(r["measured_per_vector"] for r in out["layers"])
    out["model_per_inference"] = cycles_per_inference(layers, LANES, config.input_width)
    return out


# -- the sweep ------------------------------------------------------------------------

def measure(method: str, ratio: float, seeds, dense, schedule, example: str = EXAMPLE) -> dict:
    """One sweep point: accuracies averaged over ``seeds``, hardware figures from the
    first seed's artifact (the structure differs little between seeds)."""
    from darbgen.config import EngineConfig

    runs = []
    for seed in seeds:
        state, _, data = dense[seed]
        seed_all(seed)
        runs.append(prune_point(make(method, ratio), state, data, seed=seed,
                                finetune_epochs=schedule["finetune_epochs"],
                                steps=schedule["steps"], example=example))
    layers = runs[0]["layers"]
    config = EngineConfig.for_layers(layers, LANES)
    acc_dense = float(np.mean([dense[s][1] for s in seeds]))
    acc = float(np.mean([r["accuracy_int8"] for r in runs]))
    return {
        "method": method, "target": ratio, "ratio": achieved_ratio(layers),
        "ratios_per_seed": [achieved_ratio(r["layers"]) for r in runs],
        "accuracy_dense": acc_dense, "accuracy_int8": acc,
        "accuracy_int8_per_seed": [r["accuracy_int8"] for r in runs],
        "accuracy_dense_per_seed": [dense[s][1] for s in seeds],
        "accuracy_float": float(np.mean([r["accuracy_pruned_float"] for r in runs])),
        "loss": acc_dense - acc,
        "cycles_per_inference": cycles_per_inference(layers, LANES, config.input_width),
        "cycles_per_layer": [layer_cycles(l, LANES, config.input_width) for l in layers],
        "index_bits_per_nnz": index_bits_per_nnz(layers),
        "bsr_index_bits_per_nnz": (sum(bsr_index_bits_per_nnz(l) * l.nnz for l in layers)
                                   / sum(l.nnz for l in layers)) if method == "block" else None,
        "nnz": [l.nnz for l in layers],
        # rows with no kept entry output their bias only (a class of fc3 loses its inputs)
        "empty_rows": [int((l.row_nnz == 0).sum()) for l in layers],
        "decoder": decoder_logic(config),
        "decoder_per_layer_config": [decoder_logic(EngineConfig.for_layers([l], LANES))
                                     for l in layers],
        "config": config.to_json(),
        "block_sizes": {l.name: {int(b): int(n) for b, n in zip(*np.unique(l.block_sizes,
                                                                          return_counts=True))}
                        for l in layers} if method == "darb" else None,
        "_layers": layers,
    }


HEADER = (f"{'method':6} {'target':>6} {'ratio':>7} {'dense':>7} {'int8':>7} {'loss':>6} "
          f"{'cyc/inf':>7} {'idx b/nnz':>9} {'dec LUT':>7} {'dec cells':>9}")


def row(p) -> str:
    return (f"{p['method']:6} {p['target']:6g} {p['ratio']:7.2f} {p['accuracy_dense']:7.4f} "
            f"{p['accuracy_int8']:7.4f} {100 * p['loss']:+6.2f} {p['cycles_per_inference']:7} "
            f"{p['index_bits_per_nnz']:9.2f} {p['decoder']['luts']:7} {p['decoder']['cells']:9}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--example", default=EXAMPLE, metavar="NAME",
                        help="built-in example (default %(default)s; another one trains with "
                             "its own SCHEDULES entry; bench/iso_accuracy.py searches finer)")
    parser.add_argument("--quick", action="store_true",
                        help="two ratios per method, a short schedule (smoke test)")
    parser.add_argument("--seeds", default=None, metavar="S,S,...",
                        help="training seeds; accuracies are averaged (default 0,1,2; "
                             "0 with --quick)")
    parser.add_argument("--no-verilator", action="store_true",
                        help="skip the Verilator check of the cycle model")
    parser.add_argument("-o", "--out-dir", default=None, metavar="DIR",
                        help="where darb-vs-block.json/.png go (default docs/; build/ with "
                             "--quick, so a smoke test never overwrites the measured figures)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    from darbgen.pruning.examples import SCHEDULES

    example = args.example
    if example not in SCHEDULES:
        parser.error(f"unknown example {example!r}; choose one of {', '.join(SCHEDULES)}")
    schedule = QUICK_SCHEDULE if args.quick else FULL_SCHEDULE
    if example != EXAMPLE:
        schedule = {k: SCHEDULES[example][k] for k in FULL_SCHEDULE}
    sweep = {"darb": QUICK_DARB_RATIOS if args.quick else DARB_RATIOS,
             "block": QUICK_BLOCK_RATIOS if args.quick else BLOCK_RATIOS}
    out_dir = Path(args.out_dir) if args.out_dir else (BUILD if args.quick else DOCS)
    stem = STEM if args.example == EXAMPLE else f"{STEM}-{args.example}"

    import torch

    from darbgen import toolenv

    toolenv.setup()
    # One thread: on the shared 2-core machine two threads ran 3x slower per epoch.
    torch.set_num_threads(1)
    start = time.monotonic()
    print(f"{example}: schedule {schedule} for both methods, lanes {LANES}, "
          f"max loss {100 * MAX_LOSS:g} point(s)", flush=True)
    for s in seeds:
        print(f"seed {s}: data split {s}, model init torch.manual_seed({s}), dense shuffles "
              f"{s}, fine-tune step shuffles {s + 1}..{s + schedule['steps']}", flush=True)
    print(f"Verilator input vectors: numpy default_rng({seeds[0]}) on seed {seeds[0]}'s "
          "artifacts", flush=True)
    dense = {}
    for s in seeds:
        dense[s] = train_dense(s, schedule["epochs"], example)
        print(f"seed {s}: dense accuracy {dense[s][1]:.4f} "
              f"({time.monotonic() - start:.0f} s)", flush=True)
    print("\n" + HEADER, flush=True)
    points = []
    for method, ratios in sweep.items():
        for ratio in ratios:
            p = measure(method, ratio, seeds, dense, schedule, example)
            points.append(p)
            print(row(p) + f"   [{time.monotonic() - start:.0f} s]", flush=True)

    iso = iso_accuracy(points)
    fig = iso_figure(iso)
    check = {}
    if not args.no_verilator:
        for method in ("darb", "block"):
            best = iso[method]["point"] or min((p for p in points if p["method"] == method),
                                               key=lambda p: p["ratio"])
            c = verilator_check(best["_layers"], seeds[0])
            c.update(method=method, ratio=best["ratio"])
            check[method] = c
            print(f"Verilator {method} {best['ratio']:.2f}x: exact {c['exact']}, measured "
                  f"{c['measured_per_inference']:.1f} cycles/inference, model "
                  f"{c['model_per_inference']} "
                  f"(per layer measured/model: "
                  + ", ".join(f"{r['layer']} {r['measured_per_vector']:.1f}/"
                              f"{r['model']['cycles']}" for r in c["layers"]) + ")", flush=True)
            if not c["exact"]:
                print(f"MISMATCH: {method} outputs differ from the golden model",
                      file=sys.stderr)
                return 1

    print("\nIso-accuracy (loss <= 1 point vs dense):")
    for method, r in iso.items():
        p = r["point"]
        if p is None:
            print(f"  {method}: no point within {100 * MAX_LOSS:g} point")
            continue
        print(f"  {method:5}: {r['ratio']:.2f}x (int8 {p['accuracy_int8']:.4f}, "
              f"{p['cycles_per_inference']} cycles/inference); next failing: "
              f"{r['next_failing'] and round(r['next_failing'], 2)}"
              f"{'' if r['monotone'] else '; a lower ratio fails (not monotone)'}")
    seed_figs = []
    if len(seeds) > 1:
        print("Per seed (its own dense accuracy and ratios):")
        for s, pts in zip(seeds, per_seed_points(points)):
            iso_s = iso_accuracy(pts)
            f = iso_figure(iso_s)
            seed_figs.append({"seed": s, "darb": iso_s["darb"]["ratio"],
                              "block": iso_s["block"]["ratio"], **f})
            print(f"  seed {s}: darb {iso_s['darb']['ratio'] or 0:.2f}x, block "
                  f"{iso_s['block']['ratio'] or 0:.2f}x, DARB / block "
                  f"{f['ratio'] or float('nan'):.2f}x")
    seconds = time.monotonic() - start
    for p in points:
        del p["_layers"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps({
        "example": example, "seeds": seeds, "schedule": schedule, "lanes": LANES,
        "max_loss": MAX_LOSS, "block_shape": list(BLOCK_SHAPE), "torch_threads": 1,
        "torch_version": torch.__version__, "quick": args.quick, "seconds": seconds,
        "points": points, "iso_accuracy": {m: {k: v for k, v in r.items() if k != "point"}
                                           for m, r in iso.items()},
        "iso_figure": fig, "iso_per_seed": seed_figs, "verilator_check": check}, indent=1))
    plot(points, iso, out_dir / f"{stem}.png", schedule, seeds, example)
    print(f"\n{seconds:.0f} s; wrote {out_dir / stem}.json and .png")
    if fig["ratio"] is None:
        print("DARB / block at iso-accuracy: undefined (a method has no point within "
              f"{100 * MAX_LOSS:g} point)")
    else:
        bracket = (f" (grid bracket {fig['low']:.2f}x–" if fig["low"] else " (grid bracket ?–") + \
                  (f"{fig['high']:.2f}x)" if fig["high"] else "?)")
        print(f"DARB / block pruning ratio at iso-accuracy (<= {100 * MAX_LOSS:g} point loss): "
              f"{iso['darb']['ratio']:.2f}x / {iso['block']['ratio']:.2f}x = "
              f"{fig['ratio']:.2f}x{bracket}")
    return 0


def plot(points, iso, path: Path, schedule, seeds, example: str = EXAMPLE) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    dense = points[0]["accuracy_dense"]
    for method, style in (("darb", "o-"), ("block", "s-")):
        mine = sorted((p for p in points if p["method"] == method), key=lambda p: p["ratio"])
        label = "DARB" if method == "darb" else f"block {BLOCK_SHAPE[0]}x{BLOCK_SHAPE[1]}"
        ax1.plot([p["ratio"] for p in mine], [p["accuracy_int8"] for p in mine], style,
                 label=label)
        ax2.plot([p["ratio"] for p in mine], [p["cycles_per_inference"] for p in mine], style,
                 label=label)
        best = iso[method]["point"]
        if best is not None:
            ax1.plot(best["ratio"], best["accuracy_int8"], "k*", markersize=14)
            ax2.plot(best["ratio"], best["cycles_per_inference"], "k*", markersize=14)
    ax1.axhline(dense, color="gray", lw=1, label=f"dense {dense:.4f}")
    ax1.axhline(dense - MAX_LOSS, color="gray", lw=1, ls="--", label="dense - 1 point")
    ticks = sorted({2 ** i for i in range(1, 7)} | {3, 6, 12, 24, 48})
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    ax1.set_xlabel("pruning ratio reached (dense / nnz)")
    ax1.set_ylabel("test accuracy, int8 weights")
    ax1.set_ylim(max(0.0, min(p["accuracy_int8"] for p in points) - 0.02), 1.0)
    ax1.legend(loc="lower left")
    ax1.set_title("accuracy vs pruning ratio (* = highest within 1 point)")
    ax2.set_yscale("log")
    ax2.set_xlabel("pruning ratio reached (dense / nnz)")
    ax2.set_ylabel(f"engine cycles per inference (P = {LANES})")
    ax2.set_title("cycles per inference (3 layers, steady state)")
    ax2.legend()
    fig.suptitle(f"{example}, DARB vs uniform block pruning; schedule "
                 f"{schedule['epochs']}/{schedule['finetune_epochs']}x{schedule['steps']}, "
                 f"seed(s) {','.join(map(str, seeds))}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
