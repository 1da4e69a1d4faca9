"""The LSTM step on chip (hdl/lstm.py): the contract of its streams, the closed loop in
Amaranth's simulator on random DARB gate layers (edge cases, stalls, a faulty lookup
table), and a trained, DARB-pruned char LSTM (hidden 16) in Verilator: h and c after
every step bit-exact against lstm_golden, and a corrupted weight caught."""

from dataclasses import replace

import numpy as np
import pytest

from conftest import without_rows
from darbgen import lstm_format as lf
from darbgen import quant
from darbgen.config import ConfigError
from darbgen.format import SparseLayer
from darbgen.hdl.lstm import LSTMCell, LSTMStep
from darbgen.lstm import (LOAD_C_FRAC, LOAD_ENGINE, LOAD_TABLE, LSTMConfig, cell_table,
                          input_words, load_words, lut_init, unpack_outputs)
from darbgen.packing import unpack_fields
from darbgen.pruning.masks import darb_mask
from darbgen.sim import lstm_golden as lg
from darbgen.sim.amaranth_tb import drive_streams
from darbgen.sim.golden import spmv_ref
from darbgen.sim.runner import simulate_lstm, simulator_available

verilator = pytest.mark.skipif(not simulator_available("verilator"),
                               reason="verilator is not installed")


def gate_layer(rng, inputs, hidden, ratio=2.0, spread=1.0, empty=()):
    """A random DARB-pruned gate layer with a float bias; rows in ``empty`` keep no
    weight (they never leave the engine)."""
    w = rng.normal(scale=spread, size=(4 * hidden, inputs + hidden))
    mask, sizes = darb_mask(w, ratio)
    layer = SparseLayer.from_float("lstm.l0", w, mask, sizes, np.ones(4 * hidden, int),
                                   method="darb", bias=rng.normal(scale=0.5, size=4 * hidden))
    return without_rows(layer, empty) if empty else layer


def streams(rng, inputs, lengths):
    """One-hot inputs of consecutive streams of the given lengths, and their resets."""
    ids = rng.integers(0, inputs, size=sum(lengths))
    reset = np.zeros(sum(lengths), bool)
    reset[np.cumsum([0] + list(lengths[:-1]))] = True
    return lf.one_hot_inputs(ids, inputs), reset


def run_amaranth(config, words, x, reset, *, luts=None, idle=0.0, backpressure=0.0, seed=0,
                 max_cycles=100_000):
    """The step in Amaranth's simulator: load, then the x beats with random idle cycles
    and the outputs with random back-pressure; returns ``(h, c)``."""
    run = drive_streams(LSTMStep(config, luts=luts), words, input_words(x, config, reset),
                        len(reset) * config.hidden, idle=idle, backpressure=backpressure,
                        seed=seed, max_cycles=max_cycles)
    assert len(run.beats) == run.expected, f"{len(run.beats)} of {run.expected} output beats"
    return unpack_outputs(run.beats, config)


def assert_steps_equal(h, c, h_gold, c_gold):
    for t in range(len(h_gold)):
        assert np.array_equal(c[t], c_gold[t]), f"c differs at step {t}"
        assert np.array_equal(h[t], h_gold[t]), f"h differs at step {t}"


# -- the contract ---------------------------------------------------------------------

def test_config_derives_the_streams(rng):
    gate = gate_layer(rng, 7, 5)
    config = LSTMConfig.for_layer(gate, lanes=2, input_width=4)
    e = config.engine
    assert (config.inputs, config.hidden, config.rows) == (7, 5, 20)
    assert e.max_cols == 12 and config.x_words == 2 and e.x_depth == 3
    assert config.positions == e.lanes * e.lane_rows + 20
    names = [n for n, _ in config.table_fields]
    assert names == ["unit", "gate", "bias", "mult", "shift", "valid", "first"]
    assert dict(config.table_fields)["unit"] == ("u", 3)
    assert config.input_fields == e.input_fields + [("reset", ("u", 1))]
    assert config.output_fields == [("h", ("s", 8)), ("c", ("s", 16)), ("last", ("u", 1))]
    assert LSTMConfig(e, 5).digest() == config.digest() != LSTMConfig(e, 4).digest()
    assert len(lut_init()) == 4096 and lut_init()[2048] == lf.TANH_LUT[0]


def test_config_rejects_what_cannot_run(rng):
    gate = gate_layer(rng, 7, 5)
    e = LSTMConfig.for_layer(gate).engine
    with pytest.raises(ConfigError, match=r"^hidden must be a positive integer below the "
                                          r"engine's 12 columns, not 12$"):
        LSTMConfig(e, 12)
    with pytest.raises(ConfigError, match=r"^hidden must be a positive integer below the "
                                          r"engine's 12 columns, not True$"):
        LSTMConfig(e, True)
    with pytest.raises(ConfigError, match=r"^the engine's 7-bit inputs cannot hold h in "
                                          r"\[-127, 127\]$"):
        LSTMConfig(replace(e, input_bits=7), 5)
    with pytest.raises(ConfigError, match=r"^engine must be an EngineConfig, not 3$"):
        LSTMConfig(3, 5)
    params = lf.derive_params(gate, c_frac=10)
    with pytest.raises(ConfigError, match=r"^gate layer 'lstm.l0' has 7 inputs and 5 hidden "
                                          r"units, the step 8 and 4$"):
        LSTMConfig(e, 4).check(gate, params)
    other = lf.derive_params(gate_layer(rng, 8, 4), c_frac=10)
    with pytest.raises(ConfigError, match=r"^params are for hidden = 4, the gate layer "
                                          r"'lstm.l0' has 5$"):
        load_words(gate, other, LSTMConfig(e, 5))
    with pytest.raises(ConfigError, match=r"^layer 'lstm.l0' needs \d+ beats and \d+ rows in a "
                                          r"lane, the engine holds \d+ and 1$"):
        LSTMConfig(replace(e, lane_rows=1), 5).check(gate, params)
    with pytest.raises(TypeError, match=r"^config must be an LSTMConfig, not 5$"):
        LSTMStep(5)
    with pytest.raises(ValueError, match=r"^luts must have 4096 entries, not 2048$"):
        LSTMCell(LSTMConfig(e, 5), luts=lf.SIGMOID_LUT)


def test_table_names_every_row_once(rng):
    gate = gate_layer(rng, 9, 6, empty=(2, 13))
    params = lf.derive_params(gate, c_frac=10)
    config = LSTMConfig.for_layer(gate, lanes=3)
    words = load_words(gate, params, config)
    f = unpack_fields(config.load_fields, words)
    targets = f["target"].tolist()
    n_engine = targets.count(LOAD_ENGINE)
    assert targets == [LOAD_ENGINE] * n_engine + [LOAD_TABLE] * (len(words) - n_engine - 1) \
        + [LOAD_C_FRAC]
    assert f["data"][-1] == 10
    table = unpack_fields(config.table_fields, f["data"][f["target"] == LOAD_TABLE].tolist())
    ref = cell_table(params, config.check(gate, params), gate)
    for name in ref:
        assert np.array_equal(table[name], ref[name]), name
    valid = table["valid"] == 1
    rows = table["gate"][valid] * 6 + table["unit"][valid]
    assert sorted(rows.tolist()) == list(range(24))                # each row exactly once
    assert rows[-2:].tolist() == [2, 13]                          # empty rows in the tail
    assert np.array_equal(table["bias"][valid], params.bias[rows])
    assert (table["first"] == (np.arange(len(valid)) == 0)).all()


def test_input_and_output_words(rng):
    gate = gate_layer(rng, 7, 5)
    config = LSTMConfig.for_layer(gate, lanes=2, input_width=4)
    x, reset = streams(rng, 7, [2, 1])
    beats = unpack_fields(config.input_fields, input_words(x, config, reset))
    assert beats["x"].reshape(3, 8)[:, :7].tolist() == x.tolist()
    assert beats["last"].tolist() == [0, 1] * 3 and beats["reset"].tolist() == [1, 1, 0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"^the first step must reset the state$"):
        input_words(x, config, ~reset)
    with pytest.raises(ValueError, match=r"^reset must have shape \(3,\), not \(2,\)$"):
        input_words(x, config, reset[:2])
    with pytest.raises(ValueError, match=r"^x must be integers of shape \(steps, 7\), not "
                                         r"int64 of shape \(3, 6\)$"):
        input_words(x[:, :6], config, reset)
    with pytest.raises(ValueError, match=r"^x must be between -128 and 127, not 0\.\.128$"):
        input_words(x + (x > 0), config, reset)
    with pytest.raises(ValueError, match=r"^7 output beats are not a whole number of steps "
                                         r"of 5 beats$"):
        unpack_outputs([0] * 7, config)
    with pytest.raises(ValueError, match=r"^output 'last' flags do not mark the end of each "
                                         r"step$"):
        unpack_outputs([0] * 5, config)


def test_golden_sequence_restarts_at_resets(rng):
    gate = gate_layer(rng, 6, 4)
    params = lf.derive_params(gate, c_frac=11)
    x, reset = streams(rng, 6, [3, 2])
    h, c = lg.int_lstm_sequence(gate, params, x, reset)
    h_t = c_t = np.zeros((1, 4), np.int64)
    for t in range(5):
        if reset[t]:
            h_t = c_t = np.zeros((1, 4), np.int64)
        c_t, h_t = lg.int_lstm_step(gate, params, x[t:t + 1], h_t, c_t)
        assert np.array_equal(h[t], h_t[0]) and np.array_equal(c[t], c_t[0])
    with pytest.raises(ValueError, match=r"^the first step must reset the state$"):
        lg.int_lstm_sequence(gate, params, x, ~reset)


# -- the closed loop in Amaranth's simulator --------------------------------------------

@pytest.mark.parametrize("inputs, hidden, lanes, input_width, c_frac, empty, stalls", [
    (6, 5, 2, 2, 11, (), 0.0),          # x_t and h share the boundary word
    (8, 4, 1, 4, 7, (), 0.3),           # one lane; c_frac 7: no rounding into the table
    (5, 7, 3, 8, 14, (0, 17, 27), 0.3),  # empty rows; one input word; c_frac 14
    (3, 2, 4, 1, 9, (), 0.0),           # one element per beat; more lanes than rows use
])
def test_step_matches_golden(rng, inputs, hidden, lanes, input_width, c_frac, empty, stalls):
    gate = gate_layer(rng, inputs, hidden, empty=empty)
    params = lf.derive_params(gate, c_frac=c_frac)
    config = LSTMConfig.for_layer(gate, lanes, input_width=input_width)
    x, reset = streams(rng, inputs, [4, 1, 3])
    h, c = run_amaranth(config, load_words(gate, params, config), x, reset, idle=stalls,
                        backpressure=stalls, seed=3)
    h_gold, c_gold = lg.int_lstm_sequence(gate, params, x, reset)
    assert_steps_equal(h, c, h_gold, c_gold)
    assert np.abs(h_gold).max() > 10 and np.abs(c_gold).max() > 2 ** (c_frac - 3)   # not trivial


def test_step_over_the_whole_requantization_range(rng):
    """Biases over the whole int32 range, multipliers over [2^14, 2^15) and shifts from
    1 to 62 (beyond the product's width: z = 0), z clamped both ways, and c saturated
    both ways at c_frac 14 (i, f, g pushed to ±1 on some units)."""
    inputs, hidden = 6, 6
    gate = gate_layer(rng, inputs, hidden, spread=2.0)
    base = lf.derive_params(gate, c_frac=14)
    rows = 4 * hidden
    mag = rng.integers(0, 31, size=rows)
    bias = rng.integers(-(1 << mag), (1 << mag) + 1)
    shift = np.clip(mag + rng.integers(2, 10, size=rows), 1, 62)
    mult = rng.integers(1 << 14, 1 << 15, size=rows)
    shift[[1, 7]], bias[[1, 7]] = 62, [lf.BIAS_MAX, lf.BIAS_MIN]
    shift[[3, 9]], bias[[3, 9]] = 1, [lf.BIAS_MAX, lf.BIAS_MIN]
    # Units 4 and 5: i = f = sigma(8), g = ±tanh(8), so c grows by ±1 per step and clamps.
    for unit, sign in ((4, 1), (5, -1)):
        for gate_i, s in ((0, 1), (1, 1), (2, sign)):
            r = gate_i * hidden + unit
            bias[r] = s * int(np.ceil(4000 * 2.0 ** base.shift[r] / base.mult[r]))
            mult[r], shift[r] = base.mult[r], base.shift[r]
    params = lf.IntLSTMParams(bias, mult, shift, 14)
    config = LSTMConfig.for_layer(gate, 2)
    x, reset = streams(rng, inputs, [5, 2])
    h, c = run_amaranth(config, load_words(gate, params, config), x, reset, backpressure=0.2)
    h_gold, c_gold = lg.int_lstm_sequence(gate, params, x, reset)
    assert_steps_equal(h, c, h_gold, c_gold)
    assert (c_gold == lf.C_MAX).any() and (c_gold == lf.C_MIN).any()
    h_prev = np.vstack([np.zeros((1, hidden), np.int64), h_gold[:-1]]) * ~reset[:, None]
    z = quant.round_shift((spmv_ref(gate, np.concatenate([x, h_prev], axis=1)) + bias) * mult,
                       shift)
    assert (z > lf.Z_MAX).any() and (z < lf.Z_MIN).any() and (z[:, [1, 7]] == 0).all()


@pytest.mark.parametrize("table", ["sigmoid", "tanh"])
def test_corrupted_lookup_entry_is_caught(rng, monkeypatch, table):
    """One lookup entry the golden run uses, changed in the ROM: the outputs differ from
    the golden model's and equal those of a golden model given the same table."""
    inputs, hidden = 6, 5
    gate = gate_layer(rng, inputs, hidden)
    params = lf.derive_params(gate, c_frac=11)
    config = LSTMConfig.for_layer(gate, 2)
    x, reset = streams(rng, inputs, [4])
    h_gold, c_gold = lg.int_lstm_sequence(gate, params, x, reset)
    # The z of unit 0's input gate (sigmoid) or cell input (tanh) at the first step.
    acc = lg.gate_accumulators(gate, x[:1], np.zeros((1, hidden), int))[0]
    r = 0 if table == "sigmoid" else 2 * hidden
    z = int(np.clip(quant.round_shift((acc[r] + params.bias[r]) * params.mult[r], params.shift[r]),
                    lf.Z_MIN, lf.Z_MAX))
    luts = lut_init()
    luts[z - lf.Z_MIN + (0 if table == "sigmoid" else 2048)] += 3000
    h, c = run_amaranth(config, load_words(gate, params, config), x, reset, luts=luts)
    name = "SIGMOID_LUT" if table == "sigmoid" else "TANH_LUT"
    bad = getattr(lf, name).copy()
    bad[z - lf.Z_MIN] += 3000
    monkeypatch.setattr(lf, name, bad)
    h_bad, c_bad = lg.int_lstm_sequence(gate, params, x, reset)
    assert not np.array_equal(c_bad, c_gold)            # the entry matters ...
    assert not np.array_equal(c, c_gold)                # ... the check sees it ...
    assert_steps_equal(h, c, h_bad, c_bad)              # ... and it is exactly that entry


# -- a trained, DARB-pruned char LSTM in Verilator --------------------------------------

@pytest.fixture(scope="module")
def tiny():
    """tests/test_lstm.py's model: hidden 16, briefly trained, DARB-pruned 4×,
    calibrated (about 3 s, seed 0)."""
    import torch

    from darbgen.pruning.lstm import CharLSTM, export_lstm, load_corpus, prune_lstm, train_lm
    from darbgen.pruning.methods import DARB

    threads = torch.get_num_threads()
    torch.set_num_threads(1)           # a second thread waiting for a busy core stalls
    try:
        corpus = load_corpus()
        model = CharLSTM(corpus.vocab_size, 16, seed=0)
        train_lm(model, corpus.train, steps=80, batch=16, seq_len=32, lr=1e-2, seed=0)
        method = DARB(ratio=4)
        prune_lstm(model, corpus.train, corpus.valid[:3000], method, steps=1,
                   finetune_steps=20, seed=0)
    finally:
        torch.set_num_threads(threads)
    gate = export_lstm(model, method).layers[0]
    params = lf.derive_params(gate, lg.calibrate(gate, corpus.train, n_streams=8, steps=100))
    return {"corpus": corpus, "gate": gate, "params": params}


def text_streams(tiny, starts=(0, 700, 1400), length=8):
    """Consecutive streams of validation text: one-hot inputs and resets."""
    inputs, _ = lf.lstm_shape(tiny["gate"])
    ids = np.concatenate([tiny["corpus"].valid[s:s + length] for s in starts])
    reset = np.zeros(ids.size, bool)
    reset[::length] = True
    return lf.one_hot_inputs(ids, inputs), reset


@verilator
def test_trained_lstm_steps_on_chip(tiny):
    """3 streams × 8 characters, closed loop on chip (h_t fed back, c kept on chip,
    reset between streams): h and c after every step equal the golden model's, with
    and without random stalls on both streams."""
    gate, params = tiny["gate"], tiny["params"]
    x, reset = text_streams(tiny)
    h_gold, c_gold = lg.int_lstm_sequence(gate, params, x, reset)
    assert np.abs(h_gold).max() > 50 and np.abs(c_gold).max() > 1000
    run = simulate_lstm(gate, params, x, reset, lanes=4)
    assert_steps_equal(run.h, run.c, h_gold, c_gold)
    config = run.config
    assert run.cycles < len(reset) * (config.positions + config.engine.lane_depth + 100)
    stalled = simulate_lstm(gate, params, x, reset, config, idle=0.3, backpressure=0.3, seed=5)
    assert_steps_equal(stalled.h, stalled.c, h_gold, c_gold)
    assert stalled.cycles > run.cycles


@verilator
def test_corrupted_gate_weight_is_caught_on_chip(tiny):
    """One weight of a recurrent column changed in the load stream: h and c differ from
    the golden model's and equal those of the golden model of the corrupted layer."""
    gate, params = tiny["gate"], tiny["params"]
    inputs, _ = lf.lstm_shape(gate)
    x, reset = text_streams(tiny, starts=(0,), length=6)
    recurrent = np.flatnonzero(gate.columns >= inputs)
    i = int(recurrent[len(recurrent) // 2])
    values = np.array(gate.values)
    values[i] = values[i] + 40 if values[i] < 80 else values[i] - 40
    bad = replace(gate, values=values)
    config = LSTMConfig.for_layer(gate, 4)
    run = simulate_lstm(gate, params, x, reset, config, load=load_words(bad, params, config))
    h_gold, c_gold = lg.int_lstm_sequence(gate, params, x, reset)
    assert not (np.array_equal(run.h, h_gold) and np.array_equal(run.c, c_gold))
    h_bad, c_bad = lg.int_lstm_sequence(bad, params, x, reset)
    assert_steps_equal(run.h, run.c, h_bad, c_bad)
