"""Shared test set-up: tool paths, a deterministic hypothesis profile, seeded helpers."""

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from darbgen import toolenv
from darbgen.format import Artifact, SparseLayer

toolenv.setup()

# Derandomized: the same examples every run (CI and local), so a failure reproduces;
# hypothesis prints the falsifying example.
settings.register_profile("darbgen", derandomize=True, deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "darbgen"))


@pytest.fixture
def rng(request):
    """A numpy generator seeded per test; the seed is shown when the test fails."""
    seed = int(os.environ.get("DARBGEN_SEED", "20261121"))
    request.node.user_properties.append(("seed", seed))
    gen = np.random.default_rng(seed)
    yield gen


def pruned_example(tmp_path_factory, example: str, ratio: int, name: str):
    """``example`` pruned by ``darbgen prune EXAMPLE --method darb --ratio RATIO`` (the
    CLI) into a fresh directory: the artifact's path and the command's stdout."""
    out = tmp_path_factory.mktemp(example) / name
    proc = subprocess.run([sys.executable, "-m", "darbgen.cli", "prune", example,
                           "--method", "darb", "--ratio", str(ratio), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


@pytest.fixture(scope="session")
def digits_mlp(tmp_path_factory):
    """digits-mlp pruned by ``darbgen prune digits-mlp --method darb --ratio 16`` (the CLI;
    about 2 minutes, so once per session): the artifact's path and the command's stdout."""
    return pruned_example(tmp_path_factory, "digits-mlp", 16, "digits.darb")


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory):
    """digits-cnn pruned by ``darbgen prune digits-cnn --method darb --ratio 8`` (the CLI,
    once per session; tests/test_cli.py and tests/test_processor_conv.py share it): the
    artifact's path and the command's stdout."""
    return pruned_example(tmp_path_factory, "digits-cnn", 8, "cnn.darb")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                report.sections.append(("seed", f"DARBGEN_SEED={value}"))


def random_layer(rng, rows, cols, block_sizes, keep=1, weight_bits=8, name="layer") -> SparseLayer:
    """A random valid layer: per-row block sizes drawn from ``block_sizes``, random
    in-block offsets and full-range values."""
    b = rng.choice(np.asarray(block_sizes), size=rows)
    k = np.minimum(keep, b)
    offsets, values = [], []
    lo, hi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    for r in range(rows):
        for start in range(0, cols, b[r]):
            width = min(b[r], cols - start)
            offsets.extend(np.sort(rng.choice(width, size=min(k[r], width), replace=False)))
    offsets = np.asarray(offsets, dtype=np.int64)
    values = rng.integers(lo, hi + 1, size=offsets.size)
    return SparseLayer(name=name, rows=rows, cols=cols, block_sizes=b, keep=k,
                       offsets=offsets, values=values, scale=rng.uniform(0.01, 0.1, size=rows),
                       weight_bits=weight_bits, method="darb")


def without_rows(layer: SparseLayer, rows) -> SparseLayer:
    """``layer`` with ``rows`` emptied (keep 0): rows that never leave an engine."""
    keep = layer.keep.copy()
    keep[list(rows)] = 0
    starts = layer.row_starts
    kept = np.concatenate([np.arange(starts[r], starts[r + 1]) for r in range(layer.rows)
                           if r not in set(rows)])
    return replace(layer, keep=keep, offsets=layer.offsets[kept], values=layer.values[kept])


def random_network(rng, dims=(24, 20, 12, 5), empty=(3, 7), relu=(True, False),
                   calibration=None, block_sizes=(2, 4, 8)) -> Artifact:
    """A chain of random DARB-like layers with biases, some empty rows in the first
    layer and a hidden layer without ReLU, calibrated on ``calibration`` (int inputs)
    so that no activation saturates there. Rows draw their block size from
    ``block_sizes`` (keep 1)."""
    layers = []
    for i, (cols, rows) in enumerate(zip(dims, dims[1:])):
        layer = random_layer(rng, rows, cols, list(block_sizes), name=f"fc{i + 1}")
        if i == 0:
            layer = without_rows(layer, empty)
        final = i == len(dims) - 2
        layers.append(replace(layer, bias=rng.normal(0, 2, size=rows).astype(np.float32),
                              activation="none" if final or not relu[i] else "relu"))
    x = calibration if calibration is not None else rng.integers(-128, 128, size=(64, dims[0]))
    h, scale = x * 0.05, 0.05
    for i, layer in enumerate(layers):
        layers[i] = replace(layer, input_scale=scale)
        h = h @ layer.dequantized().T + layer.bias
        h = np.maximum(h, 0) if layer.activation == "relu" else h
        scale = float(np.abs(h).max()) / 127
    return Artifact(layers, {"source": "random"})


def random_lenet5(seed: int):
    """A random DARB LeNet-5 on 28×28 (fashion-lenet5's shape: conv 6@5×5, pool 2, conv
    16@5×5, pool 2, 256-120-84-10), blocks of 4 to 16 keeping one weight each, calibrated
    by the float network on random images."""
    from darbgen.conv import ConvSpec
    from darbgen.network import plan
    from test_conv import float_forward          # torch: imported only when called
    rng = np.random.default_rng(seed)
    layers = []
    for name, f, c, spec in (("conv1", 6, 1, ConvSpec(28, 0, 1, 2)),
                             ("conv2", 16, 6, ConvSpec(12, 0, 1, 2))):
        layer = random_layer(rng, f, c * 25, [4, 8, 16], name=name)
        layers.append(replace(layer, shape=(f, c, 5, 5), conv=spec, activation="relu"))
    for i, (cols, rows) in enumerate(((256, 120), (120, 84), (84, 10))):
        layer = random_layer(rng, rows, cols, [4, 8, 16], name=f"fc{i + 1}")
        layers.append(replace(layer, activation="relu" if i < 2 else "none"))
    layers = [replace(l, bias=rng.normal(0, 2, size=l.rows).astype(np.float32)) for l in layers]
    x = rng.integers(0, 128, size=(16, 784))
    scales = [0.05] + float_forward(layers, x * 0.05, calibrate=True)
    return plan(Artifact([replace(l, input_scale=s) for l, s in zip(layers, scales)]))
