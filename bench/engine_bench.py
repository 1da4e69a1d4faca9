"""Engine benchmark: DARB vs dense vs CSR engines from the same generator, at P = 8.

For each weight matrix (the three digits-MLP layers and the stacked gate matrix of
a character LSTM trained on CPython's pydoc topics) it builds three layers from the
same trained float weights:

* ``darb``: DARB at 16× (one-shot; the structure is what the engine sees),
* ``csr``: irregular magnitude pruning at the same ratio, absolute column indices,
* ``dense``: every weight (block size 1),

then, for each, generates the engine, runs 16 random int8 vectors through it in
Verilator (every output checked against the golden model), and synthesizes the
index decoder and the whole engine with Yosys ``synth_ice40 -dsp``. It prints one
row per (layer, engine), writes ``docs/engine-bench.json`` and plots
``docs/engine.png``.

Run: ``.venv/bin/python bench/engine_bench.py`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from darbgen import toolenv
from darbgen.config import EngineConfig
from darbgen.format import SparseLayer, single_block_layout
from darbgen.hdl import IndexDecoder
from darbgen.hdl.generate import engine_verilog
from darbgen.pruning.examples import digits_data, digits_mlp
from darbgen.pruning.masks import darb_mask, irregular_mask
from darbgen.pruning.train import train
from darbgen.sim.golden import spmv_ref
from darbgen.sim.runner import simulate_layer

SEED = 0
LANES = 8
RATIO = 16
VECTORS = 16
DOCS = Path(__file__).resolve().parent.parent / "docs"


def digits_weights() -> dict:
    model = digits_mlp(seed=SEED)
    train(model, digits_data(SEED), epochs=60, seed=SEED, progress=False)
    return {f"digits.{n}": m.weight.detach().double().numpy()
            for n, m in model.named_children() if isinstance(m, torch.nn.Linear)}


def lstm_weights(hidden: int = 128, steps: int = 300) -> dict:
    """A character LSTM trained briefly on pydoc topics; its stacked [W_ih | W_hh]."""
    from pydoc_data.topics import topics

    text = "".join(topics.values())
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text])
    torch.manual_seed(SEED)
    emb = torch.nn.functional.one_hot
    lstm = torch.nn.LSTM(len(chars), hidden, batch_first=True)
    head = torch.nn.Linear(hidden, len(chars))
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=3e-3)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - 65, (32,), generator=gen)
        seq = torch.stack([data[s:s + 65] for s in starts])
        x = emb(seq[:, :-1], len(chars)).float()
        out, _ = lstm(x)
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, len(chars)),
                                                 seq[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"lstm: vocab {len(chars)}, hidden {hidden}, final loss {loss.item():.3f}",
          flush=True)
    w = torch.cat([lstm.weight_ih_l0, lstm.weight_hh_l0], dim=1)
    return {"lstm.gates": w.detach().double().numpy()}


def engine_layers(name: str, w: np.ndarray) -> dict:
    rows, cols = w.shape
    darb, sizes = darb_mask(w, RATIO)
    irr = irregular_mask(w, RATIO)
    b, k = single_block_layout(irr)
    ones = np.ones(rows, dtype=np.int64)
    return {
        "darb": SparseLayer.from_float(name, w, darb, sizes, ones, method="darb"),
        "csr": SparseLayer.from_float(name, w, irr, b, k, method="irregular"),
        "dense": SparseLayer.from_float(name, w, np.ones_like(darb), ones, ones, method="dense"),
    }


def synth_stats(verilog: str, top: str) -> dict:
    """Yosys synth_ice40 -dsp, flattened: cell counts by type."""
    with tempfile.TemporaryDirectory(prefix="darbgen-synth-") as tmp:
        Path(tmp, "d.v").write_text(verilog)
        # YoWASP tools see only their working directory: relative paths
        proc = subprocess.run([os.environ["YOSYS"], "-q", "-p",
                               f"read_verilog d.v; synth_ice40 -dsp -top {top}; "
                               "tee -q -o stat.json stat -json"],
                              cwd=tmp, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"yosys failed: {proc.stderr[-2000:]}")
        stat = json.loads(Path(tmp, "stat.json").read_text())
    module = next(iter(stat["modules"].values()))
    cells = module.get("num_cells_by_type", {})
    return {"cells": module["num_cells"], "luts": cells.get("SB_LUT4", 0),
            "carries": cells.get("SB_CARRY", 0),
            "ffs": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
            "brams": cells.get("SB_RAM40_4K", 0), "dsps": cells.get("SB_MAC16", 0)}


def main() -> int:
    toolenv.setup()
    rng = np.random.default_rng(SEED)
    start = time.monotonic()
    weights = {**digits_weights(), **lstm_weights()}
    results = []
    print(f"{'layer':13} {'engine':6} {'rows':>4} {'cols':>4} {'nnz':>6} {'cycles':>7} "
          f"{'cyc/vec':>8} {'util':>6} {'idx b/nnz':>9} {'dec LUT':>7} {'dec cells':>9} "
          f"{'eng LUT':>7} {'eng cells':>9} {'BRAM':>4} {'DSP':>3}", flush=True)
    for name, w in weights.items():
        for kind, layer in engine_layers(name, w).items():
            config = EngineConfig.for_layers([layer], LANES)
            x = rng.integers(-128, 128, size=(VECTORS, layer.cols))
            run = simulate_layer(layer, x, config)
            if not np.array_equal(run.y, spmv_ref(layer, x)):
                print(f"MISMATCH: {name} {kind}", file=sys.stderr)
                return 1
            from amaranth.back import verilog
            decoder = synth_stats(verilog.convert(IndexDecoder(config), name="decoder",
                                                  emit_src=False), "decoder")
            engine = synth_stats(engine_verilog(config, "engine"), "engine")
            row = {"layer": name, "engine": kind, "rows": layer.rows, "cols": layer.cols,
                   "nnz": layer.nnz, "pruning_ratio": layer.pruning_ratio,
                   "vectors": VECTORS, "cycles": run.cycles,
                   "cycles_per_vector": run.cycles / VECTORS,
                   "utilization": layer.nnz * VECTORS / (LANES * run.cycles),
                   "balance": run.schedule.balance,
                   "index_bits_per_nnz": layer.index_bits_per_nnz,
                   "decoder": decoder, "engine_synth": engine, "config": config.to_json()}
            results.append(row)
            print(f"{name:13} {kind:6} {layer.rows:4} {layer.cols:4} {layer.nnz:6} "
                  f"{run.cycles:7} {run.cycles / VECTORS:8.1f} {row['utilization']:6.3f} "
                  f"{layer.index_bits_per_nnz:9.2f} {decoder['luts']:7} {decoder['cells']:9} "
                  f"{engine['luts']:7} {engine['cells']:9} {engine['brams']:4} "
                  f"{engine['dsps']:3}", flush=True)
    print("\nDARB / CSR per layer (CSR ÷ DARB: >1 means DARB needs less):")
    for name in weights:
        d = next(r for r in results if r["layer"] == name and r["engine"] == "darb")
        c = next(r for r in results if r["layer"] == name and r["engine"] == "csr")
        n = next(r for r in results if r["layer"] == name and r["engine"] == "dense")
        print(f"  {name:13} index bits {c['index_bits_per_nnz'] / d['index_bits_per_nnz']:.2f}x, "
              f"index memory {c['index_bits_per_nnz'] * c['nnz'] / (d['index_bits_per_nnz'] * d['nnz']):.2f}x, "
              f"decoder cells {c['decoder']['cells'] / max(d['decoder']['cells'], 1):.2f}x, "
              f"engine LUTs {c['engine_synth']['luts'] / d['engine_synth']['luts']:.2f}x, "
              f"cycles {c['cycles'] / d['cycles']:.2f}x; dense cycles {n['cycles'] / d['cycles']:.1f}x DARB")
    DOCS.mkdir(exist_ok=True)
    (DOCS / "engine-bench.json").write_text(json.dumps(
        {"seed": SEED, "lanes": LANES, "ratio": RATIO, "vectors": VECTORS,
         "seconds": time.monotonic() - start, "results": results}, indent=1))
    plot(results)
    print(f"\n{time.monotonic() - start:.0f} s; wrote docs/engine-bench.json and docs/engine.png")
    return 0


def plot(results) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(r["layer"] for r in results))
    kinds = ["darb", "csr", "dense"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [("cycles per vector (log)", lambda r: r["cycles_per_vector"], True),
              ("index bits per kept weight", lambda r: r["index_bits_per_nnz"], False),
              ("engine LUTs (synth_ice40 -dsp)", lambda r: r["engine_synth"]["luts"], False)]
    width = 0.27
    for ax, (title, value, log) in zip(axes, panels):
        for i, kind in enumerate(kinds):
            vals = [value(next(r for r in results if r["layer"] == la and r["engine"] == kind))
                    for la in layers]
            ax.bar(np.arange(len(layers)) + (i - 1) * width, vals, width, label=kind)
        ax.set_xticks(np.arange(len(layers)), layers, rotation=20)
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"darbgen engines at P = {LANES}, {RATIO}x pruning (DARB, CSR) vs dense")
    fig.tight_layout()
    fig.savefig(DOCS / "engine.png", dpi=110)


if __name__ == "__main__":
    sys.exit(main())
