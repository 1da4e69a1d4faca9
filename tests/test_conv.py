"""Convolutions through im2col: the patch and column order against torch, the buffer
address tables, the integer CNN against a float reference, and the CNN chain in
Verilator, bit-exact (and failing when one word is corrupted)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import random_layer
from darbgen.config import ConfigError
from darbgen.conv import ConvGeometry, ConvSpec, MapBuffer, im2col, maxpool
from darbgen.format import Artifact, ArtifactError
from darbgen.network import NetworkConfig, load_words, plan
from darbgen.packing import unpack_fields
from darbgen.sim.golden import network_ref
from darbgen.sim.runner import simulate_network, simulator_available
from test_network import without_rows

needs_verilator = pytest.mark.skipif(not simulator_available("verilator"),
                                     reason="verilator not installed")

GEOMETRIES = [  # (C, H, W), kernel, padding, stride
    ((1, 8, 8), (3, 3), 1, 1), ((3, 7, 9), (3, 2), (1, 2), (2, 1)), ((2, 5, 5), (5, 5), 0, 1),
    ((4, 6, 5), (1, 1), 0, 2), ((2, 4, 4), (3, 3), 2, 3),
]


@pytest.mark.parametrize("shape, kernel, padding, stride", GEOMETRIES)
def test_im2col_is_torch_conv2d_as_a_gemm(rng, shape, kernel, padding, stride):
    """Patches times the weight reshaped like torch (F × C·kh·kw) is torch's conv2d."""
    g = ConvGeometry((5, shape[0], *kernel), ConvSpec(shape[1:], padding, stride))
    x = rng.integers(-128, 128, size=(3, *shape))
    w = rng.integers(-128, 128, size=(5, shape[0], *kernel))
    tx, tw = torch.from_numpy(x).double(), torch.from_numpy(w).double()
    expected = F.conv2d(tx, tw, padding=g.spec.padding, stride=g.spec.stride).numpy()
    patches = im2col(x.reshape(3, -1), g)                          # flat maps work too
    assert patches.shape == (3, g.positions, shape[0] * kernel[0] * kernel[1])
    got = (patches @ w.reshape(5, -1).T).transpose(0, 2, 1).reshape(expected.shape)
    np.testing.assert_array_equal(got, expected)
    unfold = F.unfold(tx, kernel, padding=g.spec.padding, stride=g.spec.stride).numpy()
    np.testing.assert_array_equal(patches, unfold.transpose(0, 2, 1))


@pytest.mark.parametrize("size, pool", [((6, 6), 2), ((5, 7), 2), ((9, 8), 3), ((4, 4), 1)])
def test_maxpool_is_torchs_floor_mode(rng, size, pool):
    y = rng.integers(-128, 128, size=(2, 3, *size))
    expected = F.max_pool2d(torch.from_numpy(y).double(), pool).numpy()
    np.testing.assert_array_equal(maxpool(y, pool), expected)


def _buffer_gather(x_map, producer, consumer, width):
    """The chip's tables played in numpy: write a producer's (pre-pool) map into its
    buffer, then gather the consumer's vectors with base + offset + max over pool."""
    buf = MapBuffer.between(producer, consumer, width)
    mem = np.zeros(buf.depth, np.int64)
    if producer is None:
        mem[buf.element_addresses()] = x_map.reshape(-1)
    else:
        offsets, skip = buf.position_offsets(producer.output_size)
        flat = x_map.reshape(producer.filters, -1)                # (F, positions)
        for p in np.flatnonzero(~skip):
            mem[buf.channel_bases() + offsets[p]] = flat[:, p]
    addr = (buf.patch_bases(consumer)[:, None, None] + buf.column_offsets(consumer)[None, :, None]
            + buf.pool_offsets()[None, None, :])
    return mem[addr].max(axis=2)                                   # (positions, columns)


@pytest.mark.parametrize("pool, padding, stride, out", [
    (2, (1, 1), (1, 1), (9, 8)), (2, (1, 0), (1, 2), (9, 8)), (3, (2, 1), (2, 1), (9, 10)),
    (1, (0, 0), (1, 1), (4, 4)),
])
def test_buffer_tables_gather_what_the_golden_model_computes(rng, pool, padding, stride, out):
    """A pooled map (trailing rows dropped) read by a padded, strided convolution, and by
    a Linear layer: the address tables give exactly maxpool, then im2col / flatten."""
    producer = ConvGeometry((4, 1, 1, 1), ConvSpec(out, 0, 1, pool))
    hp, wp = out[0] // pool, out[1] // pool
    consumer = ConvGeometry((3, 4, 3, 2), ConvSpec((hp, wp), padding, stride))
    y = rng.integers(-128, 128, size=(1, 4, *out))
    pooled = maxpool(y, pool)
    np.testing.assert_array_equal(_buffer_gather(y, producer, consumer, None),
                                  im2col(pooled, consumer)[0])
    np.testing.assert_array_equal(_buffer_gather(y, producer, None, pooled.size)[0],
                                  pooled.reshape(-1))
    image = rng.integers(-128, 128, size=(1, 4, hp, wp))           # the network's input
    np.testing.assert_array_equal(_buffer_gather(image, None, consumer, image.size),
                                  im2col(image, consumer)[0])


# -- the artifact fields ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    ({"input_size": (8, 8), "padding": "x"}, TypeError,
     r"^padding must be an integer or a pair of integers, not 'x'$"),
    ({"input_size": (8, 8, 1)}, TypeError,
     r"^input_size must be an integer or a pair of integers, not \(8, 8, 1\)$"),
    ({"input_size": 0}, ValueError, r"^input_size must be at least 1, not 0$"),
    ({"input_size": 8, "stride": (1, 0)}, ValueError, r"^stride must be at least 1, not \(1, 0\)$"),
    ({"input_size": 8, "padding": -1}, ValueError, r"^padding must be at least 0, not -1$"),
    ({"input_size": 8, "pool": 1.5}, TypeError, r"^pool must be an integer, not 1\.5$"),
    ({"input_size": 8, "pool": 0}, ValueError, r"^pool must be at least 1, not 0$"),
])
def test_conv_spec_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        ConvSpec(**kwargs)


def test_conv_field_errors_name_the_layer(rng):
    layer = random_layer(rng, 4, 18, [2, 4], name="conv1")
    with pytest.raises(ArtifactError, match=r"^layer 'conv1': field 'conv' needs a 4-D shape "
                                            r"\(F, C, kh, kw\), not \(4, 18\)$"):
        replace(layer, conv=ConvSpec(8))
    with pytest.raises(ArtifactError, match=r"^layer 'conv1': field 'conv': kernel 3×3 does not "
                                            r"fit the 2×2 input padded by 0×0$"):
        replace(layer, shape=(4, 2, 3, 3), conv=ConvSpec(2))
    with pytest.raises(ArtifactError, match=r"^layer 'conv1': field 'conv': pool 4 does not fit "
                                            r"the 3×3 output$"):
        replace(layer, shape=(4, 2, 3, 3), conv=ConvSpec(3, 1, 1, 4))
    with pytest.raises(TypeError, match=r"^layer 'conv1': conv must be a ConvSpec, not \{\}$"):
        replace(layer, shape=(4, 2, 3, 3), conv={})


def test_conv_field_survives_save_and_load_and_is_validated(rng, tmp_path):
    art = random_cnn(rng)
    art.save(tmp_path / "cnn.darb")
    back = Artifact.load(tmp_path / "cnn.darb")
    assert [l.conv for l in back.layers] == [l.conv for l in art.layers]
    x = rng.integers(-128, 128, size=(2, plan(art).cols))
    np.testing.assert_array_equal(network_ref(plan(back), x), network_ref(plan(art), x))
    import json
    import zipfile
    with zipfile.ZipFile(tmp_path / "cnn.darb") as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["layers"][1]["conv"]["pool"] = "2"
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(tmp_path / "bad.darb", "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    with pytest.raises(ArtifactError, match=r"bad\.darb: layer 'conv2': field 'conv': pool must "
                                            r"be an integer, not '2'$"):
        Artifact.load(tmp_path / "bad.darb")


# -- a small CNN: every geometry case ---------------------------------------------------------

#: (name, filters, kernel, spec): 3×9×8 images; conv1 (27 columns: an odd count pads the
#: last input beat) pools 9×8 to 4×4 (a row dropped), conv2 reads that with padding
#: (1, 0), stride (1, 2), no ReLU, and pools 4×2 to 2×1.
CNN = [("conv1", 4, (3, 3), ConvSpec((9, 8), 1, 1, 2)),
       ("conv2", 5, (3, 2), ConvSpec((4, 4), (1, 0), (1, 2), 2))]


def random_cnn(rng, calibration=None) -> Artifact:
    """conv1 → conv2 → fc1 (ReLU) → fc2, random DARB-like weights with biases, an empty
    row in conv1 and fc1, calibrated on ``calibration`` (int images, flattened) by the
    float network so that no activation saturates there."""
    layers, channels = [], 3
    for name, f, kernel, spec in CNN:
        layer = random_layer(rng, f, channels * kernel[0] * kernel[1], [2, 4, 8], name=name)
        layers.append(replace(layer, shape=(f, channels, *kernel), conv=spec))
        channels = f
    layers.append(random_layer(rng, 8, 10, [2, 4], name="fc1"))
    layers.append(random_layer(rng, 3, 8, [2, 4], name="fc2"))
    layers[0], layers[2] = without_rows(layers[0], [1]), without_rows(layers[2], [5])
    for i, (layer, act) in enumerate(zip(layers, ["relu", "none", "relu", "none"])):
        layers[i] = replace(layer, activation=act,
                            bias=rng.normal(0, 2, size=layer.rows).astype(np.float32))
    x = calibration if calibration is not None else rng.integers(0, 128, size=(32, 216))
    scales = [0.05] + float_forward(layers, x * 0.05, calibrate=True)
    return Artifact([replace(l, input_scale=s) for l, s in zip(layers, scales)],
                    {"source": "random cnn"})


def float_forward(layers, x, calibrate=False):
    """The float network (torch) with the dequantized weights: logits, or with
    ``calibrate`` the input step of every later layer (largest input / 127)."""
    h = torch.from_numpy(np.asarray(x, np.float64))
    steps = []
    for i, layer in enumerate(layers):
        if i and calibrate:
            steps.append(float(h.abs().max()) / 127)
        w = torch.from_numpy(layer.dequantized())
        b = torch.from_numpy(layer.bias.astype(np.float64))
        g = layer.conv_geometry
        if g is not None:
            h = F.conv2d(h.reshape(len(h), *g.input_shape), w.reshape(layer.shape), b,
                         padding=g.spec.padding, stride=g.spec.stride)
        else:
            h = h @ w.T + b
        h = F.relu(h) if layer.activation == "relu" else h
        if g is not None:
            h = F.max_pool2d(h, g.spec.pool).flatten(1)
    return steps if calibrate else h.numpy()


def test_golden_cnn_follows_the_float_network(rng):
    x = rng.integers(0, 128, size=(64, 216))
    art = random_cnn(rng, calibration=x)
    net = plan(art)
    assert net.cols == 216 and [q.layer.rows for q in net.layers] == [4, 5, 8, 3]
    logits = network_ref(net, x)
    ref = float_forward(art.layers, x * net.input_scale)
    step = net.layers[-1].layer.scale * net.layers[-1].layer.input_scale
    # Integers track the float network within the rounding of int8 activations (four
    # roundings deep: 2 to 5 % of the largest logit for these seeds; a wrong patch,
    # pool or flatten order is off by about 100 %).
    assert np.abs(logits * step - ref).max() < 0.08 * np.abs(ref).max()
    assert (net.predict(logits) == ref.argmax(1)).mean() >= 0.9


def test_predict_uses_the_per_row_scales(rng):
    net = plan(random_cnn(rng))
    step = net.layers[-1].layer.scale * net.layers[-1].layer.input_scale
    logits = np.array([[100, 90, 0]])
    big = 0 if step[0] * 100 > step[1] * 90 else 1
    assert net.predict(logits).tolist() == [big]


def test_plan_errors_name_the_layer(rng):
    art = random_cnn(rng)
    conv1, conv2, fc1, fc2 = art.layers
    with pytest.raises(ArtifactError, match=r"^layer 'conv2' has shape \(5, 4, 3, 2\) but no "
                                            r"'conv' geometry \(input size, padding, stride, "
                                            r"pool\): whole-network runs take"):
        plan(Artifact([conv1, replace(conv2, conv=None), fc1, fc2]))
    with pytest.raises(ArtifactError, match=r"^the last layer 'conv2' is a convolution: a "
                                            r"network ends in a Linear layer"):
        plan(Artifact([conv1, conv2]))
    with pytest.raises(ArtifactError, match=r"^layer 'conv1' produces 4×4×4 maps but the next "
                                            r"layer 'conv2' takes 4×2×8$"):
        plan(Artifact([conv1, replace(conv2, conv=ConvSpec((2, 8), (1, 0), (1, 2), 1)), fc1,
                       fc2]))
    with pytest.raises(ArtifactError, match=r"^layer 'conv2' has 5×2×1 = 10 outputs but the "
                                            r"next layer 'fc2' takes 8 inputs$"):
        plan(Artifact([conv1, conv2, fc2]))


def load_targets(config, words) -> np.ndarray:
    """The ``target`` field of load words (``data`` may be too wide for int64)."""
    (_, (_, data_bits)), *rest = config.load_fields
    return unpack_fields(rest, [w >> data_bits for w in words])["target"]


def test_load_words_and_config_of_a_cnn(rng):
    net = plan(random_cnn(rng))
    config = NetworkConfig.for_plan(net, lanes=2)
    g0, g1, g2, g3 = config.gathers
    assert (g0.sources, g0.positions, g0.pool_reads) == (216, 72, 1)
    assert (g1.sources, g1.positions, g1.pool_reads) == (72, 8, 4)
    assert (g2.sources, g2.positions, g2.pool_reads) == (8, 1, 4) and g3 is None
    assert config.max_cols == 216 and config.targets == 12
    targets = load_targets(config, load_words(net, config)).tolist()
    # per layer: gather (8 + j), engine (j), requantizer (4 + j); fc2 has no gather.
    assert [t for i, t in enumerate(targets) if i == 0 or targets[i - 1] != t] == \
        [8, 0, 4, 9, 1, 5, 10, 2, 6, 3, 7]
    with pytest.raises(ConfigError, match=r"^layer 'conv2' needs a gather of 72 sources, 8 "
                                          r"positions and 4 pool reads, the chain's stage 1 "
                                          r"has 72, 9 and 4$"):
        load_words(net, replace(config, gathers=(g0, replace(g1, positions=9), g2, g3)))
    assert (g0.depth, g1.depth, g2.depth) == (330, 384, 40)
    with pytest.raises(ConfigError, match=r"^layer 'fc1' needs 40 buffer entries, the chain's "
                                          r"stage 2 holds 30$"):
        load_words(net, replace(config, gathers=(g0, g1, replace(g2, depth=30), g3)))
    with pytest.raises(ConfigError, match=r"^gather depth must be a positive integer, not 0$"):
        replace(g2, depth=0)
    # A chain of Linear layers keeps its JSON (and so its build ID) as it was.
    assert "gathers" in config.to_json()
    mlp = NetworkConfig.for_plan(plan(Artifact([q.layer for q in net.layers[2:]])), lanes=2)
    assert mlp.gathers == (None, None) and "gathers" not in mlp.to_json()


def test_bad_inputs_name_the_network_width(rng):
    net = plan(random_cnn(rng))
    with pytest.raises(ValueError, match=r"^inputs must have shape \(216,\) or \(n, 216\) for "
                                         r"layer 'conv1', not \(2, 18\)$"):
        network_ref(net, np.zeros((2, 18), int))
    with pytest.raises(ValueError, match=r"^inputs must have shape \(216,\) or \(n, 216\) for "
                                         r"layer 'conv1', not \(2, 18\)$"):
        simulate_network(net, np.zeros((2, 18), int))


# -- the chain in Verilator (one build for the module) -----------------------------------------

@needs_verilator
def test_cnn_chain_matches_golden_model_with_stalls(rng):
    net = plan(random_cnn(rng))
    x = rng.integers(-128, 128, size=(4, net.cols))
    run = simulate_network(net, x, lanes=2, idle=0.3, backpressure=0.3, seed=5)
    np.testing.assert_array_equal(run.logits, network_ref(net, x))


@needs_verilator
@pytest.mark.parametrize("target", ["weight", "gather"])
def test_cnn_chain_check_fails_on_one_corrupted_word(rng, target):
    """A weight of conv1, or one column offset of conv2's gather table, changed by one bit."""
    net = plan(random_cnn(rng))
    config = NetworkConfig.for_plan(net, lanes=2)
    words = list(load_words(net, config))
    targets = load_targets(config, words)
    if target == "weight":
        i, bit = int(np.flatnonzero(targets == 0)[-1]), 6               # value bit 6
    else:
        # conv2's gather (target 2n + 1): an offset section entry of a column that some
        # row uses; bit 0 of a word is its address's LSB.
        first = int(np.flatnonzero(targets == 2 * config.layers + 1)[0])
        used = int(np.flatnonzero(net.layers[1].layer.mask().any(axis=0))[0])
        g = config.gathers[1]
        i, bit = first + g.sources + g.positions + used, 0
    words[i] ^= 1 << bit
    x = rng.integers(-128, 128, size=(2, net.cols))
    run = simulate_network(net, x, config, load=words)
    assert not np.array_equal(run.logits, network_ref(net, x))


def test_boards_refuse_a_cnn_and_eval_names_an_unsupported_layer(rng, tmp_path, capsys):
    from darbgen.cli import main
    from darbgen.hdl.device import check_link
    net = plan(random_cnn(rng))
    with pytest.raises(ValueError, match=r"^a convolutional network \(im2col gathers\) runs in "
                                         r"simulation only \(darbgen eval --on verilator\)"):
        check_link(NetworkConfig.for_plan(net, lanes=2))
    conv1, conv2, fc1, fc2 = random_cnn(rng).layers
    Artifact([conv1, replace(conv2, conv=None), fc1, fc2]).save(tmp_path / "old.darb")
    assert main(["eval", str(tmp_path / "old.darb"), "--dataset", "digits"]) == 1
    assert capsys.readouterr().err.startswith(
        "darbgen eval: error: layer 'conv2' has shape (5, 4, 3, 2) but no 'conv' geometry")


def test_conv_spec_of_torch_modules():
    from torch import nn

    from darbgen.pruning.examples import conv_spec
    assert conv_spec(nn.Conv2d(1, 2, 3, padding=(1, 0), stride=2), (8, 9), nn.MaxPool2d(2)) == \
        ConvSpec((8, 9), (1, 0), (2, 2), 2)
    assert conv_spec(nn.Conv2d(1, 2, 3), (8, 8), nn.ReLU()) == ConvSpec(8)
    with pytest.raises(ValueError, match=r"^Conv2d with dilation \(2, 2\), groups 1, padding "
                                         r"\(0, 0\) \(zeros\) is not supported: only dilation 1, "
                                         r"groups 1 and numeric zero padding$"):
        conv_spec(nn.Conv2d(1, 2, 3, dilation=2), (8, 8))
    with pytest.raises(ValueError, match=r"^MaxPool2d\(kernel_size=2, stride=1, padding=0, "
                                         r"dilation=1, ceil_mode=False\) is not supported: only "
                                         r"square MaxPool2d\(k\) windows with stride k, no "
                                         r"padding, floor mode$"):
        conv_spec(nn.Conv2d(1, 2, 3), (8, 8), nn.MaxPool2d(2, stride=1))
