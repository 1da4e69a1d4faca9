"""The CLI contract: prune / inspect / dense, their JSON, and their errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from darbgen.cli import main
from darbgen.format import Artifact

DARBGEN = [sys.executable, "-m", "darbgen.cli"]


def run(*args, cwd=None):
    return subprocess.run([*DARBGEN, *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def weights(tmp_path, rng):
    path = tmp_path / "w.npy"
    np.save(path, rng.normal(size=(24, 100)) * rng.uniform(0.2, 2, size=(24, 1)))
    return path


INSPECT_KEYS = {"name", "rows", "cols", "method", "nnz", "pruning_ratio", "weight_bits",
                "index_bits_per_nnz", "scale", "block_sizes"}


@pytest.mark.parametrize("args, method", [
    (["--method", "darb", "--ratio", "8"], "darb"),
    (["--method", "darb", "--ratio", "4", "--block-sizes", "2,8,32", "--keep", "1"], "darb"),
    (["--method", "bmwm", "--block-size", "8"], "bmwm"),
    (["--method", "bmwm", "--block-size", "16", "--keep", "2"], "bmwm"),
    (["--method", "nm", "--block-size", "4", "--keep", "2"], "nm"),
    (["--method", "block", "--ratio", "4", "--block-size", "2x8"], "block"),
    (["--method", "block", "--ratio", "4", "--block-size", "4"], "block"),
    (["--method", "irregular", "--ratio", "10"], "irregular"),
    (["--method", "darb", "--weight-bits", "4"], "darb"),
])
def test_prune_npy_then_inspect_and_dense(weights, tmp_path, capsys, args, method):
    out = tmp_path / "w.darb"
    assert main(["prune", str(weights), *args, "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["format_version"] == 1
    (layer,) = info["layers"]
    assert INSPECT_KEYS <= set(layer)
    assert layer["name"] == "layer0" and layer["method"] == method
    assert (layer["rows"], layer["cols"]) == (24, 100)
    assert layer["pruning_ratio"] == pytest.approx(summary["pruning_ratio"])
    assert len(layer["scale"]) == 24 and len(layer["block_sizes"]) == 24
    if "--ratio" in args:
        target = float(args[args.index("--ratio") + 1])
        assert abs(layer["pruning_ratio"] - target) <= 0.25 * target
    dense = tmp_path / "d.npy"
    assert main(["dense", str(out), "--layer", "layer0", "-o", str(dense)]) == 0
    w = np.load(dense)
    assert w.shape == (24, 100) and w.dtype.kind == "i"
    assert np.count_nonzero(w) <= layer["nnz"]
    # W * scale approximates the kept float weights
    orig = np.load(weights)
    scale = np.asarray(layer["scale"])[:, None]
    kept = w != 0
    assert np.allclose((w * scale)[kept], orig[kept], atol=scale.max() / 2 + 1e-12)
    assert main(["inspect", str(out)]) == 0
    table = capsys.readouterr().out
    assert "layer0" in table and "idx bits/nnz" in table


def test_prune_torch_model_sources(tmp_path, capsys):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(),
                                torch.nn.LSTM(16, 8))
    for kind, obj in (("state", model.state_dict()),
                      ("checkpoint", {"model_state_dict": model.state_dict(), "epoch": 1})):
        src = tmp_path / f"{kind}.pt"
        torch.save(obj, src)
        out = tmp_path / f"{kind}.darb"
        assert main(["prune", str(src), "--method", "darb", "--ratio", "4", "-o", str(out)]) == 0
        names = [l.name for l in Artifact.load(out).layers]
        assert names == ["0", "2.l0"], names
        lstm = Artifact.load(out).layer("2.l0")
        assert (lstm.rows, lstm.cols) == (32, 24)


@pytest.fixture(scope="module")
def digits_artifact(digits_mlp):
    return digits_mlp           # conftest: pruned once per session, shared with test_processor


def test_prune_digits_mlp(digits_artifact):
    out, stdout = digits_artifact
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["pruning_ratio"] == pytest.approx(16, rel=0.05)
    assert summary["accuracy_dense"] > 0.95
    assert summary["accuracy_dense"] - summary["accuracy_quantized"] < 0.03
    artifact = Artifact.load(out)
    assert [l.name for l in artifact.layers] == ["fc1", "fc2", "fc3"]
    assert [(l.rows, l.cols) for l in artifact.layers] == [(300, 64), (100, 300), (10, 100)]
    assert artifact.provenance["source"] == "digits-mlp"
    assert all(l.bias is not None for l in artifact.layers)


def test_eval_digits_whole_network_on_verilator(digits_artifact):
    """The issue's bar: ≥ 13× with at most 1 point lost against dense, and the chain of
    engines equal to the integer model on the whole evaluation split."""
    out, _ = digits_artifact
    artifact = Artifact.load(out)
    assert [l.activation for l in artifact.layers] == ["relu", "relu", "none"]
    assert artifact.layers[0].input_scale == 1 / 16
    proc = run("eval", out, "--dataset", "digits", "--on", "verilator")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {"accuracy_dense", "accuracy_int", "accuracy_hw", "hw_matches_int",
                           "pruning_ratio", "samples"}
    assert result["samples"] == 360 and result["hw_matches_int"] is True
    assert result["pruning_ratio"] >= 13
    assert result["accuracy_dense"] - result["accuracy_int"] <= 0.01
    assert result["accuracy_hw"] == result["accuracy_int"]


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "cifar"], "unknown dataset 'cifar'; choose one of digits"),
    (["--dataset", "digits", "--limit", "0"], "--limit must be a positive integer, not 0"),
    (["--dataset", "digits", "--on", "/dev/ttyUSB9"],
     "cannot open /dev/ttyUSB9: [Errno 2] could not open port /dev/ttyUSB9"),
    (["--dataset", "digits", "--on", "/dev/ttyUSB9", "--timeout", "nan"],
     "--timeout must be a positive number of seconds, not nan"),
])
def test_eval_bad_input(digits_artifact, extra, message):
    proc = run("eval", digits_artifact[0], *extra)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"darbgen eval: error: {message}" or message in proc.stderr
    assert proc.stdout == ""


def test_eval_needs_calibrated_layers(weights, tmp_path):
    out = tmp_path / "w.darb"
    assert run("prune", weights, "--method", "darb", "--ratio", "8", "-o", out).returncode == 0
    proc = run("eval", out, "--dataset", "digits")
    assert proc.returncode == 1
    assert "layer 'layer' has no input_scale" in proc.stderr or "has no input_scale" in proc.stderr


def test_prune_digits_cnn_conv_layers(digits_cnn):
    out, stdout = digits_cnn           # conftest: pruned once per session, shared
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["accuracy_dense"] - summary["accuracy_quantized"] < 0.03
    conv2 = Artifact.load(out).layer("conv2")
    assert conv2.shape == (32, 16, 3, 3) and (conv2.rows, conv2.cols) == (32, 144)
    # The geometry im2col needs is recorded, so the whole CNN runs in integers.
    from darbgen.conv import ConvSpec
    assert conv2.conv == ConvSpec((8, 8), 1, 1, 2)
    proc = run("eval", out, "--dataset", "digits")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["accuracy_dense"] - result["accuracy_int"] < 0.05


def test_inspect_table_of_digits(digits_artifact):
    out, _ = digits_artifact
    proc = run("inspect", out)
    assert proc.returncode == 0
    assert "fc1" in proc.stdout and "accuracy:" in proc.stdout
    info = json.loads(run("inspect", out, "--json").stdout.strip().splitlines()[-1])
    assert set(info["layers"][0]["block_sizes"]) <= {2, 4, 8, 16, 32, 64}


@pytest.mark.parametrize("args, message", [
    (["prune", "{npy}", "--method", "bmwm", "--ratio", "8"],
     "--ratio does not apply to --method bmwm"),
    (["prune", "{npy}", "--method", "nm", "--block-size", "3"], "M must be a power of 2, not 3"),
    (["prune", "{npy}", "--method", "darb", "--ratio", "0.5"],
     "pruning ratio must be at least 1 (dense size / kept weights), not 0.5"),
    (["prune", "{npy}", "--method", "darb", "--block-sizes", "2,6"],
     "block size must be a power of 2, not 6"),
    (["prune", "{npy}", "--method", "darb", "--weight-bits", "1"],
     "weight bits must be an integer between 2 and 16, not 1"),
    (["prune", "{tmp}/missing.npy", "--method", "darb"], "{tmp}/missing.npy: no such file"),
    (["prune", "{bad_npy}", "--method", "darb"], "must hold a 2-D float matrix, not int64 of shape (3,)"),
    (["prune", "{junk}", "--method", "darb"], "not a .npy, ONNX, .pt2 or torch.save file"),
    (["inspect", "{junk}"], "not a readable darbgen artifact"),
    (["dense", "{darb}", "--layer", "fc9"], "no layer 'fc9'; the artifact has 'layer0'"),
])
def test_errors_are_one_line_without_traceback_and_write_nothing(tmp_path, weights, args, message):
    np.save(tmp_path / "bad.npy", np.arange(3))
    (tmp_path / "junk.bin").write_bytes(b"not a model at all")
    good = tmp_path / "good.darb"
    assert main(["prune", str(weights), "--method", "darb", "-o", str(good)]) == 0
    fill = {"npy": weights, "tmp": tmp_path, "bad_npy": tmp_path / "bad.npy",
            "junk": tmp_path / "junk.bin", "darb": good}
    argv = [a.format(**fill) for a in args]
    before = set(os.listdir(tmp_path))
    if argv[0] != "inspect":
        argv += ["-o", str(tmp_path / "out.file")]
    proc = run(*argv)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message.format(**fill) in lines[0]
    assert "Traceback" not in proc.stderr
    assert set(os.listdir(tmp_path)) == before          # nothing written, nothing half-written


def test_verbose_shows_traceback(tmp_path):
    proc = run("-v", "inspect", tmp_path / "nope.darb")
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    proc = run("inspect", tmp_path / "nope.darb", "-v")
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_usage_errors_exit_2():
    proc = run("prune", "x.npy", "--method", "magic", "-o", "o.darb")
    assert proc.returncode == 2 and "invalid choice: 'magic'" in proc.stderr


# -- generate / simulate -----------------------------------------------------------------

@pytest.fixture
def small_artifact(tmp_path, weights):
    out = tmp_path / "small.darb"
    assert main(["prune", str(weights), "--method", "darb", "--ratio", "8", "-o", str(out)]) == 0
    return out


def test_generate_writes_verilog_and_port_json(small_artifact, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", str(small_artifact), "-o", str(out), "--lanes", "4"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["lanes"] == 4
    text = (out / "darbgen_engine.v").read_text()
    assert "module darbgen_engine" in text
    info = json.loads((out / "darbgen_engine.json").read_text())
    assert info["config"]["lanes"] == 4
    ports = info["ports"]["interface"]["members"]
    assert {"load", "x", "y"} <= set(ports)
    assert info["layers"][0]["name"] == "layer0"


def test_generate_unknown_board(small_artifact, tmp_path):
    proc = run("generate", small_artifact, "-o", tmp_path / "g", "--board", "nexys")
    assert proc.returncode == 1 and "unknown board 'nexys'" in proc.stderr
    assert not (tmp_path / "g").exists()


def test_simulate_is_exact_and_reports_utilization(small_artifact, tmp_path, rng):
    x = rng.integers(-128, 128, size=(5, 100)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    proc = run("simulate", small_artifact, "--inputs", tmp_path / "x.npy", "-o",
               tmp_path / "y.npy", "--lanes", "4")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"cycles", "nnz", "lanes", "utilization", "simulator"} <= set(result)
    assert result["simulator"] == "verilator" and result["lanes"] == 4 and result["exact"]
    layer = Artifact.load(small_artifact).layers[0]
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.int64 and y.shape == (5, 24)
    assert np.array_equal(y, x.astype(np.int64) @ layer.to_dense().astype(np.int64).T)
    assert result["utilization"] == pytest.approx(layer.nnz * 5 / (4 * result["cycles"]))


@pytest.mark.parametrize("make_x, message", [
    (lambda: np.zeros((2, 100), np.int16), "inputs must be int8, not int16"),
    (lambda: np.zeros((2, 99), np.int8), "inputs must have shape (n, 100) for layer 'layer0'"),
])
def test_simulate_bad_inputs(small_artifact, tmp_path, make_x, message):
    np.save(tmp_path / "x.npy", make_x())
    proc = run("simulate", small_artifact, "--inputs", tmp_path / "x.npy", "-o",
               tmp_path / "y.npy")
    assert proc.returncode == 1 and message in proc.stderr
    assert not (tmp_path / "y.npy").exists()


# -- sap ---------------------------------------------------------------------------------

def test_prune_sap_npy_and_sap_darb(weights, tmp_path, capsys):
    out = tmp_path / "sap.darb"
    assert main(["prune", str(weights), "--method", "sap", "--pq", "1,2", "-o", str(out)]) == 0
    layer = Artifact.load(out).layers[0]
    assert layer.method == "sap" and 1 < layer.pruning_ratio < 3
    assert layer.params["p"] == 1 and layer.params["scope"] == "neuron"
    out2 = tmp_path / "sapdarb.darb"
    assert main(["prune", str(weights), "--method", "sap", "--block-sizes", "2,4,8",
                 "-o", str(out2)]) == 0
    layer2 = Artifact.load(out2).layers[0]
    assert layer2.method == "sap-darb" and set(layer2.block_sizes.tolist()) <= {2, 4, 8}


def test_prune_sap_example(tmp_path):
    out = tmp_path / "sap.darb"
    proc = run("prune", "digits-mlp", "--method", "sap", "--iterations", "2", "--eta-r", "0.1",
               "--block-sizes", "2,4,8,16,32,64", "-o", out)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["accuracy_pruned"] > 0.9 and summary["pruning_ratio"] > 1.5
    assert all(l.method == "sap-darb" for l in Artifact.load(out).layers)


@pytest.mark.parametrize("args, message", [
    (["--method", "darb", "--scope", "layer"], "--scope does not apply to --method darb"),
    (["--method", "sap", "--pq", "2,1"], "PQ Index needs 0 < p < q, not p=2.0, q=1.0"),
    (["--method", "sap", "--ratio", "4"], "--ratio does not apply to --method sap"),
])
def test_prune_sap_errors(weights, tmp_path, args, message):
    proc = run("prune", weights, *args, "-o", tmp_path / "o.darb")
    assert proc.returncode == 1 and message in proc.stderr
    assert not (tmp_path / "o.darb").exists()


# -- blkrew / structured -----------------------------------------------------------------

@pytest.fixture
def cnn_model(tmp_path):
    from darbgen.pruning.examples import digits_cnn
    path = tmp_path / "cnn.pt"
    torch.save(digits_cnn().state_dict(), path)
    return path


def test_prune_blkrew_oneshot(weights, tmp_path):
    out = tmp_path / "b.darb"
    assert main(["prune", str(weights), "--method", "blkrew", "--ratio", "4",
                 "--block-size", "4x8", "-o", str(out)]) == 0
    layer = Artifact.load(out).layers[0]
    assert layer.method == "blkrew" and 3 < layer.pruning_ratio < 6
    mask = layer.mask()
    for i in range(0, 24, 4):
        for j in range(0, 100, 8):
            blk = mask[i:i + 4, j:j + 8]
            assert np.array_equal(blk, np.outer(blk.any(axis=1), blk.any(axis=0)))


def test_prune_structured_oneshot_model(cnn_model, tmp_path):
    out = tmp_path / "s.darb"
    assert main(["prune", str(cnn_model), "--method", "structured", "--granularity",
                 "feature_map", "--keep-fraction", "0.5", "-o", str(out)]) == 0
    art = Artifact.load(out)
    conv2 = art.layer("conv2")
    assert conv2.pruning_ratio == pytest.approx(2.0)
    assert art.layer("fc1").index_bits_per_nnz == 0          # unpruned: dense layout


def test_prune_structured_example(tmp_path):
    proc = run("prune", "digits-cnn", "--method", "structured", "--granularity", "strided",
               "-o", tmp_path / "s.darb")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["accuracy_pruned"] > 0.9


@pytest.mark.parametrize("source, args, message", [
    ("npy", ["--method", "structured"], "structured pruning needs Conv2d weights"),
    ("cnn", ["--method", "structured", "--selector", "particle"],
     "the particle filter needs data"),
    ("npy", ["--method", "darb", "--lam", "0.1"], "--lam does not apply to --method darb"),
    ("npy", ["--method", "blkrew", "--granularity", "kernel"],
     "--granularity does not apply to --method blkrew"),
])
def test_prune_structured_blkrew_errors(weights, cnn_model, tmp_path, source, args, message):
    src = weights if source == "npy" else cnn_model
    proc = run("prune", src, *args, "-o", tmp_path / "o.darb")
    assert proc.returncode == 1 and message in proc.stderr
    assert not (tmp_path / "o.darb").exists()


def test_structured_feature_maps_compact_columns(cnn_model, tmp_path, rng):
    out = tmp_path / "fm.darb"
    assert main(["prune", str(cnn_model), "--method", "structured", "--granularity",
                 "feature_map", "--keep-fraction", "0.5", "-o", str(out)]) == 0
    conv2 = Artifact.load(out).layer("conv2")
    assert (conv2.cols, conv2.input_width) == (72, 144)        # 8 of 16 channels × 9
    assert conv2.index_bits_per_nnz == 0                        # the rest is dense
    assert main(["dense", str(out), "--layer", "conv2", "-o", str(tmp_path / "w.npy")]) == 0
    w = np.load(tmp_path / "w.npy")
    assert w.shape == (32, 144)
    x = rng.integers(-128, 128, size=(3, 144)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    proc = run("simulate", out, "--layer", "conv2", "--inputs", tmp_path / "x.npy", "-o",
               tmp_path / "y.npy", "--lanes", "4")
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"),
                          x.astype(np.int64) @ w.astype(np.int64).T)
