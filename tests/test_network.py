"""Whole networks: the requantization contract, the golden model and the chain of
engines in Verilator, bit-exact."""

from dataclasses import replace

import numpy as np
import pytest

from conftest import random_layer, random_network, without_rows
from darbgen.config import ConfigError
from darbgen.format import Artifact, ArtifactError
from darbgen.network import NetworkConfig, load_words, plan
from darbgen.quant import MULT_BITS, requant
from darbgen.packing import unpack_fields
from darbgen.sim.golden import network_ref, spmv_ref
from darbgen.sim.runner import SimulationError, simulate_network, simulator_available

needs_verilator = pytest.mark.skipif(not simulator_available("verilator"),
                                     reason="verilator not installed")


# -- the contract ------------------------------------------------------------------------

def test_requant_rounds_half_up_and_clamps():
    v = np.array([3, -3, 5, -5, 1000, -1000])
    assert requant(v, 1, 1, -128, 127).tolist() == [2, -1, 3, -2, 127, -128]
    assert requant([7], [3], [2], 0, 127).tolist() == [5]          # 21/4 = 5.25 → 5
    assert requant([-7], [3], [2], 0, 127).tolist() == [0]         # ReLU clamp


def test_plan_multipliers_approximate_the_scale_ratio(rng):
    net = plan(random_network(rng))
    for q, nxt in zip(net.layers, net.layers[1:]):
        ratio = np.broadcast_to(q.layer.scale, (q.layer.rows,)) * q.layer.input_scale \
            / nxt.layer.input_scale
        assert (q.mult >= 1 << (MULT_BITS - 1)).all() and (q.mult < 1 << MULT_BITS).all()
        np.testing.assert_allclose(q.mult / 2.0 ** q.shift, ratio, rtol=2.0 ** -(MULT_BITS - 1))
    assert net.layers[-1].final and not net.layers[0].final
    assert net.layers[0].lo == 0 and net.layers[1].lo == -128


def test_golden_network_follows_the_float_network(rng):
    x = rng.integers(-128, 128, size=(64, 24))
    net = plan(random_network(rng, calibration=x))
    logits = network_ref(net, x)
    h = x * net.input_scale
    for q in net.layers:
        y = h @ q.layer.dequantized().T + q.layer.bias
        h = y if q.final else (np.maximum(y, 0) if q.lo == 0 else y)
    step = net.layers[-1].layer.scale * net.layers[-1].layer.input_scale
    # Integers track the float network within the rounding of int8 activations.
    assert np.abs(logits * step - h).max() < 0.05 * np.abs(h).max()


def test_plan_refuses_layers_that_do_not_chain(rng):
    art = random_network(rng)
    with pytest.raises(ArtifactError, match=r"layer 'fc1' has 20 outputs but the next layer "
                                            r"'fc3' takes 12 inputs"):
        plan(Artifact([art.layers[0], art.layers[2]]))
    with pytest.raises(ArtifactError, match=r"layer 'fc2' has no input_scale"):
        plan(Artifact([art.layers[0], replace(art.layers[1], input_scale=None)]))


def test_bad_input_scale_and_activation_are_refused(rng):
    layer = random_layer(rng, 4, 8, [2])
    with pytest.raises(ArtifactError, match=r"'input_scale' must be finite and positive, not -1"):
        replace(layer, input_scale=-1.0)
    with pytest.raises(ArtifactError, match=r"'activation' must be one of 'none', 'relu', not 'tanh'"):
        replace(layer, activation="tanh")


def test_network_fields_survive_save_and_load(rng, tmp_path):
    art = random_network(rng)
    art.save(tmp_path / "n.darb")
    back = Artifact.load(tmp_path / "n.darb")
    assert [(l.input_scale, l.activation) for l in back.layers] == \
        [(l.input_scale, l.activation) for l in art.layers]
    np.testing.assert_array_equal(network_ref(plan(back), np.ones(24, int)),
                                  network_ref(plan(art), np.ones(24, int)))


def test_load_words_route_tables_after_engines(rng):
    net = plan(random_network(rng))
    config = NetworkConfig.for_plan(net, lanes=2)
    fields = unpack_fields(config.load_fields, load_words(net, config))
    targets = fields["target"].tolist()
    # engine 0, requantizer 0 (=3), engine 1, requantizer 1, engine 2, requantizer 2.
    assert [t for i, t in enumerate(targets) if i == 0 or targets[i - 1] != t] == [0, 3, 1, 4, 2, 5]
    with pytest.raises(ConfigError, match=r"engine 1 takes 4 inputs, layer 0 produces 20"):
        NetworkConfig(config.engines[:1] + (replace(config.engines[1], max_cols=4),) +
                      config.engines[2:], config.rows, config.relu)


# -- the chain in Verilator ---------------------------------------------------------------

@needs_verilator
def test_chain_matches_golden_model_with_stalls(rng):
    net = plan(random_network(rng))
    x = rng.integers(-128, 128, size=(12, net.cols))
    run = simulate_network(net, x, lanes=2, idle=0.3, backpressure=0.3, seed=7)
    np.testing.assert_array_equal(run.logits, network_ref(net, x))
    # The empty rows of fc1 reach fc2 through the table's tail: their bias matters.
    assert (spmv_ref(net.layers[0].layer, x)[:, [3, 7]] == 0).all()


@needs_verilator
@pytest.mark.parametrize("target", ["weight", "table"])
def test_chain_check_fails_on_one_corrupted_word(rng, target):
    net = plan(random_network(rng))
    config = NetworkConfig.for_plan(net, lanes=2)
    words = load_words(net, config)
    fields = unpack_fields(config.load_fields, words)
    # A beat word of the last engine (value bit 6), or an entry of requantizer 0 (bias
    # bit 20, above the 5-bit dest field: enough to move the row's activation).
    want = config.layers - 1 if target == "weight" else config.layers
    i = int(np.flatnonzero(fields["target"] == want)[-1 if target == "weight" else 1])
    words = list(words)
    words[i] ^= 1 << (25 if target == "table" else 6)
    x = rng.integers(-128, 128, size=(6, net.cols))
    run = simulate_network(net, x, config, load=words)
    assert not np.array_equal(run.logits, network_ref(net, x))


@needs_verilator
def test_missing_logits_raise(rng):
    net = plan(random_network(rng))
    config = NetworkConfig.for_plan(net, lanes=2)
    words = [w for w, t in zip(load_words(net, config),
                               unpack_fields(config.load_fields, load_words(net, config))["target"])
             if t != 2]                           # engine 2 never gets weights
    with pytest.raises(SimulationError, match=r"got 0 of 10 output beats"):
        simulate_network(net, rng.integers(-128, 128, size=(2, net.cols)), config, load=words)
