"""The LSTM step on the layer-sequenced processor (darbgen/processor_lstm.py,
hdl/processor_lstm.py): its contract and refusals, the closed loop in Amaranth's
simulator over random DARB gate layers smaller than the cell, and in Verilator one
processor build that runs a random MLP and then the trained, DARB-pruned char LSTM
(hidden 16) with resets: every h and c equal to lstm_golden; a corrupted weight or cell
table entry is caught."""

from dataclasses import replace
from unittest.mock import patch

import numpy as np
import pytest
from amaranth.sim import Simulator

from conftest import random_network
from test_lstm_hw import assert_steps_equal, gate_layer, streams, text_streams, tiny  # noqa: F401
from darbgen import lstm_format as lf
from darbgen.config import ConfigError
from darbgen.hdl.lstm import FoldedLUT
from darbgen.hdl.processor import Processor
from darbgen.lstm import FOLDED_BITS, folded_lookup, folded_lut_init
from darbgen.lstm import cell_table
from darbgen.network import plan
from darbgen.packing import schedule, unpack_fields
from darbgen.processor import ProcessorConfig, StepKind, Target
from darbgen.processor_lstm import (cell_fields, check_lstm, lstm_input_words, lstm_load_words,
                                    unpack_lstm_outputs)
from darbgen.sim import lstm_golden as lg
from darbgen.sim.amaranth_tb import drive_streams
from darbgen.sim.golden import network_ref
from darbgen.sim.runner import simulate_processor, simulate_processor_lstm, simulator_available

needs_verilator = pytest.mark.skipif(not simulator_available("verilator"),
                                     reason="verilator not installed")


@pytest.fixture
def mixed(rng):
    """A random 24-20-12-5 MLP, a random gate layer (7 inputs, 5 hidden, one empty row)
    and the smallest 2-lane processor that runs either."""
    net = plan(random_network(rng))
    gate = gate_layer(rng, 7, 5, empty=(3,))
    return net, gate, ProcessorConfig.for_plans([net], lanes=2, gates=[gate])


# -- the contract ----------------------------------------------------------------------

def test_config_sizes_the_cell_and_derives_its_fields(mixed):
    net, gate, c = mixed
    sched = schedule(gate, 2)
    assert c.lstm_hidden == 5 and c.lstm_table == 2 * sched.slots + 1     # + the empty row
    assert (int(StepKind.LSTM), int(Target.CELL)) == (2, 4)
    assert c.step_fields[0] == ("kind", ("u", 2))
    assert [n for n, _ in c.step_fields][-3:] == ["units", "inputs", "c_frac"]
    assert c.input_fields[-1] == ("reset", ("u", 1))
    mem = c.memories
    assert mem["lut"] == (1, 1736, 15) and mem["gates"] == (1, 5, 64) and mem["cell"] == (1, 5, 16)
    assert mem["cell_table"][:2] == (1, c.lstm_table)
    # Without a cell: no LSTM fields, memories or JSON keys (the digest is unchanged).
    plain = ProcessorConfig.for_plans([net], lanes=2)
    assert (plain.lstm_hidden, plain.lstm_table) == (0, 0)
    assert "units" not in dict(plain.step_fields) and "reset" not in dict(plain.input_fields)
    assert "lut" not in plain.memories and "lstm_hidden" not in plain.to_json()
    assert replace(c, lstm_hidden=0, lstm_table=0).digest() != c.digest()


@pytest.mark.parametrize("change, message", [
    ({"lstm_hidden": -1}, r"^lstm_hidden must be a non-negative integer, not -1$"),
    ({"lstm_table": 0}, r"^lstm_hidden and lstm_table must both be 0 \(no LSTM cell\) or both "
                        r"positive, not 5 and 0$"),
    ({"lstm_hidden": 13}, r"^lstm_hidden 13 needs an activation depth of at least 26 \(x_t "
                          r"and h\), not 24$"),
])
def test_config_errors(mixed, change, message):
    _, _, c = mixed
    with pytest.raises(ConfigError, match=message):
        replace(c, **change)


def test_config_needs_8_bit_inputs_for_h(mixed):
    _, _, c = mixed
    with pytest.raises(ConfigError, match=r"^an LSTM cell needs 8-bit inputs to hold h, not "
                                          r"6-bit$"):
        replace(c, engine=replace(c.engine, input_bits=6))


def test_refusals_name_the_layer_and_capacity(mixed, rng):
    net, gate, c = mixed
    params = lf.derive_params(gate, c_frac=10)
    with pytest.raises(ConfigError, match=r"^layer 'lstm.l0' is an LSTM step: the processor "
                                          r"has no LSTM cell$"):
        lstm_load_words(gate, params, replace(c, lstm_hidden=0, lstm_table=0))
    with pytest.raises(ConfigError, match=r"^layer 'lstm.l0' has 5 hidden units, the "
                                          r"processor's LSTM cell holds 4$"):
        check_lstm(gate, params, replace(c, lstm_hidden=4))
    with pytest.raises(ConfigError, match=rf"^layer 'lstm.l0' needs {c.lstm_table} LSTM cell "
                                          rf"entries, the processor holds {c.lstm_table - 1}$"):
        check_lstm(gate, params, replace(c, lstm_table=c.lstm_table - 1))
    beats = schedule(gate, 2).lane_beats
    with pytest.raises(ConfigError, match=rf"^layer 'lstm.l0' needs {beats.max()} beats in lane "
                                          rf"{np.argmax(beats)}, the processor holds 3$"):
        check_lstm(gate, params, replace(c, engine=replace(c.engine, lane_depth=3)))
    wide = gate_layer(rng, 20, 5)
    with pytest.raises(ConfigError, match=r"^layer 'lstm.l0' has 25 inputs \(x_t and h\), the "
                                          r"processor's activations hold 24$"):
        check_lstm(wide, lf.derive_params(wide, c_frac=10), c)
    other = lf.derive_params(gate_layer(rng, 8, 4), c_frac=10)
    with pytest.raises(ConfigError, match=r"^layer 'lstm.l0' has 5 hidden units, its "
                                          r"parameters 4$"):
        check_lstm(gate, other, c)


def test_load_words_hold_lanes_cell_table_and_one_step(mixed):
    _, gate, c = mixed
    params = lf.derive_params(gate, c_frac=9)
    f = unpack_fields(c.load_fields, lstm_load_words(gate, params, c))
    targets = f["target"].tolist()
    assert [t for i, t in enumerate(targets) if i == 0 or targets[i - 1] != t] == \
        [Target.LANES, Target.CELL, Target.PROGRAM]
    table = unpack_fields(cell_fields(c), f["data"][f["target"] == Target.CELL])
    ref = cell_table(params, schedule(gate, 2), gate)
    for name in ref:
        assert np.array_equal(table[name], ref[name]), name
    step = unpack_fields(c.step_fields, f["data"][f["target"] == Target.PROGRAM])
    assert {k: int(v[0]) for k, v in step.items()} == {
        "kind": 2, "rows": 5, "slots": schedule(gate, 2).slots, "table_end": 0, "relu": 0,
        "last": 1, "first": 1, "units": 5, "inputs": 7, "c_frac": 9}
    # A processor without a gather carries none of its step fields.
    assert not c.has_gather


def test_input_words_clear_h_only_on_a_reset(mixed, rng):
    _, gate, c = mixed                               # input_width 2
    x, reset = streams(rng, 7, [2, 1])
    f = unpack_fields(c.input_fields, lstm_input_words(x, reset, c, gate))
    # A reset sends [x_t; 0]: 12 elements in 6 words; otherwise x_t: 7 elements in 4.
    assert f["last"].tolist() == [0] * 5 + [1] + [0] * 3 + [1] + [0] * 5 + [1]
    assert f["reset"].tolist() == [1] * 6 + [0] * 4 + [1] * 6
    assert np.array_equal(f["x"][:6].reshape(-1), np.r_[x[0], np.zeros(5, int)])
    with pytest.raises(ValueError, match=r"^the first step must reset the state$"):
        lstm_input_words(x, ~reset, c, gate)
    with pytest.raises(ValueError, match=r"^x must be between -128 and 127, not 1..128$"):
        lstm_input_words(x + 1, reset, c, gate)
    with pytest.raises(ValueError, match=r"^7 output beats are not a whole number of steps of "
                                         r"5 beats$"):
        unpack_lstm_outputs([0] * 7, c, 5)


# -- the folded lookup ROM ---------------------------------------------------------------

def test_folded_lut_equals_the_contract_s_tables_at_every_input():
    """The processor's cell reads sigmoid and tanh from a ROM folded by their symmetries
    (1,736 entries of 15 bits, not 4,096 of 16): in numpy and in gateware, its result is
    SIGMOID_LUT and TANH_LUT at every z of both tables."""
    z = np.arange(lf.Z_MIN, lf.Z_MAX + 1)
    assert len(folded_lut_init()) == 1736 and max(folded_lut_init()) < 1 << FOLDED_BITS
    assert np.array_equal(folded_lookup(z, tanh=False), lf.SIGMOID_LUT)
    assert np.array_equal(folded_lookup(z, tanh=True), lf.TANH_LUT)
    dut, got = FoldedLUT(), {False: [], True: []}

    async def tb(ctx):
        for tanh in (False, True):
            ctx.set(dut.tanh, tanh)
            ctx.set(dut.en, 1)
            for v in z:
                ctx.set(dut.z, int(v))
                await ctx.tick()
                got[tanh].append(ctx.get(dut.data))
        # Without en the output holds.
        ctx.set(dut.en, 0)
        ctx.set(dut.z, 0)
        await ctx.tick()
        got[True].append(ctx.get(dut.data))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert np.array_equal(got[False], lf.SIGMOID_LUT)
    assert np.array_equal(got[True], np.r_[lf.TANH_LUT, lf.TANH_LUT[-1]])


def test_a_folded_lut_entry_changed_is_seen():
    """The comparison above can fail: a ROM with one entry changed differs at both signs
    of its z (the folding reads one entry for z and -z)."""
    rom = np.asarray(folded_lut_init())
    rom[300] += 1
    z = np.arange(lf.Z_MIN, lf.Z_MAX + 1)
    with patch("darbgen.lstm.folded_lut_init", return_value=rom.tolist()):
        bad = folded_lookup(z, tanh=False)
    assert np.flatnonzero(bad != lf.SIGMOID_LUT).tolist() == [-300 - lf.Z_MIN, 300 - lf.Z_MIN]


def test_the_cell_asks_for_lut_ram_on_an_ecp5_only(mixed):
    """On an ECP5 platform the cell's table, gate and cell-state memories ask Yosys for
    LUT RAM (its DP16KD hold the lanes' beats); the folded ROM stays block RAM."""
    from types import SimpleNamespace

    from amaranth.back import rtlil

    from darbgen.hdl.lstm import LSTMCell
    from darbgen.hdl.processor_lstm import lut_ram
    from darbgen.processor_lstm import cell_config

    _, _, c = mixed
    assert lut_ram(SimpleNamespace(family="ecp5")) and not lut_ram(None)
    assert not lut_ram(SimpleNamespace(family="ice40"))
    for ask, count in ((False, 0), (True, 3)):
        cell = LSTMCell(cell_config(c), positions=c.lstm_table, dynamic=True, compact=True,
                        lut_ram=ask)
        assert rtlil.convert(cell).count('attribute \\ram_style "distributed"') == count


# -- the closed loop in Amaranth's simulator -------------------------------------------

@pytest.mark.parametrize("inputs, hidden, lanes, input_width, stalls", [
    (7, 5, 2, 2, 0.3),       # x_t ends inside a word: only its elements are written
    (6, 3, 3, 4, 0.0),       # a smaller layer than the cell (8 units), another processor
])
def test_lstm_step_matches_golden(rng, inputs, hidden, lanes, input_width, stalls):
    gate = gate_layer(rng, inputs, hidden, empty=(1,))
    params = lf.derive_params(gate, c_frac=11)
    big = gate_layer(rng, 9, 8)
    config = ProcessorConfig.for_plans([plan(random_network(rng))], lanes,
                                       input_width=input_width, gates=[gate, big])
    x, reset = streams(rng, inputs, [3, 1, 2])
    run = drive_streams(Processor(config), lstm_load_words(gate, params, config),
                        lstm_input_words(x, reset, config, gate), len(reset) * hidden,
                        idle=stalls, backpressure=stalls, seed=4, max_cycles=20_000)
    h, c = unpack_lstm_outputs(run.beats, config, hidden)
    h_gold, c_gold = lg.int_lstm_sequence(gate, params, x, reset)
    assert_steps_equal(h, c, h_gold, c_gold)
    assert np.abs(h_gold).max() > 10                  # not trivial


# -- one processor build: an MLP, then the trained char LSTM, in Verilator ---------------

@pytest.fixture(scope="module")
def shared(tiny):  # noqa: F811
    """A random 101-64-10 MLP and the one 4-lane processor that runs it and the trained
    hidden-16 char LSTM step."""
    net = plan(random_network(np.random.default_rng(7), dims=(101, 64, 10), empty=(),
                              relu=(True,), block_sizes=(4, 8, 16)))
    return net, ProcessorConfig.for_plans([net], lanes=4, gates=[tiny["gate"]])


@needs_verilator
def test_one_processor_runs_an_mlp_and_the_char_lstm(shared, tiny, rng):  # noqa: F811
    net, config = shared
    xm = rng.integers(-128, 128, size=(3, net.cols))
    run = simulate_processor(net, xm, config, backpressure=0.2, seed=2)
    np.testing.assert_array_equal(run.logits, network_ref(net, xm))
    gate, params = tiny["gate"], tiny["params"]
    x, reset = text_streams(tiny, starts=(0, 700), length=6)
    h_gold, c_gold = lg.int_lstm_sequence(gate, params, x, reset)
    assert np.abs(h_gold).max() > 50 and np.abs(c_gold).max() > 1000
    # The same config is the same Verilog: one build, only the load differs.
    lstm = simulate_processor_lstm(gate, params, x, reset, config, idle=0.2, backpressure=0.3,
                                   seed=3)
    assert_steps_equal(lstm.h, lstm.c, h_gold, c_gold)
    # ... and back to the MLP on the same build.
    again = simulate_processor(net, xm, config)
    np.testing.assert_array_equal(again.logits, network_ref(net, xm))


@needs_verilator
@pytest.mark.parametrize("fault", ["weight", "bias"])
def test_a_corrupted_weight_or_cell_entry_is_caught(shared, tiny, fault):  # noqa: F811
    """One recurrent weight, or one gate row's bias in the cell's table, changed in the
    load: h and c differ from the golden model's and equal those of the golden model of
    the changed layer."""
    _, config = shared
    gate, params = tiny["gate"], tiny["params"]
    inputs, hidden = lf.lstm_shape(gate)
    x, reset = text_streams(tiny, starts=(0,), length=5)
    bad_gate, bad_params = gate, params
    if fault == "weight":
        recurrent = np.flatnonzero(gate.columns >= inputs)
        i = int(recurrent[len(recurrent) // 2])
        values = np.array(gate.values)
        values[i] = values[i] + 40 if values[i] < 80 else values[i] - 40
        bad_gate = replace(gate, values=values)
    else:
        bias = params.bias.copy()
        bias[2 * hidden + 3] += 1 << 20                  # unit 3's cell input g
        bad_params = replace(params, bias=bias)
    run = simulate_processor_lstm(gate, params, x, reset, config,
                                  load=lstm_load_words(bad_gate, bad_params, config))
    h_gold, c_gold = lg.int_lstm_sequence(gate, params, x, reset)
    assert not (np.array_equal(run.h, h_gold) and np.array_equal(run.c, c_gold))
    h_bad, c_bad = lg.int_lstm_sequence(bad_gate, bad_params, x, reset)
    assert_steps_equal(run.h, run.c, h_bad, c_bad)
