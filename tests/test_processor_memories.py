"""The processor's memories on the parts (issue 14): the board plans' capacities, the
logit memory's ``max_classes``, the banks' address map, and the iCEBreaker processor
itself (beat banks on SB_SPRAM256KA, simulated on Yosys's own model of the primitive, the
requantizer table, the program and the gather's memories in the banks behind the beats)
running MLPs and CNNs exactly in Verilator."""

from dataclasses import replace

import numpy as np
import pytest

from conftest import random_lenet5, random_network
from darbgen.boards import get_board
from darbgen.boards import core
from darbgen.config import ConfigError
from darbgen.format import Artifact
from darbgen.network import plan
from darbgen.processor import GatherTable, Target, bank_memories, bank_regions, load_words
from darbgen.processor_conv import conv_layout, gather_fields
from darbgen.packing import pack_fields, unpack_fields
from darbgen.sim.golden import network_ref
from darbgen.sim.runner import simulate_processor, simulator_available

needs_verilator = pytest.mark.skipif(not simulator_available("verilator"),
                                     reason="verilator not installed")


def processor_config(board, lanes=None):
    return core.processor_config(get_board(board), lanes)


@pytest.mark.parametrize("board, lanes, capacity", [("icebreaker", 4, 40_896),
                                                    ("ulx3s", 32, 163_840)])
def test_board_plans_hold_the_issues_capacities(board, lanes, capacity):
    c = processor_config(board)
    assert (c.lanes, c.capacity) == (lanes, capacity)
    assert c.capacity >= {"icebreaker": 40_000, "ulx3s": 150_000}[board]
    assert c.act_depth == 784 and c.logit_depth == 256
    # More lanes keep each lane's banks: the capacity scales.
    assert processor_config(board, 2 * lanes).capacity == 2 * capacity


def test_icebreaker_bank_is_one_spram():
    """Each lane's bank is one SB_SPRAM256KA (16k × 16), filled: its beats, the program,
    the requantizer table and the gather's tables (banks 0-2) or the scratchpad and the
    logits' low halves (bank 3); no two memories overlap in a bank. Left in EBR: headers
    (4 × 1 block of 4 kbit), x (4 × 2), sums (4 × 2), the table's rest (3) and the
    logits' high halves (1): 24, as before the gather."""
    c = processor_config("icebreaker")
    regions = bank_regions(c)
    assert c.has_gather and bank_memories(c)["banks"] == (4, 16384, 16)
    assert regions["scratchpad"].banks == (3,) and 3 not in regions["table"].banks
    assert regions["columns"].banks != regions["pools"].banks
    for bank in range(4):
        spans = sorted((r.first, r.first + r.words) for r in regions.values()
                       if bank in r.banks)
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), bank
    # A requantizer entry (67 bits without `first`) is 48 bits in the banks and 19 in EBR.
    assert bank_memories(c) == {"banks": (4, 16384, 16), "headers": (4, 256, 15),
                                "x": (4, 392, 16), "sums": (4, 256, 26),
                                "table_rest": (1, 512, 19), "logits_rest": (1, 256, 16)}


def test_max_classes(rng):
    net = plan(random_network(rng))                   # 24-20-12-5
    c = processor_config("icebreaker")
    with pytest.raises(ConfigError, match=r"^layer 'fc3' has 5 outputs, the processor's "
                                          r"logits hold 4$"):
        replace(c, max_classes=4).check_plan(net)
    with pytest.raises(ConfigError, match=r"^max_classes 785 exceeds the activation depth "
                                          r"784$"):
        replace(c, max_classes=785)
    with pytest.raises(ConfigError, match=r"^max_classes must be a non-negative integer, "
                                          r"not -1$"):
        replace(c, max_classes=-1)
    # 0 means the activation depth, and leaves the digest of a config without it alone.
    plain = replace(c, max_classes=0)
    assert plain.logit_depth == 784 and "max_classes" not in plain.to_json()
    assert c.memories["logits"] == (1, 256, 32) and c.digest() != plain.digest()


def lenet_300_100(rng):
    """A random DARB 784-300-100-10 network, blocks of 8 to 32 keeping one weight each."""
    return plan(random_network(rng, dims=(784, 300, 100, 10), block_sizes=(8, 16, 32)))


def corrupt_table_bias(net, config, words):
    """``words`` with the bias of the last step's first valid table entry changed."""
    fields = unpack_fields(config.load_fields, words)
    at = np.flatnonzero(fields["target"] == Target.TABLE)
    table = unpack_fields(config.requant_fields, fields["data"][at])
    i = int(np.flatnonzero(table["valid"])[-1])
    table["bias"][i] += 1
    fields["data"][at[i]] = pack_fields(config.requant_fields, table, len(at))[i]
    return pack_fields(config.load_fields, fields, len(words))


def corrupt_column(net, config, words):
    """``words`` with the gather's most used column offset of the first convolution
    moved to the next channel's plane (a word that lands in the banks)."""
    fields = unpack_fields(config.load_fields, words)
    gather = unpack_fields(gather_fields(config), fields["data"])
    lay = conv_layout(net, config.engine.input_width)
    used = (net.layers[0].layer.dequantized() != 0).sum(axis=0)
    at = np.flatnonzero((fields["target"] == Target.GATHER)
                        & (gather["table"] == GatherTable.COLUMNS))[int(np.argmax(used))]
    gather["addr"][at] += 1
    data = fields["data"].copy()
    data[at] = pack_fields(gather_fields(config), {k: v[at:at + 1] for k, v in gather.items()},
                           1)[0]
    return pack_fields(config.load_fields, {**fields, "data": data}, len(data))


@needs_verilator
def test_icebreaker_processor_on_spram_runs_mlps_and_cnns(digits_mlp, digits_cnn, rng):
    """The iCEBreaker's processor as built (SPRAM banks on Yosys's SB_SPRAM256KA model
    holding the beats, the table, the program and the gather): digits-mlp, a random
    784-300-100-10, digits-cnn and a random LeNet-5 on 28×28, without a rebuild, every
    logit exact; one corrupted table entry or gather column makes the check fail."""
    from darbgen import datasets

    config = processor_config("icebreaker")
    digits = plan(Artifact.load(digits_mlp[0]))
    x, _ = datasets.test_split("digits")
    xq = digits.quantize_input(x[:8])
    run = simulate_processor(digits, xq, config, spram=True, idle=0.2, backpressure=0.3,
                             seed=3)
    golden = network_ref(digits, xq)
    np.testing.assert_array_equal(run.logits, golden)
    big = lenet_300_100(rng)
    xb = rng.integers(-128, 128, size=(2, big.cols))
    np.testing.assert_array_equal(simulate_processor(big, xb, config, spram=True).logits,
                                  network_ref(big, xb))
    cnn = plan(Artifact.load(digits_cnn[0]))
    xc = cnn.quantize_input(x[:3])
    golden_cnn = network_ref(cnn, xc)
    run = simulate_processor(cnn, xc, config, spram=True, idle=0.2, backpressure=0.3, seed=4)
    np.testing.assert_array_equal(run.logits, golden_cnn)
    seed = 20261207
    lenet = random_lenet5(seed)
    xl = np.random.default_rng(seed).integers(-128, 128, size=(2, lenet.cols))
    np.testing.assert_array_equal(simulate_processor(lenet, xl, config, spram=True).logits,
                                  network_ref(lenet, xl), err_msg=f"seed {seed}")
    bad = corrupt_table_bias(digits, config, load_words(digits, config))
    run = simulate_processor(digits, xq, config, spram=True, load=bad)
    assert not np.array_equal(run.logits, golden)
    bad = corrupt_column(cnn, config, load_words(cnn, config))
    run = simulate_processor(cnn, xc, config, spram=True, load=bad)
    assert not np.array_equal(run.logits, golden_cnn)


def test_nextpnr_padded_clock_lines_are_parsed():
    """nextpnr pads clock names when several clocks are reported; a failing sync clock
    must not be mistaken for another clock's figure."""
    from darbgen.boards import parse_nextpnr_log

    log = parse_nextpnr_log(
        "Info: Max frequency for clock '$PACKER_GND_NET_$glb_clk': 313.28 MHz "
        "(PASS at 12.00 MHz)\n"
        "Warning: Max frequency for clock                      'clk': 19.61 MHz "
        "(FAIL at 30.00 MHz)\n")
    assert log.fmax_for(30.0) == 19.61
