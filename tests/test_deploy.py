"""serve-sim + deploy: the real host driver over pyserial to the board's device in Verilator.

One simulated iCEBreaker device (UART included, the same RTL as the bitstream) serves
the module; several random DARB layers that fit its engine are loaded, verified and
run on it, exactly; a noisy link loses nothing; a layer that does not fit is refused.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import random_layer
from darbgen.boards import get_board
from darbgen.boards.core import DEVICE_TOP, device, device_verilog
from darbgen.cli import main
from darbgen.format import Artifact, SparseLayer
from darbgen.host import Board, BuildMismatch, SerialTransport, Transport
from darbgen.sim.board_sim import BoardSim
from darbgen.sim.golden import spmv_ref

SEED = 20261121
LANES = 4
BOARD = get_board("icebreaker")


def variant(layer: SparseLayer, rng, name) -> SparseLayer:
    """A random subset of ``layer``'s rows with fresh random weights: it fits any engine
    built for ``layer`` (same columns and block sizes, fewer and no longer rows)."""
    rows = np.sort(rng.choice(layer.rows, size=rng.integers(1, layer.rows), replace=False))
    starts = layer.row_starts
    idx = np.concatenate([np.arange(starts[r], starts[r + 1]) for r in rows])
    values = rng.integers(-128, 128, size=idx.size)
    return SparseLayer(name=name, rows=len(rows), cols=layer.cols,
                       block_sizes=layer.block_sizes[rows], keep=layer.keep[rows],
                       offsets=layer.offsets[idx], values=values, scale=layer.scale[rows],
                       weight_bits=8, method="darb")


@pytest.fixture(scope="module")
def base():
    return random_layer(np.random.default_rng(SEED), 96, 48, [2, 4, 8, 16], name="base")


@pytest.fixture(scope="module")
def served(base):
    dev = device(BOARD, base, LANES)
    with BoardSim(device_verilog(dev), DEVICE_TOP, dev.divisor) as sim:
        yield sim


def connect(sim, **kw):
    return Board(SerialTransport(sim.port, BOARD.baud), **kw)


def test_round_trip_random_darb_layers(served, base):
    rng = np.random.default_rng(SEED + 1)
    board = connect(served)
    identity = board.identify()
    assert identity.config.lanes == LANES and identity.clock_hz == BOARD.clock_hz
    reports = []
    for i, layer in enumerate([base] + [variant(base, rng, f"v{i}") for i in range(3)]):
        reports.append(board.load(layer))
        assert reports[-1].verified and reports[-1].words > 0
        x = rng.integers(-128, 128, size=(3, layer.cols))
        y = board.run(x)
        assert np.array_equal(y, spmv_ref(layer, x)), f"layer {layer.name}, seed {SEED}"
    # The link carries payload for at least 90% of the line time while the largest
    # layer's weights stream (by the device's clock).
    assert reports[0].payload_bytes > 2000 and reports[0].link_efficiency >= 0.9, reports[0]
    board.transport.close()


def test_corrupted_weight_fails_the_check(served, base):
    """The exactness check can fail: a layer with one weight changed gives other sums."""
    board = connect(served)
    board.load(base)
    x = np.random.default_rng(SEED).integers(-128, 128, size=(2, base.cols))
    values = base.values.copy()
    values[5] = values[5] + 1 if values[5] < 127 else values[5] - 1
    mutated = SparseLayer(name="m", rows=base.rows, cols=base.cols,
                          block_sizes=base.block_sizes, keep=base.keep, offsets=base.offsets,
                          values=values, scale=base.scale, weight_bits=8, method="darb")
    assert not np.array_equal(board.run(x), spmv_ref(mutated, x))
    board.transport.close()


class NoisyLink(Transport):
    """Corrupts a real transport: garbage between frames, flipped bits inside frames
    and truncated frames on the way out, flipped bits on the way back."""

    def __init__(self, inner, rng, p=0.15):
        self.inner, self.rng, self.p = inner, rng, p
        self.baud = inner.baud
        self.events = 0

    def write(self, data):
        data = bytearray(data)
        if self.rng.random() < self.p:
            self.inner.write(bytes(self.rng.integers(0, 256, size=self.rng.integers(1, 24))
                                   .astype(np.uint8)))
            self.events += 1
        if self.rng.random() < self.p:
            data[self.rng.integers(len(data))] ^= 1 << int(self.rng.integers(8))
            self.events += 1
        if self.rng.random() < self.p / 2:
            data = data[:self.rng.integers(1, len(data))]
            self.events += 1
        self.inner.write(bytes(data))

    def read(self, timeout):
        data = bytearray(self.inner.read(timeout))
        for i in range(len(data)):
            if self.rng.random() < self.p / 300:     # per byte: a long reply fails ~10%
                data[i] ^= 1 << int(self.rng.integers(8))
                self.events += 1
        return bytes(data)

    def close(self):
        self.inner.close()


def test_noisy_link_loses_nothing(served, base):
    rng = np.random.default_rng(SEED + 2)
    link = NoisyLink(SerialTransport(served.port, BOARD.baud), rng)
    board = Board(link, timeout=0.25, retries=30)
    board.identify()
    layer = variant(base, rng, "noisy")
    assert board.load(layer).verified
    x = rng.integers(-128, 128, size=(6, layer.cols))
    assert np.array_equal(board.run(x), spmv_ref(layer, x)), f"seed {SEED + 2}"
    assert link.events > 5 and board.retried > 0, (link.events, board.retried)
    link.inner.close()
    # The device counted what it refused, and still answers a clean link.
    clean = connect(served)
    assert clean.status()["refused"] > 0
    clean.transport.close()


def test_run_refuses_inputs_it_would_change(served, base):
    """Board.run once truncated float inputs and wrapped out-of-range ones on their way
    to the link (issue 16): both are refused before anything is sent."""
    board = connect(served)
    board.load(base)
    with pytest.raises(TypeError, match=r"^inputs must be integers, not float64$"):
        board.run(np.full((1, base.cols), 0.7))
    with pytest.raises(ValueError, match=r"^inputs for layer 'base' must be between -128 and "
                                         r"127 \(8-bit\), not -3\.\.200$"):
        board.run(np.r_[[-3], np.full(base.cols - 1, 200)][None])
    board.transport.close()


def test_layer_that_does_not_fit_is_refused(served):
    wide = random_layer(np.random.default_rng(SEED), 8, 96, [4], name="wide")
    board = connect(served)
    with pytest.raises(BuildMismatch, match="96 columns, the engine takes 48"):
        board.load(wide)
    board.transport.close()


def test_cli_serve_sim_and_deploy(tmp_path, base, capsys):
    """The contract end to end for one engine: `darbgen serve-sim --layer` prints its
    port; `darbgen deploy` identifies, streams, verifies and runs the layer the board
    runs; its last line is one JSON object."""
    art = tmp_path / "base.darb"
    Artifact([base], {"source": "test"}).save(art)
    x = np.random.default_rng(SEED).integers(-128, 128, size=(4, base.cols)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.Popen([sys.executable, "-m", "darbgen.cli", "serve-sim", "--board",
                             "icebreaker", "--lanes", str(LANES), str(art), "--layer", "base"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = json.loads(proc.stdout.readline())["port"]
        assert main(["deploy", str(art), "--port", port, "--inputs", str(tmp_path / "x.npy"),
                     "-o", str(tmp_path / "y.npy")]) == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["identified"] and result["weights_verified"] and result["vectors"] == 4
    assert result["link_efficiency"] >= 0.9
    assert np.array_equal(np.load(tmp_path / "y.npy"), spmv_ref(base, x))


def test_cli_build_icebreaker_bitstream(tmp_path, base):
    """The one real board build of the default suite: `darbgen build` of the device
    (UART + controller + engine) for a small layer on the iCEBreaker meets 30 MHz."""
    art = tmp_path / "base.darb"
    Artifact([base], {"source": "test"}).save(art)
    out = tmp_path / "ice"
    assert main(["build", str(art), "--board", "icebreaker", "--layer", "base", "--lanes", "2",
                 "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (out / "top.bin").stat().st_size > 100_000
    assert report["fmax_mhz"] >= report["target_mhz"] == 30 and report["lanes"] == 2
    assert report["resources"]["ICESTORM_DSP"]["used"] == 2       # -dsp: one per lane
    assert report["resources"]["ICESTORM_RAM"]["used"] <= 30


# -- a whole network on one simulated board -----------------------------------------------

@pytest.fixture(scope="module")
def network_served():
    from test_network import random_network

    from darbgen.network import plan
    net = plan(random_network(np.random.default_rng(SEED), dims=(32, 24, 16, 10)))
    dev = device(BOARD, net, 2)
    with BoardSim(device_verilog(dev), DEVICE_TOP, dev.divisor) as sim:
        yield sim, net


def test_whole_network_round_trip(network_served):
    """serve-sim of a network device + the host driver: identify the chain, stream the
    engines' weights and the requantizer tables, verify, run: logits equal the integer
    model's; a single layer is refused by that board, naming why."""
    from darbgen.network import NetworkConfig
    from darbgen.sim.golden import network_ref

    sim, net = network_served
    board = connect(sim)
    identity = board.identify()
    assert isinstance(identity.config, NetworkConfig) and identity.config.rows == (24, 16, 10)
    report = board.load(net)
    assert report.verified
    x = np.random.default_rng(SEED + 5).integers(-128, 128, size=(4, net.cols))
    np.testing.assert_array_equal(board.run(x), network_ref(net, x))
    with pytest.raises(BuildMismatch, match=r"cannot run this layer: the board runs a whole "
                                            r"network; this is one layer"):
        board.load(net.layers[0].layer)
    board.transport.close()
