"""The processor as a board's core (issue 14): IDENTIFY of its capacities, the host's fit
checks, and the CLI end to end: ``serve-sim --board icebreaker`` with no artifact serves
the board's processor in Verilator, and ``deploy``/``eval --on PORT`` run networks on it
over pyserial, every logit equal to the golden model's."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import random_network
from darbgen import datasets
from darbgen.boards import get_board
from darbgen.boards.core import PROCESSORS, processor_config
from darbgen.cli import main
from darbgen.config import ConfigError
from darbgen.format import Artifact
from darbgen.hdl import cores
from darbgen.hdl.protocol import IDENTIFY_FIELDS, identity_bytes, parse_identity
from darbgen.host import Board, SerialTransport
from darbgen.network import plan
from darbgen.processor import ProcessorConfig
from darbgen.processor_lstm import LSTMPlan, lstm_plan, lstm_provenance
from darbgen import lstm_format as lf
from darbgen.sim import lstm_golden as lg
from test_lstm_hw import text_streams, tiny  # noqa: F401
from darbgen.sim.golden import network_ref
from darbgen.sim.runner import simulator_available

SEED = 20261207
BOARD = get_board("icebreaker")

needs_verilator = pytest.mark.skipif(not simulator_available("verilator"),
                                     reason="verilator not installed")


# -- IDENTIFY and the fit checks (no simulator) ------------------------------------------

def test_identify_round_trips_the_processor_and_its_capacities():
    config = processor_config(BOARD)
    core = cores.describe(config)
    assert type(core) is cores.ProcessorCore
    body = identity_bytes(config, BOARD.clock_hz, BOARD.baud)
    head = sum(n for _, n in IDENTIFY_FIELDS)
    assert body[head - 2:head] == bytes([2, 1])             # core 2, one record
    assert parse_identity(body).config == config
    # Every capacity of the contract travels, whatever fields it gains.
    assert [name for name, _ in cores.CAPACITY_FIELDS] == \
        [f.name for f in dataclasses.fields(ProcessorConfig) if f.name != "engine"]
    assert core.capacity() | {"step_kinds": None} == {
        "weights": 40896, "activations": 784, "lanes": 4, "steps": 16, "step_kinds": None,
        "lane_slots": 256, "table_depth": 512, "max_steps": 16, "max_classes": 256,
        "map_depth": 5888, "gather_positions": 1536, "gather_columns": 768,
        "gather_pools": 16, "lstm_hidden": 0, "lstm_table": 0}
    assert core.capacity()["step_kinds"] == list(config.step_kinds) == ["linear", "conv"]
    ulx3s = processor_config(get_board("ulx3s"))
    assert ulx3s.step_kinds == ("linear", "conv", "lstm")
    assert parse_identity(identity_bytes(ulx3s, 25_000_000, 115_200)).config == ulx3s


def test_identify_of_an_invalid_processor_is_refused():
    config = processor_config(BOARD)
    body = bytearray(identity_bytes(config, BOARD.clock_hz, BOARD.baud))
    at = [name for name, _ in cores.CAPACITY_FIELDS].index("max_steps")
    end = len(body) - 4 * (len(cores.CAPACITY_FIELDS) - 1 - at)
    body[end - 4:end] = bytes(4)                            # max_steps: 0
    with pytest.raises(ValueError, match=r"^IDENTIFY reply describes no valid core \(the "
                                         r"layer-sequenced processor\): max_steps must be a "
                                         r"positive integer, not 0$"):
        parse_identity(bytes(body))


def test_every_board_has_a_default_processor():
    for name, sizes in PROCESSORS.items():
        config = processor_config(get_board(name))
        assert config.lanes == sizes.lanes and config.capacity == sizes.lanes * sizes.lane_depth
        assert processor_config(get_board(name), lanes=2).lane_depth == sizes.lane_depth


def test_a_network_too_wide_for_one_run_frame_is_refused(rng):
    """A processor of 1,100 activations holds the network, but a RUN frame carries 1,016
    inputs (2 a beat, 2 bytes each, after the 8-byte guard)."""
    from darbgen.host.driver import _check_run_frame

    config = processor_config(BOARD)
    wide = dataclasses.replace(config, engine=dataclasses.replace(
        config.engine, max_cols=1100, max_row_nnz=1100))
    net = plan(random_network(rng, dims=(1100, 8, 4), block_sizes=(32, 64)))
    core = cores.describe(wide)
    core.check_target(net)                                  # it fits the memories
    with pytest.raises(ConfigError, match=r"^the network's 1,100 inputs need 1,108 bytes in "
                                          r"one RUN frame, a frame carries at most 1,024$"):
        _check_run_frame(core, net)


# -- the CLI on one served board ----------------------------------------------------------

def serve(*args):
    """``darbgen serve-sim ARGS`` running: its port, until the generator is closed."""
    proc = subprocess.Popen([sys.executable, "-m", "darbgen.cli", "serve-sim", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        yield json.loads(line)["port"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def served():
    """``darbgen serve-sim --board icebreaker``: no artifact, the board's processor."""
    yield from serve("--board", "icebreaker")


def last_json(capsys):
    captured = capsys.readouterr()
    return json.loads(captured.out.strip().splitlines()[-1]), captured


@needs_verilator
def test_deploy_and_eval_digits_mlp_on_the_served_processor(served, digits_mlp, tmp_path,
                                                            capsys):
    art = digits_mlp[0]
    net = plan(Artifact.load(art))
    x, _ = datasets.test_split("digits")
    xq = net.quantize_input(x[:6]).astype(np.int8)
    np.save(tmp_path / "x.npy", xq)
    assert main(["deploy", str(art), "--port", served, "--timeout", "10",
                 "--inputs", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 0
    result, captured = last_json(capsys)
    assert result["exact"] is True and result["vectors"] == 6 and result["weights_verified"]
    cap = processor_config(BOARD)
    assert f"the layer-sequenced processor holding {cap.capacity:,} kept weights, " \
           f"{cap.act_depth:,} activations, 16 steps (linear, conv)" in captured.out
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), network_ref(net, xq))

    assert main(["eval", str(art), "--dataset", "digits", "--on", served, "--limit", "12",
                 "--timeout", "10"]) == 0
    result, _ = last_json(capsys)
    assert result["hw_matches_int"] is True and result["samples"] == 12


@needs_verilator
def test_another_network_runs_on_the_same_board_and_a_corrupted_weight_shows(served, rng):
    """A second network (other widths, other depth) on the same served processor, no
    rebuild; the same network with one weight changed gives other logits."""
    net = plan(random_network(rng, dims=(200, 96, 48, 7), block_sizes=(4, 8, 16)))
    x = rng.integers(-128, 128, size=(3, net.cols))
    with SerialTransport(served, BOARD.baud) as link:
        board = Board(link, timeout=10)
        board.load(net)
        golden = network_ref(net, x)
        np.testing.assert_array_equal(board.run(x), golden, err_msg=f"seed {SEED}")
        last = net.layers[-1]
        values = last.layer.values.copy()
        values[0] = ~values[0]
        changed = dataclasses.replace(net, layers=[
            *net.layers[:-1], dataclasses.replace(last, layer=dataclasses.replace(
                last.layer, values=values))])
        board.load(changed)
        y = board.run(x)
    assert not np.array_equal(y, golden)
    np.testing.assert_array_equal(y, network_ref(changed, x))


@needs_verilator
def test_deploy_refuses_what_does_not_fit_before_loading(served, rng, tmp_path, capsys):
    random_network(rng, dims=(1030, 8, 4), block_sizes=(32, 64)).save(tmp_path / "wide.darb")
    random_network(rng, dims=(16,) * 18 + (4,), relu=(True,) * 17,
                   block_sizes=(4,)).save(tmp_path / "deep.darb")
    with SerialTransport(served, BOARD.baud) as link:
        before = Board(link, timeout=10).status()
    for name, message in (
            ("wide", f"layer 'fc1' has 1,030 inputs, the processor's activations hold "
                     f"{processor_config(BOARD).act_depth:,}"),
            ("deep", "the network has 18 layers, the processor runs at most 16 steps")):
        assert main(["deploy", str(tmp_path / f"{name}.darb"), "--port", served,
                     "--timeout", "10"]) == 1
        err = capsys.readouterr().err
        assert f"cannot run this network: {message}" in err, err
    # Nothing was sent: the board holds what it held.
    with SerialTransport(served, BOARD.baud) as link:
        after = Board(link, timeout=10).status()
    assert (after["words"], after["weights_crc"]) == (before["words"], before["weights_crc"])


# -- build -------------------------------------------------------------------------------

def test_build_makes_the_processor_without_an_artifact(tmp_path, rng, capsys):
    """``darbgen build --board arty-a7`` (no open flow: the plan only, quick) writes the
    processor's capacity into report.json (at 2 of the board's 8 lanes each lane runs
    4 times the rows in a step); an artifact given is checked to fit."""
    assert main(["build", "--board", "arty-a7", "--lanes", "2", "-o",
                 str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["capacity"] | {"step_kinds": None} == {
        "weights": 2 * 8192, "activations": 1024, "lanes": 2, "steps": 16,
        "step_kinds": None, "lane_slots": 1024, "table_depth": 4096, "max_steps": 16,
        "max_classes": 0, "map_depth": 0, "gather_positions": 0, "gather_columns": 0,
        "gather_pools": 0, "lstm_hidden": 0, "lstm_table": 0}
    assert report["layer"] == "processor" and report["lanes"] == 2
    assert (tmp_path / "a" / "top.v").exists()
    random_network(rng, dims=(1030, 8, 4), block_sizes=(32, 64)).save(tmp_path / "w.darb")
    capsys.readouterr()
    assert main(["build", str(tmp_path / "w.darb"), "--board", "arty-a7", "-o",
                 str(tmp_path / "b")]) == 1
    assert capsys.readouterr().err == (
        f"darbgen build: error: {tmp_path / 'w.darb'} does not fit arty-a7's processor: "
        "layer 'fc1' has 1,030 inputs, the processor's activations hold 1,024\n")
    assert not (tmp_path / "b").exists()


@needs_verilator
def test_run_frames_of_partial_or_no_beats_are_refused(served):
    """The processor takes RUNs of 1 to x_depth whole beats (2 bytes each here): a RUN
    with a partial beat or none is refused by its length, before anything runs."""
    from darbgen.hdl.protocol import Command, Status, run_guard
    from darbgen.host import NakError

    with SerialTransport(served, BOARD.baud) as link:
        board = Board(link, timeout=10, retries=1)
        guard = run_guard(0, 0)
        for payload in (guard, guard + bytes(3), guard + bytes(101)):
            with pytest.raises(NakError) as refused:
                board.request(Command.RUN, payload)
            assert refused.value.status == Status.NAK_LENGTH.value, payload
        # A whole beat is the right length: refused for naming other weights instead.
        with pytest.raises(NakError) as refused:
            board.request(Command.RUN, guard + bytes(2))
        assert refused.value.status in (Status.NAK_WEIGHTS.value, Status.NO_WEIGHTS.value)


def deploy_in_turn(port, artifacts, tmp_path, capsys):
    """``deploy`` each of ``artifacts`` to the board at ``port`` with 3 digits test
    images: every logit equal to the golden model's."""
    x, _ = datasets.test_split("digits")
    for art in artifacts:
        net = plan(Artifact.load(art))
        np.save(tmp_path / "x.npy", net.quantize_input(x[:3]).astype(np.int8))
        assert main(["deploy", str(art), "--port", port, "--timeout", "20",
                     "--inputs", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 0
        result, _ = last_json(capsys)
        assert result["exact"] is True and result["vectors"] == 3
        np.testing.assert_array_equal(np.load(tmp_path / "y.npy"),
                                      network_ref(net, np.load(tmp_path / "x.npy")))


@needs_verilator
def test_one_served_icebreaker_runs_digits_mlp_then_digits_cnn(served, digits_mlp, digits_cnn,
                                                               tmp_path, capsys):
    """The iCEBreaker's processor as served (its banks SB_SPRAM256KA on Yosys's model,
    the gather in them) takes digits-mlp and then digits-cnn with no rebuild: every logit
    exact."""
    deploy_in_turn(served, (digits_mlp[0], digits_cnn[0]), tmp_path, capsys)


@pytest.fixture(scope="module")
def served_ulx3s():
    """``darbgen serve-sim --board ulx3s --lanes 4``: the ULX3S processor (at 4 lanes, to
    keep the simulation small; its gather holds LeNet-5, its cell the char LSTM)."""
    yield from serve("--board", "ulx3s", "--lanes", "4")


@needs_verilator
@pytest.mark.slow
def test_one_served_ulx3s_runs_digits_mlp_then_digits_cnn(served_ulx3s, digits_mlp, digits_cnn,
                                                          tmp_path, capsys):
    """The ULX3S processor takes digits-mlp and then digits-cnn with no rebuild: every
    logit exact (the same served build runs the char-LSTM step below). Slow, for the
    suite's budget: the served iCEBreaker's test runs the same networks, and the LSTM
    test below runs digits-mlp on this build too."""
    deploy_in_turn(served_ulx3s, (digits_mlp[0], digits_cnn[0]), tmp_path, capsys)


@pytest.fixture(scope="module")
def char_lstm(tiny, tmp_path_factory):  # noqa: F811
    """The trained hidden-16 char LSTM of tests/test_lstm_hw.py as an LSTM artifact (its
    gate layer and head, the calibrated c_frac in its provenance)."""
    path = tmp_path_factory.mktemp("lstm") / "char-lstm.darb"
    Artifact([tiny["gate"]], lstm_provenance(tiny["gate"].name, tiny["params"].c_frac)).save(path)
    return path


@needs_verilator
def test_deploy_runs_the_char_lstm_step_on_the_served_ulx3s(served_ulx3s, char_lstm, tiny,
                                                            digits_mlp, tmp_path, capsys):  # noqa: F811
    """``deploy`` of an LSTM artifact on the same served ULX3S processor that runs
    digits-mlp (one bitstream: only weights and program change): 6 characters of
    validation text as one sequence, every h and c equal to the golden step's; then the
    driver runs two streams with a reset between them; then digits-mlp again."""
    plan_ = lstm_plan(Artifact.load(char_lstm))
    assert plan_.params.c_frac == tiny["params"].c_frac
    for name in ("bias", "mult", "shift"):
        assert np.array_equal(getattr(plan_.params, name), getattr(tiny["params"], name)), name
    assert np.array_equal(plan_.gate.values, tiny["gate"].values)
    x, _ = text_streams(tiny, starts=(0,), length=6)
    np.save(tmp_path / "x.npy", x.astype(np.int8))
    assert main(["deploy", str(char_lstm), "--port", served_ulx3s, "--timeout", "20",
                 "--inputs", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 0
    result, captured = last_json(capsys)
    assert result["exact"] is True and result["vectors"] == 6, captured.err
    assert "of 'lstm.l0'" in captured.out
    y = np.load(tmp_path / "y.npy")
    h_gold, c_gold = lg.int_lstm_sequence(tiny["gate"], tiny["params"], x, np.arange(6) == 0)
    np.testing.assert_array_equal(y, np.concatenate([h_gold, c_gold], axis=1))
    assert np.abs(h_gold).max() > 50 and np.abs(c_gold).max() > 1000

    x2, reset = text_streams(tiny, starts=(700, 1400), length=4)
    with SerialTransport(served_ulx3s, get_board("ulx3s").baud) as link:
        board = Board(link, timeout=20)
        board.load(plan_)
        y2 = board.run(x2, reset=reset)
        with pytest.raises(ValueError, match=r"^the first step must reset the state$"):
            board.run(x2, reset=~reset)
    np.testing.assert_array_equal(y2, plan_.golden(x2, reset), err_msg=f"seed {SEED}")

    art = digits_mlp[0]
    net = plan(Artifact.load(art))
    xd, _ = datasets.test_split("digits")
    np.save(tmp_path / "xd.npy", net.quantize_input(xd[:2]).astype(np.int8))
    assert main(["deploy", str(art), "--port", served_ulx3s, "--timeout", "20",
                 "--inputs", str(tmp_path / "xd.npy"), "-o", str(tmp_path / "yd.npy")]) == 0
    assert last_json(capsys)[0]["exact"] is True


@needs_verilator
def test_a_corrupted_gate_weight_shows_in_the_served_lstm_step(served_ulx3s, tiny):  # noqa: F811
    """One recurrent weight of the gate layer changed: the board's h and c differ from
    the golden step's and equal the golden step of the changed layer."""
    gate, params = tiny["gate"], tiny["params"]
    inputs, _ = lf.lstm_shape(gate)
    recurrent = np.flatnonzero(gate.columns >= inputs)
    i = int(recurrent[len(recurrent) // 2])
    values = np.array(gate.values)
    values[i] = values[i] + 40 if values[i] < 80 else values[i] - 40
    bad = LSTMPlan(dataclasses.replace(gate, values=values), params)
    x, reset = text_streams(tiny, starts=(0,), length=4)
    with SerialTransport(served_ulx3s, get_board("ulx3s").baud) as link:
        board = Board(link, timeout=20)
        board.load(bad)
        y = board.run(x)
    assert not np.array_equal(y, LSTMPlan(gate, params).golden(x, reset))
    np.testing.assert_array_equal(y, bad.golden(x, reset))


@needs_verilator
def test_an_lstm_step_is_refused_by_a_processor_without_a_cell(served, char_lstm, capsys):
    """The iCEBreaker's processor has no LSTM cell: deploy refuses the char LSTM before
    loading it, naming the layer."""
    assert main(["deploy", str(char_lstm), "--port", served, "--timeout", "10"]) == 1
    err = capsys.readouterr().err
    assert "cannot run this LSTM step: layer 'lstm.l0' is an LSTM step: the processor has " \
           "no LSTM cell" in err, err


def test_eval_refuses_an_lstm_artifact(char_lstm, capsys):
    assert main(["eval", str(char_lstm), "--dataset", "digits"]) == 1
    err = capsys.readouterr().err
    assert "is an LSTM step: eval runs classifiers on a data set's test split" in err, err


def test_deploy_takes_a_cnn_s_images_not_its_patches(digits_cnn, tmp_path, capsys):
    """A network starting with a convolution takes flattened images; the check runs
    before any board is opened."""
    np.save(tmp_path / "x.npy", np.zeros((2, 9), np.int8))
    assert main(["deploy", str(digits_cnn[0]), "--port", str(tmp_path / "no-port"),
                 "--inputs", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 1
    assert capsys.readouterr().err.endswith(
        "x.npy: inputs must have shape (n, 64) for the network's first layer 'conv1', not "
        "(2, 9)\n")


@pytest.mark.slow
@needs_verilator
def test_the_hidden_128_char_lstm_fits_the_ulx3s_and_runs_served(served_ulx3s, tmp_path,
                                                                 capsys):
    """The char LSTM the ULX3S default's cell is sized for (bench/processor_lstm_bench.py's
    hidden-128 DARB-16 gate layer, trained there for about 2 minutes) fits the board's
    32-lane processor, and 16 characters of validation text run on the served board
    (4 lanes), every h and c exact."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from processor_lstm_bench import char_lstm as trained  # noqa: E402

    from darbgen.pruning.lstm import load_corpus
    from darbgen.processor_lstm import check_lstm

    corpus = load_corpus()
    _, gate = trained(corpus)
    params = lf.derive_params(gate, lg.calibrate(gate, corpus.train, n_streams=16, steps=256))
    check_lstm(gate, params, processor_config(get_board("ulx3s")))
    path = tmp_path / "char-lstm-128.darb"
    Artifact([gate], lstm_provenance(gate.name, params.c_frac)).save(path)
    x = lf.one_hot_inputs(corpus.valid[:16], lf.lstm_shape(gate)[0])
    np.save(tmp_path / "x.npy", x.astype(np.int8))
    assert main(["deploy", str(path), "--port", served_ulx3s, "--timeout", "30",
                 "--inputs", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 0
    assert last_json(capsys)[0]["exact"] is True
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"),
                                  LSTMPlan(gate, params).golden(x, np.arange(16) == 0))


# -- the issue's models through the host driver (slow: tens of thousands of load words
# cross the simulated UART; bench-sized, run by hand: `pytest -m slow -k issues_models`) --

def issue_model(name: str):
    """The issue's models as networks: a random DARB-16 784-300-100-10 MLP (every row's
    blocks of 16 keep one weight) and a random DARB LeNet-5 on 28x28."""
    from conftest import random_lenet5
    if name == "lenet5":
        return random_lenet5(SEED)
    rng = np.random.default_rng(SEED)
    return plan(random_network(rng, dims=(784, 300, 100, 10), block_sizes=(16,),
                               calibration=rng.integers(-128, 128, size=(64, 784))))


@needs_verilator
@pytest.mark.slow
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s"])
def test_the_issues_models_run_on_one_served_board(board, request):
    """LeNet-5 and then the 784-300-100-10 MLP on one served processor (the ULX3S's at 4
    lanes, to keep the simulation small), loaded and run through the host driver with
    no rebuild: every logit equal to the golden model's."""
    port = request.getfixturevalue("served" if board == "icebreaker" else "served_ulx3s")
    rng = np.random.default_rng(SEED)
    with SerialTransport(port, get_board(board).baud) as link:
        dev = Board(link, timeout=60)
        for name in ("lenet5", "784-300-100-10"):
            net = issue_model(name)
            x = rng.integers(0, 128, size=(2, 784)).astype(np.int8)
            dev.load(net)
            np.testing.assert_array_equal(dev.run(x), network_ref(net, x),
                                          err_msg=f"{board} {name} seed {SEED}")
