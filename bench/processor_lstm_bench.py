"""The char-LSTM step on the layer-sequenced processor: cycles per time step in
Verilator, every h and c checked, against the chain's LSTMStep; and what the cell
costs in block RAM.

The model: the hidden-128 DARB-16 char LSTM of ``bench/lstm_bench.py``
(``build/lstm-h128-darb16.darb``) if it is there, else one trained here the same way but
briefly (``CharLSTM(vocab, 128)``, 400 steps, two DARB stages to 16x with 60 fine-tuning
steps each, seed 0; about 2 minutes): a real 512 x 229 DARB-16 gate layer, calibrated
as ``bench/lstm_step_bench.py`` does (its perplexity is not the point here).

For P = 4 and 8 lanes it sizes one processor (``ProcessorConfig.for_plans``) that runs a
random DARB 784-300-100-10 MLP (LeNet-300-100's shape, bench/processor_bench.py) and
the LSTM step. On that one build it runs 2 vectors through the MLP (logits checked),
then 2 streams x 16 characters of validation text through the LSTM (h and c after
every step equal to :func:`darbgen.sim.lstm_golden.int_lstm_sequence`; exit status 3
otherwise), and the same through the chain's ``LSTMStep`` at the same P, and prints
both cycles per step. It also prints the cell's memories in iCE40UP5K block RAM (EBR),
and the EBR of a lookup table folded by the tables' symmetries (checked exactly here).

Records in ``docs/processor.json`` (key ``lstm``).

Run: ``nice .venv/bin/python bench/processor_lstm_bench.py`` (12.5 minutes on the
loaded shared machine: training, four Verilator builds, then about 10 s per run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from _record import ROOT, commit, record, uncommitted_changes
from processor_bench import SEED, blocks, lenet_300_100
from darbgen import lstm_format as lf
from darbgen.format import Artifact
from darbgen.packing import schedule
from darbgen.processor import ProcessorConfig
from darbgen.sim import lstm_golden as lg
from darbgen.sim.golden import network_ref
from darbgen.config import EngineConfig
from darbgen.lstm import LSTMConfig
from darbgen.sim.runner import simulate_lstm, simulate_processor, simulate_processor_lstm

BUILD = ROOT / "build"


def folded_lut() -> dict:
    """Entries of the lookup ROM folded by ``sigma(-z) = 1 - sigma(z)`` and
    ``tanh(-z) = -tanh(z)`` and cut where tanh saturates: each rule checked on every
    entry of the contract's tables (the ROM must stay bit-identical to them)."""
    s, t = lf.SIGMOID_LUT.astype(int), lf.TANH_LUT.astype(int)
    pos = np.arange(1, lf.Z_MAX + 1)
    at = pos - lf.Z_MIN
    neg = -pos - lf.Z_MIN
    assert (s[neg] == (1 << lf.A_FRAC) - s[at]).all() and (t[neg] == -t[at]).all()
    sat = int(np.argmax(t == 1 << lf.A_FRAC)) + lf.Z_MIN       # tanh is 1.0 from here on
    assert (t[sat - lf.Z_MIN:] == 1 << lf.A_FRAC).all()
    # sigma for z = 0..Z_MAX and z = Z_MIN (no mirror), tanh for 0..sat-1; 14-bit values.
    entries = (lf.Z_MAX + 1) + 1 + sat
    width = max(int(s[lf.Z_MAX + 1 - lf.Z_MIN - 1]), int(t[sat - 1 - lf.Z_MIN])).bit_length()
    return {"entries": entries, "width": width, "tanh_saturates_at": sat,
            "ebr": blocks(entries, width, "ice40up5k"),
            "ebr_full": blocks(len(s) + len(t), lf.A_FRAC + 2, "ice40up5k")}


def cell_ebr(config: ProcessorConfig) -> dict:
    names = ("lut", "gates", "cell", "cell_table")
    mem = config.memories
    out = {n: {"count": mem[n][0], "depth": mem[n][1], "width": mem[n][2],
               "ebr": mem[n][0] * blocks(mem[n][1], mem[n][2], "ice40up5k")} for n in names}
    out["total"] = sum(v["ebr"] for v in out.values())
    return out


def char_lstm(corpus):
    """The hidden-128 DARB-16 gate layer: bench/lstm_bench.py's, or trained briefly."""
    path = BUILD / "lstm-h128-darb16.darb"
    if path.exists():
        return "lstm_bench darb16", Artifact.load(path).layers[0]
    import torch

    from darbgen.pruning.lstm import CharLSTM, export_lstm, prune_lstm, train_lm
    from darbgen.pruning.methods import DARB

    torch.set_num_threads(1)
    model = CharLSTM(corpus.vocab_size, 128, seed=0)
    train_lm(model, corpus.train, steps=400, batch=16, seq_len=32, lr=1e-2, seed=0)
    method = DARB(ratio=16)
    prune_lstm(model, corpus.train, corpus.valid[:3000], method, steps=2, finetune_steps=60,
               seed=0)
    return "brief darb16", export_lstm(model, method).layers[0]


def text(corpus, inputs: int, streams: int, steps: int):
    ids = np.concatenate([corpus.valid[s * 1000:s * 1000 + steps] for s in range(streams)])
    reset = np.zeros(ids.size, bool)
    reset[::steps] = True
    return lf.one_hot_inputs(ids, inputs), reset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", default="4,8", help="lane counts (%(default)s)")
    ap.add_argument("--steps", type=int, default=16, help="characters per stream (%(default)s)")
    ap.add_argument("--streams", type=int, default=2, help="streams (%(default)s)")
    args = ap.parse_args(argv)
    from darbgen.pruning.lstm import load_corpus

    start = time.monotonic()
    corpus = load_corpus()
    source, gate = char_lstm(corpus)
    calib = lg.calibrate(gate, corpus.train, n_streams=16, steps=256)
    params = lf.derive_params(gate, calib)
    inputs, hidden = lf.lstm_shape(gate)
    print(f"{source}: {gate.rows} x {gate.cols}, {gate.nnz} kept weights "
          f"({gate.rows * gate.cols / gate.nnz:.1f}x)", flush=True)
    x, reset = text(corpus, inputs, args.streams, args.steps)
    h_gold, c_gold = lg.int_lstm_sequence(gate, params, x, reset)
    mlp = lenet_300_100(SEED)
    xm = np.random.default_rng(SEED).integers(-128, 128, size=(2, mlp.cols))
    rows, configs = [], {}
    for lanes in [int(p) for p in args.lanes.split(",")]:
        config = ProcessorConfig.for_plans([mlp], lanes, gates=[gate])
        configs[lanes] = config
        run = simulate_processor(mlp, xm, config)
        if not np.array_equal(run.logits, network_ref(mlp, xm)):
            print(f"P={lanes}: the MLP's logits differ from the golden model", file=sys.stderr)
            return 3
        r = simulate_processor_lstm(gate, params, x, reset, config)
        chain = simulate_lstm(gate, params, x, reset, LSTMConfig(
            EngineConfig.for_layers([gate], lanes), hidden))
        exact = all(np.array_equal(a, b) for a, b in ((r.h, h_gold), (r.c, c_gold),
                                                       (chain.h, h_gold), (chain.c, c_gold)))
        sched = schedule(gate, lanes)
        row = {"model": source, "lanes": lanes, "hidden": hidden, "nnz": int(gate.nnz),
               "steps": int(len(reset)), "exact": exact,
               "mlp_cycles_per_inference": run.cycles / len(xm),
               "cycles_per_step": r.cycles / len(reset),
               "chain_cycles_per_step": chain.cycles / len(reset),
               "spmv": int(sched.lane_beats.max()),
               "gates": lanes * sched.slots + int((gate.row_nnz == 0).sum()),
               "x_words": -(-inputs // config.engine.input_width),
               "x_words_reset": -(-gate.cols // config.engine.input_width)}
        rows.append(row)
        print(f"P={lanes}: MLP {row['mlp_cycles_per_inference']:.0f} cycles/inference; LSTM "
              f"{row['cycles_per_step']:.1f} cycles/step on the processor, "
              f"{row['chain_cycles_per_step']:.1f} on the chain's LSTMStep (SpMV "
              f"{row['spmv']}, gates {row['gates']}, units {hidden}, x words "
              f"{row['x_words']}); exact={exact}", flush=True)
        if not exact:
            return 3
    config = configs[min(configs)]
    ebr = cell_ebr(config)
    lut = folded_lut()
    print(f"cell memories at P={min(configs)} (iCE40UP5K EBR): "
          + ", ".join(f"{n} {v['count']}x{v['depth']}x{v['width']} = {v['ebr']}"
                      for n, v in ebr.items() if isinstance(v, dict))
          + f"; total {ebr['total']}")
    print(f"folded lookup ROM: {lut['entries']} x {lut['width']} bits = {lut['ebr']} EBR "
          f"(full: {lut['ebr_full']}); tanh is 1.0 from z = {lut['tanh_saturates_at']}")
    at = commit() + ("+" if uncommitted_changes() else "")
    record("lstm", {"commit": at, "rows": rows, "cell_ebr": ebr, "folded_lut": lut,
                    "configs": {p: c.to_json() for p, c in configs.items()},
                    "seconds": round(time.monotonic() - start)},
           ROOT / "docs" / "processor.json")
    print(f"recorded in docs/processor.json at {at} ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
