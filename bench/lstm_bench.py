"""LSTM benchmark: a character LSTM on CPython's pydoc topics, dense vs DARB-pruned,
float vs the bit-exact integer step.

It trains ``CharLSTM(vocab, 128)`` (:mod:`darbgen.pruning.lstm`) dense, then prunes
copies of it along one path of stages (ratios 2, 4, 8, 16; mask recomputed on the
effective weights, then masked fine-tuning), with DARB and, as the unstructured
reference, irregular magnitude pruning. A control copy of the dense model trains in
the same chunks without pruning, so a pruned model is compared with an equally
trained dense one. For every reported model it measures the validation perplexity of

* the float model (PyTorch),
* the same model with the artifact's int8 weights, float64 arithmetic
  (:func:`~darbgen.sim.lstm_golden.float_perplexity`),
* the integer model: the bit-exact integer LSTM step and the head on int8 h
  (:func:`~darbgen.sim.lstm_golden.int_perplexity`), with formats calibrated on the
  training text.

With ``--engine`` (the default when Verilator is installed) it also runs a few closed-
loop steps of each DARB gate matrix on the generated engine in Verilator (P = 8) and
checks the accumulators and the continued integer step against the golden model.

It prints a table, writes ``docs/lstm.json``, ``docs/lstm.md`` and ``docs/lstm.png``,
and the artifacts to ``build/lstm-h{H}-{dense,darb8,...}.darb``.

Run: ``.venv/bin/python bench/lstm_bench.py`` (about 10 minutes on 2 free cores).
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
from threadpoolctl import threadpool_limits

from darbgen import lstm_format as lf
from darbgen import quant
from darbgen.format import SparseLayer, single_block_layout
from darbgen.pruning.lstm import (CharLSTM, export_lstm, load_corpus, perplexity, prune_lstm,
                                  train_lm)
from darbgen.pruning.methods import make_method
from darbgen.sim import lstm_golden as lg

SEED = 0
ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD = ROOT / "build"


def integer_eval(artifact, corpus) -> dict:
    """Calibrate, derive the integer parameters, and measure both quantized perplexities."""
    gate, head = artifact.layers
    calib = lg.calibrate(gate, corpus.train, n_streams=16, steps=256)
    params = lf.derive_params(gate, calib)
    return {
        "ppl_int8_float": lg.float_perplexity(gate, head, corpus.valid),
        "ppl_integer": lg.int_perplexity(gate, head, params, corpus.valid),
        "calibration": {"max_abs_c": calib.max_abs_c, "max_abs_h": calib.max_abs_h,
                        "max_abs_z": calib.max_abs_z, "z_clamped_fraction": calib.clamped,
                        "vectors": calib.steps},
        "c_frac": params.c_frac,
        "shift_range": [int(params.shift.min()), int(params.shift.max())],
        "bias_range": [int(params.bias.min()), int(params.bias.max())],
    }, params


def gate_stats(gate: SparseLayer) -> dict:
    """Size and index cost of the gate layer, and of the same mask stored as CSR."""
    mask = gate.mask()
    csr = SparseLayer.encode("csr", gate.to_dense(), mask, *single_block_layout(mask), gate.scale)
    sizes, counts = np.unique(gate.block_sizes, return_counts=True)
    return {"rows": gate.rows, "cols": gate.cols, "nnz": gate.nnz,
            "pruning_ratio": gate.pruning_ratio, "index_bits_per_nnz": gate.index_bits_per_nnz,
            "csr_index_bits_per_nnz": csr.index_bits_per_nnz,
            "header_bits": gate.header_bits(), "accumulator_width": gate.accumulator_width(),
            "block_sizes": {int(s): int(c) for s, c in zip(sizes, counts)}}


def engine_check(gate: SparseLayer, params, corpus, config, steps: int = 3,
                 streams: int = 4) -> dict:
    """Closed-loop steps on the Verilator engine: accumulators == spmv_ref, continued
    step == golden step."""
    from darbgen.sim.golden import spmv_ref
    from darbgen.sim.runner import simulate_layer

    inputs, hidden = lf.lstm_shape(gate)
    text = corpus.valid
    ids = np.stack([text[s * 1000:s * 1000 + steps] for s in range(streams)])
    h = c = np.zeros((streams, hidden), np.int64)
    start, cycles = time.monotonic(), 0
    for t in range(steps):
        x = lf.one_hot_inputs(ids[:, t], inputs)
        v = np.concatenate([x, h], axis=1)
        run = simulate_layer(gate, v, config)
        cycles += run.cycles
        if not np.array_equal(run.y, spmv_ref(gate, v)):
            raise SystemExit(f"MISMATCH: engine accumulators differ from spmv_ref at step {t}")
        c_gold, h_gold = lg.int_lstm_step(gate, params, x, h, c)
        c, h = lg.step_from_accumulators(params, run.y, c)
        if not (np.array_equal(c, c_gold) and np.array_equal(h, h_gold)):
            raise SystemExit(f"MISMATCH: step from engine accumulators differs at step {t}")
    return {"steps": steps, "streams": streams, "lanes": config.lanes, "exact": True,
            "cycles_per_step": cycles / (steps * streams), "seconds": time.monotonic() - start}


def stage_ratios(ratios) -> list[float]:
    """The pruning path: every power of two from 2 below the largest ratio, plus the
    requested ratios (one fine-tuned stage each)."""
    top = max(ratios)
    powers = [float(2 ** i) for i in range(1, 64) if 2 ** i < top]
    return sorted(set(powers) | set(ratios))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=128, help="LSTM hidden units (%(default)s)")
    ap.add_argument("--ratios", default="8,16", help="pruning ratios to report (%(default)s)")
    ap.add_argument("--methods", default="darb,irregular",
                    help="pruning methods: darb, and irregular as the unstructured "
                         "reference (%(default)s)")
    ap.add_argument("--dense-steps", type=int, default=3000,
                    help="dense training steps, batch 32 × 64 characters (%(default)s)")
    ap.add_argument("--finetune-steps", type=int, default=750,
                    help="fine-tuning steps per pruning stage (%(default)s)")
    ap.add_argument("--finetune-lr", type=float, default=2e-3, help="(%(default)s)")
    ap.add_argument("--engine", action=argparse.BooleanOptionalAction, default=None,
                    help="check a few steps on the Verilator engine (default: when installed)")
    args = ap.parse_args(argv)
    ratios = sorted(float(r) for r in args.ratios.split(","))
    methods = args.methods.split(",")
    stages = stage_ratios(ratios)
    # One thread (torch and BLAS): on the shared 2-core machine a second intra-op thread
    # that waits for a busy core stalls each of the LSTM's many small ops; fine-tuning
    # measured 2-3 s per step that way, against 0.02-0.04 s on one thread.
    torch.set_num_threads(1)
    with threadpool_limits(1):
        return run(args, ratios, methods, stages)


def run(args, ratios, methods, stages) -> int:
    start = time.monotonic()
    print(f"seed {SEED}, hidden {args.hidden}, stages {stages}, methods {methods}", flush=True)

    corpus = load_corpus()
    model = CharLSTM(corpus.vocab_size, args.hidden, seed=SEED)
    t0 = time.monotonic()
    loss = train_lm(model, corpus.train, steps=args.dense_steps, seed=SEED, progress=True)
    train_s = time.monotonic() - t0
    print(f"dense: vocab {corpus.vocab_size}, {args.dense_steps} steps in {train_s:.0f} s, "
          f"train loss {loss:.3f}", flush=True)
    BUILD.mkdir(exist_ok=True)
    training = {"seed": SEED, "dense_steps": args.dense_steps, "batch": 32, "seq_len": 64,
                "lr": "3e-3 cosine to 3e-4", "stages": stages,
                "finetune_steps": args.finetune_steps,
                "finetune_lr": f"{args.finetune_lr:g} cosine to {args.finetune_lr / 10:g}"}
    rows = []

    def record(name, m, method, ratio, *, log=None, seconds=0.0, extra_steps=0, control=None):
        art = export_lstm(m, method, provenance={
            "source": "pydoc-char-lstm", "method": method.name if method else "dense",
            "parameters": method.params() if method else {}, "weight_bits": 8,
            "training": {**training, "extra_steps": extra_steps}, **corpus.describe()})
        art.save(BUILD / f"lstm-h{args.hidden}-{name}.darb")
        ints, params = integer_eval(art, corpus)
        row = {"model": name, "method": method.name if method else "dense", "ratio": ratio,
               "extra_steps": extra_steps, "control": control,
               "ppl_float": perplexity(m, corpus.valid), **ints,
               "gate": gate_stats(art.layers[0]), "schedule": log or [], "seconds": seconds}
        rows.append(row)
        print(f"{name:12} ratio {row['gate']['pruning_ratio']:6.2f}  ppl float "
              f"{row['ppl_float']:.4f}  int8 weights {row['ppl_int8_float']:.4f}  integer "
              f"{row['ppl_integer']:.4f}  c Q.{row['c_frac']}  index bits/nnz "
              f"{row['gate']['index_bits_per_nnz']:.2f} (CSR "
              f"{row['gate']['csr_index_bits_per_nnz']:.2f})", flush=True)
        return art, params

    record("dense", model, None, 1.0, seconds=train_s)
    # The control trains in the same chunks, with the same seeds, as a pruning path.
    control, log, t0 = copy.deepcopy(model), [], time.monotonic()
    controls = {}
    for i, r in enumerate(stages):
        loss = train_lm(control, corpus.train, steps=args.finetune_steps, lr=args.finetune_lr,
                        seed=SEED + 1 + i, desc=f"control {i + 1}/{len(stages)}", progress=True)
        log.append({"step": i, "params": {}, "pruning_ratio": 1.0, "loss": loss,
                    "perplexity": perplexity(control, corpus.valid)})
        if r in ratios:
            extra = (i + 1) * args.finetune_steps
            controls[r] = f"dense+{extra}"
            record(controls[r], control, None, 1.0, log=list(log), extra_steps=extra,
                   seconds=time.monotonic() - t0)

    pruned_layers = []
    for name in methods:
        pruned, log, t0 = copy.deepcopy(model), [], time.monotonic()
        for i, r in enumerate(stages):
            method = make_method(name, ratio=r)
            log += [{**s, "step": i} for s in prune_lstm(
                pruned, corpus.train, corpus.valid, method, steps=1,
                finetune_steps=args.finetune_steps, seed=SEED + i, lr=args.finetune_lr,
                progress=True)]
            if r in ratios:
                art, params = record(f"{name}{r:g}", pruned, method, r, log=list(log),
                                     extra_steps=(i + 1) * args.finetune_steps,
                                     control=controls[r], seconds=time.monotonic() - t0)
                if name == "darb":
                    pruned_layers.append((rows[-1], art.layers[0], params))

    engine = args.engine
    if engine is None:
        from darbgen.sim.runner import simulator_available
        engine = simulator_available("verilator")
    if engine and pruned_layers:
        from darbgen.config import EngineConfig

        # One engine for every pruned gate matrix: a single Verilator build.
        config = EngineConfig.for_layers([gate for _, gate, _ in pruned_layers], 8)
        for row, gate, params in pruned_layers:
            row["engine"] = engine_check(gate, params, corpus, config)
            print(f"{row['model']:12} on the engine (Verilator, P = 8): "
                  f"{row['engine']['steps']} steps × {row['engine']['streams']} streams exact "
                  f"({row['engine']['seconds']:.0f} s)", flush=True)

    result = {"seed": SEED, "hidden": args.hidden, "vocab": corpus.vocab_size,
              "corpus": {k: v for k, v in corpus.describe().items() if k != "vocab"},
              "training": training, "formats": formats(), "models": rows,
              "seconds": time.monotonic() - start}
    DOCS.mkdir(exist_ok=True)
    (DOCS / "lstm.json").write_text(json.dumps(result, indent=1))
    plot(result)
    (DOCS / "lstm.md").write_text(markdown(result) + step_section())
    print(f"\n{result['seconds']:.0f} s; wrote docs/lstm.json, docs/lstm.md, docs/lstm.png",
          flush=True)
    return 0


def step_section() -> str:
    """The section "The step on chip" of the current docs/lstm.md, written by
    bench/lstm_step_bench.py: kept when this bench rewrites the file."""
    path = DOCS / "lstm.md"
    text = path.read_text() if path.exists() else ""
    at = text.find("\n## The step on chip\n")
    if at < 0:
        return ""
    end = text.find("\n## ", at + 1)
    return text[at:] if end < 0 else text[at:end + 1]


def formats() -> dict:
    return {"x_one": lf.X_ONE, "h_unit": "1/127", "z_frac": lf.Z_FRAC,
            "z_range": [lf.Z_MIN, lf.Z_MAX],
            "lut_frac": lf.A_FRAC, "lut_entries": int(lf.SIGMOID_LUT.size),
            "c_bits": 16, "mult_bits": quant.MULT_BITS, "c_headroom": lf.C_HEADROOM}


def _paths(result) -> dict:
    """Per path (``dense`` = the control, then each method), its per-stage log."""
    paths = {}
    for r in result["models"]:
        if r["schedule"]:
            key = r["method"]
            if len(r["schedule"]) > len(paths.get(key, [])):
                paths[key] = r["schedule"]
    return paths


def plot(result) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["models"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [5, 3, 3]})
    ax = axes[0]
    kinds = [("ppl_float", "float"), ("ppl_int8_float", "int8 weights, float math"),
             ("ppl_integer", "integer step")]
    width = 0.27
    for i, (key, label) in enumerate(kinds):
        ax.bar(np.arange(len(rows)) + (i - 1) * width, [r[key] for r in rows], width, label=label)
    ax.set_xticks(np.arange(len(rows)), [r["model"] for r in rows], rotation=15)
    ax.set_ylabel("validation perplexity")
    ax.set_ylim(0, max(r["ppl_integer"] for r in rows) * 1.15)
    ax.legend(fontsize=8)
    ax.set_title("perplexity (lower is better)")
    ax = axes[1]
    stages = result["training"]["stages"]
    dense = rows[0]["ppl_float"]
    for key, log in _paths(result).items():
        label = "dense control" if key == "dense" else key
        ax.plot(range(len(log) + 1), [dense] + [s["perplexity"] for s in log], "o-", label=label)
    ax.set_xticks(range(len(stages) + 1), ["dense"] + [f"{r:g}×" for r in stages])
    ax.set_xlabel(f"stage (gate pruning ratio), {result['training']['finetune_steps']} "
                  "fine-tuning steps each")
    ax.set_ylabel("validation perplexity (float)")
    ax.legend(fontsize=8)
    ax.set_title("progressive pruning vs the same training unpruned")
    ax = axes[2]
    darb = [r for r in rows if r["method"] == "darb"]
    sizes = sorted({int(b) for r in darb for b in r["gate"]["block_sizes"]})
    width = 0.8 / max(len(darb), 1)
    for i, r in enumerate(darb):
        ax.bar(np.arange(len(sizes)) + i * width, [r["gate"]["block_sizes"].get(b, 0)
                                                  for b in sizes], width, label=r["model"])
    ax.set_xticks(np.arange(len(sizes)) + width * (len(darb) - 1) / 2, sizes)
    ax.set_xlabel("block size b_i")
    ax.set_ylabel("gate rows")
    ax.legend(fontsize=8)
    ax.set_title("DARB block sizes of the gate rows")
    fig.suptitle(f"char LSTM on pydoc topics, hidden {result['hidden']}, vocab {result['vocab']}")
    fig.tight_layout()
    fig.savefig(DOCS / "lstm.png", dpi=110)


def markdown(result) -> str:
    rows = result["models"]
    by_name = {r["model"]: r for r in rows}
    h, v = result["hidden"], result["vocab"]
    c = result["corpus"]
    t = result["training"]
    f = t["finetune_steps"]
    stages = ", ".join(f"{r:g}" for r in t["stages"])
    lines = [
        "# A character LSTM on the DARB engine: dense vs pruned, float vs integer",
        "",
        "Generated by `bench/lstm_bench.py` (one run, seed "
        f"{result['seed']}, {result['seconds'] / 60:.1f} minutes on the shared 2-core machine); "
        "data in `lstm.json`. Code: `pruning/lstm.py` (corpus, model, training, pruning, "
        "export), `darbgen/lstm_format.py` (the integer formats, tables and parameters), "
        "`sim/lstm_golden.py` (the integer step), `tests/test_lstm.py`.",
        "",
        "## Model and data",
        "",
        f"- **Corpus:** CPython {c['python']}'s `pydoc_data.topics`, the topics joined in "
        f"sorted key order (sha256 `{c['sha256'][:16]}…`). First 90% for training "
        f"({c['train_chars']} characters), last 10% for validation ({c['valid_chars']}).",
        f"- **Vocabulary:** {v} symbols: the characters seen at least 5 times in the training "
        "text, after an unknown symbol (id 0) for everything else.",
        f"- **Model:** one-hot characters → one-layer LSTM, hidden {h} → Linear head. The gate "
        f"matrix is the artifact's layer `lstm.l0`: {4 * h} × {v + h}, rows of the stacked "
        "`[W_ih | W_hh]` in PyTorch's gate order i, f, g, o; columns `[x_t; h_{t-1}]`, so "
        "`x_t` is a one-hot int8 vector on the engine. Biases `b_ih + b_hh` are summed.",
        f"- **Training:** Adam, truncated BPTT over 32 contiguous streams, windows of 64 "
        f"characters with the state carried, gradient norm clipped at 1; {t['dense_steps']} "
        f"steps, learning rate {t['lr']}. CPU, seeded.",
        f"- **Pruning:** the gate matrix only, one stage per ratio ({stages}), each stage "
        "recomputing the mask on the effective weights and then fine-tuning "
        f"{f} steps with the mask fixed (learning rate {t['finetune_lr']}). "
        "`darb` is `darbgen.pruning.methods.DARB` (block sizes 2..64, k = 1); `irregular` "
        "(magnitude pruning, CSR layout) is the unstructured reference at the same ratio. "
        "The head stays dense (block size 1 in the artifact, so the engine runs it as well): "
        f"it is {v} × {h}, small next to the gates, and keeping it dense makes the "
        "perplexity change measure the gate pruning alone.",
        f"- **Control:** `dense+N` is the dense model trained N more steps in the same "
        "chunks, seeds and learning-rate schedule as a pruning path, without pruning: the "
        "pruned model with the same N is compared with it, not with the less trained "
        "`dense`.",
        "- **Perplexity:** `exp` of the mean cross-entropy per character over the validation "
        "text cut into 64 contiguous streams, each from a zero state "
        "(`lstm_golden.stream_split`); the same protocol for every column below. *float*: "
        "the PyTorch model; *int8 weights*: the artifact's int8 weights in float64 "
        "arithmetic; *integer step*: the bit-exact integer model of `sim/lstm_golden.py`.",
        "",
        "## Results",
        "",
        "![LSTM](lstm.png)",
        "",
        "| model | gate ratio | gate nnz | float ppl | int8 weights | integer step "
        "| c format | index bits/nnz (CSR of the same mask) | training time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g = r["gate"]
        lines.append(
            f"| {r['model']} | {g['pruning_ratio']:.2f} | {g['nnz']} | {r['ppl_float']:.4f} | "
            f"{r['ppl_int8_float']:.4f} | {r['ppl_integer']:.4f} | Q.{r['c_frac']} | "
            f"{g['index_bits_per_nnz']:.2f} ({g['csr_index_bits_per_nnz']:.2f}) | "
            f"{r['seconds']:.0f} s |")
    dense = rows[0]
    worst = max(abs(r["ppl_integer"] / r["ppl_int8_float"] - 1) for r in rows)
    wq = max(abs(r["ppl_int8_float"] / r["ppl_float"] - 1) for r in rows)
    lines += [
        "",
        "- Index bits: block size 1 (dense) needs none; the irregular rows' own layout is "
        "the CSR one.",
        f"- The integer step changes perplexity by at most {100 * worst:.3f}% against float "
        f"math with the same int8 weights, and int8 weights by at most {100 * wq:.2f}% "
        "against the float model, over all models above.",
    ]
    for r in rows:
        if r["control"] is None:
            continue
        ctl = by_name[r["control"]]
        lines.append(
            f"- {r['model']}: float perplexity {r['ppl_float']:.3f}, "
            f"{100 * (r['ppl_float'] / ctl['ppl_float'] - 1):+.1f}% against its control "
            f"{r['control']} ({ctl['ppl_float']:.3f}) and "
            f"{100 * (r['ppl_float'] / dense['ppl_float'] - 1):+.1f}% against dense "
            f"({dense['ppl_float']:.3f}).")
        if r["method"] == "darb":
            irr = by_name.get(f"irregular{r['ratio']:g}")
            if irr is not None:
                lines[-1] += (
                    f" Irregular at the same ratio: {irr['ppl_float']:.3f}, so DARB's regular "
                    f"blocks cost {100 * (r['ppl_float'] / irr['ppl_float'] - 1):+.1f}% "
                    f"perplexity and save {irr['gate']['index_bits_per_nnz']:.2f} → "
                    f"{r['gate']['index_bits_per_nnz']:.2f} index bits per kept weight.")
            lines[-1] += (" Block sizes (size:rows) " + ", ".join(
                f"{b}:{n}" for b, n in r["gate"]["block_sizes"].items()) + ".")
        if "engine" in r:
            e = r["engine"]
            lines.append(
                f"  On the generated engine in Verilator (P = {e['lanes']}), {e['steps']} "
                f"closed-loop steps × {e['streams']} streams: accumulators equal `spmv_ref` "
                "and the step continued from the engine's accumulators equals the golden step "
                f"({e['cycles_per_step']:.0f} cycles per gate SpMV).")
    paths = _paths(result)
    names = list(paths)
    lines += ["", "Per stage (float validation perplexity after the stage's fine-tuning):", "",
              "| stage | ratio | " + " | ".join(
                  "control" if n == "dense" else n for n in names) + " |",
              "|---|---|" + "---|" * len(names)]
    for i, ratio in enumerate(t["stages"]):
        lines.append(f"| {i + 1} | {ratio:g} | " + " | ".join(
            f"{paths[n][i]['perplexity']:.4f}" if i < len(paths[n]) else "" for n in names)
            + " |")
    cal = [f"{r['model']} {r['calibration']['max_abs_c']:.1f}" for r in rows]
    lines += [
        "",
        "## The integer step (`darbgen/lstm_format.py`, `sim/lstm_golden.py`)",
        "",
        "One time step = one SpMV of the gate layer on the engine plus a small integer "
        "datapath; every operation is on int64 and exact, and the module docstring is the "
        "specification.",
        "",
        "| quantity | format |",
        "|---|---|",
        "| `x_t` | int8: 127 at the character, 0 elsewhere (unit 1/127) |",
        "| `h_t` | int8 in [-127, 127], unit 1/127 |",
        "| `acc` | `spmv_ref(gate, [x_t; h_{t-1}])`, unit `scale_i / 127` on row i |",
        "| bias | int32 per row: `round(b_i · 127 / scale_i)`, halves away from zero "
        "(`darbgen.quant.round_half_away`, the rule of every network) |",
        "| `z` (pre-activation) | Q3.7, 11-bit signed, clamped to [-8, 8) |",
        "| sigmoid, tanh | Q1.14 (int16) lookup tables of 2048 entries indexed by `z + 1024` |",
        "| `c_t` | int16, Q.`c_frac` with `c_frac` in [7, 14] from calibration |",
        "",
        "- `round_shift(a, s) = (a + 2^(s-1)) >> s`: arithmetic shift, round half up "
        "(`round_shift(-3, 1) = -1`); `mult_i` is rounded half away from zero like the bias "
        "(`darbgen.quant.fixed_point`). Both rules are `darbgen/quant.py`'s, shared with the "
        "MLP and CNN layers (network.md).",
        "- `z = clamp(round_shift((acc + bias) · mult_i, shift_i), -1024, 1023)` with "
        "`mult_i` in [2^14, 2^15) and `mult_i / 2^shift_i ≈ scale_i · 2^7 / 127`.",
        "- `c_t = clamp(round_shift(f · c_{t-1}, 14) + round_shift(i · g, 28 - c_frac), "
        "-32768, 32767)`; `h_t = round_shift(o · TANH[round_shift(c_t, c_frac - 7)] · 127, 28)`.",
        "- x and h share the accumulator, so they share a unit; the one-hot 1.0 must fit "
        "int8, which fixes that unit at 1/127 (|h| < 1 always fits). The calibration "
        "(float step with the int8 weights over 16 × 256 characters of training text) "
        "therefore sets only the cell format: the most fractional bits that keep twice the "
        "largest |c| seen in int16. Largest |c| per model: " + ", ".join(cal) + ".",
        "- Head: the engine's integer SpMV on int8 h (`spmv_ref(head, h)`), dequantized to "
        "float logits (`acc · scale / 127 + bias`); the log-softmax is float64.",
        "- `int_perplexity` gets the accumulators from an exact float64 matrix product "
        "(all partial sums are integers below 2^53) and checks them against `spmv_ref` "
        "every 32 steps.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
