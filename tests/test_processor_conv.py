"""Convolution steps on the layer-sequenced processor (issue 14): the gather's contract,
its refusals, and one Verilator build running digits-cnn, a random CNN (padding, stride,
pooling) and digits-mlp bit-exactly, with corrupted loads caught."""

from dataclasses import replace

import numpy as np
import pytest

from conftest import random_layer, random_network
from darbgen import datasets
from darbgen.config import ConfigError
from darbgen.format import Artifact
from darbgen.network import plan
from darbgen.packing import pack_fields, unpack_fields
from darbgen.processor import GatherTable, ProcessorConfig, StepKind, Target, load_words
from darbgen.processor_conv import (GATHER_CAPACITIES, check_scratchpad, conv_layout,
                                    gather_fields, gather_words)
from darbgen.sim.golden import network_ref
from darbgen.sim.runner import simulate_processor, simulator_available
from darbgen.conv import ConvSpec
from test_conv import float_forward, random_cnn

needs_verilator = pytest.mark.skipif(not simulator_available("verilator"),
                                     reason="verilator not installed")


@pytest.fixture
def cnn(rng):
    """The random CNN of tests/test_conv.py (3×9×8 input; conv1 3×3 padding 1, pool 2;
    conv2 3×2 padding (1, 0), stride (1, 2), pool 2; fc1 with ReLU; fc2) and the smallest
    processor for it and a random MLP at 2 lanes."""
    net = plan(random_cnn(rng))
    mlp = plan(random_network(rng))
    return net, mlp, ProcessorConfig.for_plans([net, mlp], lanes=2)


# -- the contract --------------------------------------------------------------------------

def test_for_plans_sizes_the_gather_to_the_network(cnn):
    net, mlp, c = cnn
    lay = conv_layout(net, c.engine.input_width)
    assert lay.gathered == [True, True, True, False]
    # Regions back to back: conv1's padded input, conv1's and conv2's pre-pool outputs.
    # conv1's input: 3 planes of (9 + 2) × (8 + 2); conv1's output before its 2×2 pool
    # with conv2's border of (1, 0) pooled pixels: 4 planes of (4 + 2)·2 × 4·2; conv2's
    # output before its pool: 5 planes of 2·2 × 1·2.
    assert lay.regions[:3] == [0, 3 * 11 * 10, 330 + 4 * 12 * 8]
    assert c.map_depth == lay.maps[-1] == 714 + 5 * 4 * 2
    # The image's 216 elements, conv1's 9·8 positions, conv2's 4·2, fc1's one.
    assert c.gather_positions == 216 + 72 + 8 + 1
    assert c.gather_columns == 27 + 24 + 10 and c.gather_pools == 1 + 4 + 4
    # A processor for Linear layers only has no gather, and its JSON (digest) is unchanged.
    plain = ProcessorConfig.for_plans([mlp], lanes=2)
    assert not plain.has_gather and "map_depth" not in plain.to_json()
    assert "scratchpad" not in plain.memories
    assert c.memories["scratchpad"] == (1, c.map_depth, 8)
    assert c.memories["positions"][2] == 2 * c.map_bits + 1


@pytest.mark.parametrize("change, message", [
    ({"map_depth": -1}, r"^map_depth must be a non-negative integer, not -1$"),
    ({"gather_pools": 0}, r"^the gather capacities must be all 0 \(no gather\) or all positive, "
                          r"not map_depth \d+, gather_positions \d+, gather_columns \d+, "
                          r"gather_pools 0$"),
])
def test_gather_capacity_errors(cnn, change, message):
    with pytest.raises(ConfigError, match=message):
        replace(cnn[2], **change)


def test_load_words_hold_kinds_and_gather_tables(cnn):
    net, _, c = cnn
    words = unpack_fields(c.load_fields, load_words(net, c))
    targets = words["target"].tolist()
    assert [t for i, t in enumerate(targets) if i == 0 or targets[i - 1] != t] == \
        [Target.LANES, Target.TABLE, Target.GATHER, Target.PROGRAM]
    steps = unpack_fields(c.step_fields, words["data"][words["target"] == Target.PROGRAM])
    assert steps["kind"].tolist() == [StepKind.CONV] * 3 + [StepKind.LINEAR]
    assert steps["positions"].tolist() == [72, 8, 1, 0]
    assert steps["to_map"].tolist() == [1, 1, 0, 0]
    assert steps["cols"].tolist() == [27, 24, 10, 0] and steps["pools"].tolist() == [1, 4, 4, 0]
    gather = unpack_fields(gather_fields(c), words["data"][words["target"] == Target.GATHER])
    counts = [int((gather["table"] == t).sum()) for t in GatherTable]
    assert counts == [c.gather_positions, c.gather_columns, c.gather_pools]
    assert gather["first"].tolist() == [1] + [0] * (len(gather["first"]) - 1)
    # The image's elements go inside conv1's zero border: (1, 1) of a 11×10 plane.
    assert gather["offset"][:2].tolist() == [11, 12] and not gather["skip"][:216].any()


def test_refusals_name_the_layer_and_the_gather_capacity(cnn):
    net, mlp, c = cnn
    with pytest.raises(ConfigError, match=r"^layer 'conv1' is a convolution: this processor has "
                                          r"no im2col gather \(map_depth 0\), it runs Linear "
                                          r"layers only$"):
        replace(c, **{name: 0 for name in GATHER_CAPACITIES}).check_plan(net)
    with pytest.raises(ConfigError, match=r"^layer 'conv2' needs 714 scratchpad entries \(330 "
                                          r"of them for the input and the layers before it\), "
                                          r"the processor holds 713$"):
        replace(c, map_depth=713).check_plan(net)
    with pytest.raises(ConfigError, match=r"^layer 'conv1' needs 288 gather positions \(216 of "
                                          r"them for the input and the layers before it\), the "
                                          r"processor holds 287$"):
        load_words(net, replace(c, gather_positions=287))
    with pytest.raises(ConfigError, match=r"^layer 'fc1' needs 61 gather columns \(51 of them "
                                          r"for the input and the layers before it\), the "
                                          r"processor holds 60$"):
        replace(c, gather_columns=60).check_plan(net)
    with pytest.raises(ConfigError, match=r"^layer 'fc1' needs 9 pool offsets \(5 of them for "
                                          r"the input and the layers before it\), the "
                                          r"processor holds 8$"):
        replace(c, gather_pools=8).check_plan(net)


# -- one processor: digits-cnn, a random CNN, digits-mlp, in Verilator ------------------------

def linear_then_conv(rng):
    """fc0 (12 → 2×4×4, ReLU) → conv (3@3×3, padding 1, pool 2) → fc2: a Linear layer's
    rows written into a map (its elements, inside the conv's zero border)."""
    fc0 = replace(random_layer(rng, 32, 12, [2, 4], name="fc0"), activation="relu")
    conv = random_layer(rng, 3, 18, [2, 4], name="conv")
    conv = replace(conv, shape=(3, 2, 3, 3), conv=ConvSpec(4, 1, 1, 2), activation="relu")
    fc2 = replace(random_layer(rng, 4, 12, [2, 4], name="fc2"), activation="none")
    layers = [replace(l, bias=rng.normal(0, 2, size=l.rows).astype(np.float32))
              for l in (fc0, conv, fc2)]
    x = rng.integers(0, 128, size=(16, 12))
    scales = [0.05] + float_forward(layers, x * 0.05, calibrate=True)
    return plan(Artifact([replace(l, input_scale=s) for l, s in zip(layers, scales)]))


@pytest.fixture(scope="module")
def networks(digits_mlp, digits_cnn):
    """digits-cnn (DARB 8×), the random CNN, digits-mlp (DARB 16×), a Linear layer
    feeding a convolution, and the one 4-lane processor that runs each of them."""
    cnn_net = plan(Artifact.load(digits_cnn[0]))
    small = plan(random_cnn(np.random.default_rng(20261207)))
    mlp = plan(Artifact.load(digits_mlp[0]))
    mixed = linear_then_conv(np.random.default_rng(20261208))
    return cnn_net, small, mlp, mixed, ProcessorConfig.for_plans([cnn_net, small, mlp, mixed],
                                                                 lanes=4)


@needs_verilator
def test_one_processor_runs_two_cnns_and_an_mlp(networks, rng):
    digits_cnn, small, mlp, mixed, config = networks
    x, _ = datasets.test_split("digits")
    xq = digits_cnn.quantize_input(x[:2])
    run = simulate_processor(digits_cnn, xq, config, idle=0.2, backpressure=0.3, seed=3)
    np.testing.assert_array_equal(run.logits, network_ref(digits_cnn, xq))
    # The same config is the same Verilog: the build is reused, only the load differs.
    xs = rng.integers(-128, 128, size=(2, small.cols))
    np.testing.assert_array_equal(simulate_processor(small, xs, config).logits,
                                  network_ref(small, xs))
    xm = mlp.quantize_input(x[:4])
    run_mlp = simulate_processor(mlp, xm, config)
    np.testing.assert_array_equal(run_mlp.logits, network_ref(mlp, xm))
    assert run_mlp.config is run.config
    xl = rng.integers(-128, 128, size=(2, mixed.cols))
    np.testing.assert_array_equal(simulate_processor(mixed, xl, config).logits,
                                  network_ref(mixed, xl))


def changed_load(net, config, layer, change):
    """The load of ``net`` with ``layer`` replaced by ``change``, and its golden network."""
    changed = plan(Artifact([change if q.layer.name == layer else q.layer
                             for q in net.layers]), net.input_bits)
    return load_words(changed, config), changed


@needs_verilator
@pytest.mark.parametrize("target", ["weight", "column", "position"])
def test_corrupted_load_fails_the_check(networks, target):
    """A changed conv2 weight, column offset or patch base makes the logits differ from
    the golden model (with a changed weight: equal to the changed network's). Fixed
    inputs: a shifted patch of one position could, by chance, not move a logit."""
    _, small, _, _, config = networks
    seed = 20261207
    x = np.random.default_rng(seed).integers(-128, 128, size=(4, small.cols))
    golden = network_ref(small, x)
    words = load_words(small, config)
    expect = None
    if target == "weight":
        conv2 = small.layers[1].layer
        for i in range(conv2.nnz):              # the first weight whose change shows
            values = conv2.values.copy()
            values[i] = ~values[i]                  # stays in range: -v - 1
            words, changed = changed_load(small, config, "conv2", replace(conv2, values=values))
            expect = network_ref(changed, x)
            if not np.array_equal(expect, golden):
                break
        assert not np.array_equal(expect, golden), seed
    else:
        fields = unpack_fields(config.load_fields, words)
        gather = unpack_fields(gather_fields(config), fields["data"])
        lay = conv_layout(small, config.engine.input_width)
        is_gather = fields["target"] == Target.GATHER
        table = GatherTable.COLUMNS if target == "column" else GatherTable.POSITIONS
        # conv2's most used column (its table entries follow conv1's 27), moved to
        # another channel's plane; or conv2's first patch base (after the image's and
        # conv1's positions), moved by a pixel.
        used = (small.layers[1].layer.dequantized() != 0).sum(axis=0)
        index = 27 + int(np.argmax(used)) if target == "column" else lay.positions[0]
        at = np.flatnonzero(is_gather & (gather["table"] == table))[index]
        gather["addr"][at] += lay.buffers[1].plane if target == "column" else 1
        data = fields["data"].copy()
        data[at] = pack_fields(gather_fields(config), {k: v[at:at + 1] for k, v in gather.items()},
                               1)[0]
        words = pack_fields(config.load_fields, {**fields, "data": data}, len(data))
    run = simulate_processor(small, x, config, load=words)
    assert not np.array_equal(run.logits, golden), seed
    if expect is not None:
        np.testing.assert_array_equal(run.logits, expect)


def test_no_step_reads_the_scratchpad_before_it_is_written(cnn, rng):
    """The bounded check of the tables (check_scratchpad): every read of one inference
    finds an entry written earlier in it, or a zero border no step writes; a patch base
    moved into a map that a later step writes (a value of the previous image) is caught."""
    net, _, c = cnn
    lay = conv_layout(net, c.engine.input_width)
    for network in (net, linear_then_conv(rng)):
        check_scratchpad(network, conv_layout(network, c.engine.input_width))
    tables = gather_words(net, lay)
    first = np.flatnonzero(tables["table"] == GatherTable.POSITIONS)[lay.inputs]
    tables["addr"][first] = lay.regions[2]          # conv1's first patch, in conv2's output
    with pytest.raises(ConfigError, match=rf"^layer 'conv1' reads scratchpad entry "
                                          rf"{lay.regions[2]} before this inference writes it$"):
        check_scratchpad(net, lay, tables)
