"""The layer-sequenced processor (issue 14): its contract, its load words, the refusal
of networks that do not fit, and one Verilator build running two networks bit-exactly."""

from dataclasses import replace

import numpy as np
import pytest

from conftest import random_network
from darbgen.config import ConfigError
from darbgen import datasets
from darbgen.format import Artifact
from darbgen.network import plan
from darbgen.packing import schedule, unpack_fields
from darbgen.processor import ProcessorConfig, Target, load_words
from darbgen.sim.golden import network_ref
from darbgen.sim.runner import simulate_processor, simulator_available
from test_conv import random_cnn

needs_verilator = pytest.mark.skipif(not simulator_available("verilator"),
                                     reason="verilator not installed")


@pytest.fixture
def small(rng):
    """A random 24-20-12-5 network (two empty rows in fc1) and the smallest processor
    for it at 2 lanes."""
    net = plan(random_network(rng))
    return net, ProcessorConfig.for_plans([net], lanes=2)


# -- the contract --------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"lane_slots": 0}, r"^lane_slots must be a positive integer, not 0$"),
    ({"table_depth": True}, r"^table_depth must be a positive integer, not True$"),
    ({"max_steps": 257}, r"^max_steps must be at most 256, not 257$"),
    ({"lane_slots": 25}, r"^lane_slots 25 exceeds the activation depth 24 \(a step has at "
                         r"most that many rows\)$"),
    ({"engine": "4 lanes"}, r"^engine must be an EngineConfig, not '4 lanes'$"),
])
def test_config_errors(small, change, message):
    _, config = small
    with pytest.raises(ConfigError, match=message):
        replace(config, **change)


def test_for_plans_sizes_every_capacity_to_the_network(small):
    net, c = small
    scheds = [schedule(q.layer, 2) for q in net.layers]
    assert c.lane_depth == sum(s.lane_beats for s in scheds).max()
    # A header per row and one end marker per step, in the fullest lane.
    assert c.lane_rows == sum(s.lane_counts + 1 for s in scheds).max()
    assert c.lane_slots == max(s.slots for s in scheds)
    assert c.act_depth == 24 and c.max_steps == 3 and c.capacity == 2 * c.lane_depth
    empty = sum(int((q.layer.row_nnz == 0).sum()) for q in net.layers)
    assert c.table_depth == sum(s.slots * 2 for s in scheds) + empty


def test_load_words_hold_markers_table_and_program(small):
    net, c = small
    words = unpack_fields(c.load_fields, load_words(net, c))
    targets = words["target"].tolist()
    assert [t for i, t in enumerate(targets) if i == 0 or targets[i - 1] != t] == \
        [Target.LANES, Target.TABLE, Target.PROGRAM]
    assert words["first"].tolist() == [1] + [0] * (len(targets) - 1)
    lane = unpack_fields(c.engine.load_fields, words["data"][words["target"] == Target.LANES])
    assert lane["first"].tolist() == [1] + [0] * (len(lane["first"]) - 1)
    # Every lane: per step its rows' headers, then a marker (an all-zero header).
    for i in range(c.lanes):
        headers = lane["data"][(lane["lane"] == i) & (lane["header"] == 1)]
        counts = [len(schedule(q.layer, 2).lane_row_lists[i]) for q in net.layers]
        marks = np.cumsum(np.array(counts) + 1) - 1
        assert np.flatnonzero(headers == 0).tolist() == marks.tolist()
    steps = unpack_fields(c.step_fields, words["data"][words["target"] == Target.PROGRAM])
    assert steps["rows"].tolist() == [20, 12, 5]
    assert steps["relu"].tolist() == [1, 0, 0] and steps["last"].tolist() == [0, 0, 1]
    assert steps["first"].tolist() == [1, 0, 0]
    table = unpack_fields(c.requant_fields, words["data"][words["target"] == Target.TABLE])
    assert len(table["dest"]) == steps["table_end"][-1] == c.table_depth
    # The last step passes `acc + bias` through: multiplier 1, shift 0.
    final = slice(steps["table_end"][1], None)
    assert (table["mult"][final] == table["valid"][final]).all()
    assert (table["shift"][final] == 0).all()
    assert table["first"].tolist() == [1] + [0] * (len(table["first"]) - 1)


# -- networks that do not fit --------------------------------------------------------------

def lane_totals(net, lanes, what):
    """Per layer, the cumulative beats (or headers with markers) of every lane."""
    per = [schedule(q.layer, lanes) for q in net.layers]
    return np.cumsum([s.lane_beats if what == "beats" else s.lane_counts + 1 for s in per],
                     axis=0)


def test_refusals_name_the_layer_lane_and_capacity(small):
    net, c = small
    beats = lane_totals(net, 2, "beats")
    lane = int(np.argmax(beats[1]))
    cap = int(beats[1][lane]) - 1           # fc1 fits, fc2 does not
    with pytest.raises(ConfigError, match=rf"^layer 'fc2' needs {beats[1][lane]:,} beats in "
                                          rf"lane {lane} \({beats[0][lane]:,} of them for the "
                                          rf"layers before it\), the processor holds {cap:,}$"):
        load_words(net, replace(c, engine=replace(c.engine, lane_depth=cap)))
    lane = int(np.argmax(beats[0]))
    with pytest.raises(ConfigError, match=rf"^layer 'fc1' needs {beats[0][lane]:,} beats in "
                                          rf"lane {lane}, the processor holds 3$"):
        replace(c, engine=replace(c.engine, lane_depth=3)).check_plan(net)
    headers = lane_totals(net, 2, "headers")
    lane = int(np.argmax(headers[0]))
    with pytest.raises(ConfigError, match=rf"^layer 'fc1' needs {headers[0][lane]} row headers "
                                          rf"in lane {lane}, the processor holds 2$"):
        replace(c, engine=replace(c.engine, lane_rows=2)).check_plan(net)
    with pytest.raises(ConfigError, match=rf"^layer 'fc3' needs {c.table_depth} requantizer "
                                          rf"entries, the processor holds {c.table_depth - 1}$"):
        replace(c, table_depth=c.table_depth - 1).check_plan(net)
    with pytest.raises(ConfigError, match=r"^the network has 3 layers, the processor runs at "
                                          r"most 2 steps$"):
        replace(c, max_steps=2).check_plan(net)
    with pytest.raises(ConfigError, match=r"^layer 'fc1' has 24 inputs, the processor's "
                                          r"activations hold 20$"):
        replace(c, engine=replace(c.engine, max_cols=20), lane_slots=1).check_plan(net)
    slots = schedule(net.layers[0].layer, 2).slots
    with pytest.raises(ConfigError, match=rf"^layer 'fc1' runs {slots} rows in one lane, the "
                                          rf"processor's lanes hold {slots - 1} per layer$"):
        replace(c, lane_slots=slots - 1).check_plan(net)
    with pytest.raises(ConfigError, match=r"^the network takes 6-bit inputs, the processor "
                                          r"8-bit$"):
        c.check_plan(replace(net, input_bits=6))


def test_refusals_of_layer_formats(small, rng):
    _, c = small
    with pytest.raises(ConfigError, match=r"^layer 'fc1' uses block size 16, the engine "
                                          r"supports 2, 4, 8$"):
        c.check_plan(plan(random_network(rng, block_sizes=(16,))))
    cnn = plan(random_cnn(rng))
    with pytest.raises(ConfigError, match=r"^layer 'conv1' is a convolution: this processor "
                                          r"has no im2col gather \(map_depth 0\), it runs "
                                          r"Linear layers only$"):
        replace(c, max_steps=4).check_plan(cnn)


# -- one processor, two networks, in Verilator ---------------------------------------------

def lenet_300_100(rng):
    """A random DARB 784-300-100-10 network (LeNet-300-100's shape), blocks of 8 to 32
    with one weight kept per block: about 19.5k kept weights."""
    return plan(random_network(rng, dims=(784, 300, 100, 10), block_sizes=(8, 16, 32)))


@pytest.fixture(scope="module")
def two_networks(digits_mlp):
    """digits-mlp (64-300-100-10, 16x) and a larger random network, and the one
    processor at 4 lanes that holds either."""
    digits = plan(Artifact.load(digits_mlp[0]))
    big = lenet_300_100(np.random.default_rng(20261207))
    return digits, big, ProcessorConfig.for_plans([digits, big], lanes=4)


@needs_verilator
def test_one_processor_runs_digits_mlp_then_a_larger_network(two_networks, rng):
    digits, big, config = two_networks
    x, _ = datasets.test_split("digits")
    xq = digits.quantize_input(x[:24])
    run = simulate_processor(digits, xq, config, idle=0.2, backpressure=0.3, seed=5)
    np.testing.assert_array_equal(run.logits, network_ref(digits, xq))
    # The same config is the same Verilog: the build is reused, only the load differs.
    xb = rng.integers(-128, 128, size=(3, big.cols))
    run_big = simulate_processor(big, xb, config)
    np.testing.assert_array_equal(run_big.logits, network_ref(big, xb))
    assert run_big.config is run.config
    assert sum(q.layer.nnz for q in big.layers) > 5 * sum(q.layer.nnz for q in digits.layers)


@needs_verilator
def test_lanes_without_rows_in_a_step(two_networks, rng):
    """Two steps on the three-step processor: a first layer with weights in 2 of its 40
    rows (two lanes hold only their end marker; 38 rows are the requantizer's tail, sum
    0) and a last layer of 3 rows on 4 lanes."""
    _, _, config = two_networks
    seed = int(rng.integers(1 << 31))

    def network(empty):
        return random_network(np.random.default_rng(seed), dims=(64, 40, 3), empty=empty,
                              relu=(False,), block_sizes=(8, 16, 32))

    # Keep two fc1 rows that fc2 reads, so that their sums reach the logits.
    read = np.flatnonzero(network(()).layers[1].dequantized().any(axis=0))
    net = plan(network([r for r in range(40) if r not in read[:2]]))
    assert [schedule(q.layer, 4).lane_counts.tolist() for q in net.layers] == \
        [[1, 1, 0, 0], [1, 1, 1, 0]]
    x = rng.integers(-128, 128, size=(3, 64))
    run = simulate_processor(net, x, config)
    np.testing.assert_array_equal(run.logits, network_ref(net, x))


def one_changed_word(net, config, layer, change):
    """The load of ``net`` with the one word that ``change`` (a new ``layer``) alters,
    and the golden network with that change."""
    changed = plan(Artifact([change if q.layer.name == layer else q.layer
                             for q in net.layers]), net.input_bits)
    a, b = load_words(net, config), load_words(changed, config)
    diff = [i for i, (u, v) in enumerate(zip(a, b)) if u != v]
    assert len(a) == len(b) and len(diff) == 1
    return [b[i] if i == diff[0] else w for i, w in enumerate(a)], changed


@needs_verilator
@pytest.mark.parametrize("target", ["value", "offset"])
def test_processor_check_fails_on_one_corrupted_word(two_networks, rng, target):
    digits, _, config = two_networks
    x = rng.integers(0, 128, size=(4, digits.cols))
    fc3 = digits.layers[-1].layer
    golden = network_ref(digits, x)
    # The first entry of fc3 whose change moves a logit: a weight's value, or the
    # offset of a block that keeps one weight (another in-block column).
    for i in range(fc3.nnz):
        if target == "value":
            values = fc3.values.copy()
            values[i] = ~values[i]                      # stays in range: -v - 1
            change = replace(fc3, values=values)
        else:
            row = int(np.searchsorted(fc3.row_starts, i, side="right")) - 1
            b = 1 << int(fc3.log2_block_sizes[row])
            if fc3.keep[row] != 1:
                continue
            offsets = fc3.offsets.copy()
            offsets[i] = (offsets[i] + 1) % b
            change = replace(fc3, offsets=offsets)
        words, changed = one_changed_word(digits, config, fc3.name, change)
        if not np.array_equal(network_ref(changed, x), golden):
            break
    run = simulate_processor(digits, x, config, load=words)
    assert not np.array_equal(run.logits, golden)
    np.testing.assert_array_equal(run.logits, network_ref(changed, x))


def test_memories_list_every_bank(small):
    _, c = small
    mem = c.memories
    assert mem["beats"] == (2, c.lane_depth, 8 + 3)        # int8 value, offset of blocks ≤ 8
    assert mem["x"] == (2, 12, 16) and mem["logits"] == (1, 24, 32)
    assert mem["table"][:2] == (1, c.table_depth) and mem["program"][:2] == (1, 3)


@needs_verilator
@pytest.mark.slow
def test_icebreaker_sized_processor_holds_40k_weights(digits_mlp, rng):
    """The iCEBreaker plan of docs/processor.md: 4 lanes of 16,384 beats (an SPRAM each),
    running a random 784-300-100-10 of over 40k kept weights and digits-mlp exactly."""
    digits = plan(Artifact.load(digits_mlp[0]))
    big = plan(random_network(rng, dims=(784, 300, 100, 10), block_sizes=(4, 8)))
    assert sum(q.layer.nnz for q in big.layers) > 40_000
    sized = ProcessorConfig.for_plans([digits, big], lanes=4)
    config = replace(sized, engine=replace(sized.engine, lane_depth=16384))
    assert config.capacity == 65536
    for net in (big, digits):
        x = rng.integers(-128, 128, size=(2, net.cols))
        np.testing.assert_array_equal(simulate_processor(net, x, config).logits,
                                      network_ref(net, x))
