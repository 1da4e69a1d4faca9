"""Bad input across the whole CLI: every subcommand with wrong shapes and dtypes, missing
and unreadable files, unknown boards, methods, layers and data sets, numbers out of
range. Each must print exactly one line on stderr (``darbgen CMD: error: ...``, no
traceback), exit non-zero (2 for usage errors, 1 otherwise) and leave no output file
behind. The CLI runs in-process; nothing here builds or simulates hardware (a guard
fails the test if a bad command got that far)."""

import json
import os
import re

import numpy as np
import pytest
import torch

import darbgen.boards
from darbgen.cli import main
from darbgen.format import Artifact, SparseLayer
from darbgen.sim.fuzz import _npy_with_header

from conftest import random_layer

SEED = 20261121


def calibrated(rng, name, rows, cols, relu):
    layer = random_layer(rng, rows, cols, [2, 4], name=name)
    return SparseLayer(name=name, rows=rows, cols=cols, block_sizes=layer.block_sizes,
                       keep=layer.keep, offsets=layer.offsets, values=layer.values,
                       scale=layer.scale, method="darb", bias=rng.normal(size=rows) * 0.01,
                       input_scale=1 / 16, activation="relu" if relu else "none")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs of every kind, in a directory of their own (checked unchanged too)."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(SEED)
    Artifact([random_layer(rng, 12, 40, [2, 4, 8], name="fc1"),
              random_layer(rng, 5, 12, [4], name="fc2")], {"source": "test"}).save(d / "a.darb")
    Artifact([calibrated(rng, "fc1", 16, 64, True), calibrated(rng, "fc2", 10, 16, False)],
             {"source": "test"}).save(d / "net.darb")
    (d / "cut.darb").write_bytes((d / "a.darb").read_bytes()[:300])
    (d / "junk.bin").write_bytes(b"not a model, not an artifact, not an array")
    (d / "folder").mkdir()
    np.save(d / "w.npy", rng.normal(size=(24, 100)))
    for name, arr in {"w_1d": rng.normal(size=5), "w_3d": rng.normal(size=(2, 3, 4)),
                      "w_int": np.arange(12).reshape(3, 4), "w_nan": np.full((4, 8), np.nan),
                      "w_empty": np.zeros((0, 8)), "w_complex": np.ones((4, 8), complex),
                      "x": rng.integers(-128, 128, size=(3, 40)).astype(np.int8),
                      "x_cols": np.zeros((3, 39), np.int8), "x_1d": np.zeros(40, np.int8),
                      "x_3d": np.zeros((1, 3, 40), np.int8), "x_f32": np.zeros((3, 40), np.float32),
                      "x_i16": np.zeros((3, 40), np.int16), "x_bool": np.zeros((3, 40), bool),
                      "x_net": np.zeros((2, 64), np.int8)}.items():
        np.save(d / f"{name}.npy", arr)
    np.save(d / "x_obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    (d / "x_lie.npy").write_bytes(_npy_with_header(
        {"descr": "|i1", "fortran_order": False, "shape": (1 << 40, 40)}, b"\0" * 40))
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3)).state_dict(), d / "cnn.pt")
    # Hostile files (issue 16): a FIFO, and artifacts that claim what their bytes do not hold.
    os.mkfifo(d / "fifo")
    np.save(d / "x_empty.npy", np.zeros((0, 40), np.int8))
    craft_artifact(d / "dense-1gib.darb", rows=1 << 15, cols=1 << 15,
                   block_sizes=np.full(1 << 15, 1 << 15, np.uint32),
                   keep=np.r_[np.zeros((1 << 15) - 1, np.uint32), 1], offsets=[0], values=[1])
    craft_artifact(d / "cols-2e63.darb", cols=1 << 63)
    craft_artifact(d / "bomb.darb", values=np.zeros(80_000_000, np.int8))
    craft_artifact(d / "uint64.darb", values=np.array([2**64 - 1, 1, 1], np.uint64))
    craft_artifact(d / "bad-provenance.darb", provenance={"training": "x", "accuracy": [1]},
                   input_scale=0.0625)
    return d


def craft_artifact(path, provenance=None, **fields):
    """A one-layer artifact (3 × 4, dense) written by hand, with ``fields`` replacing its
    manifest entries or arrays: what darbgen would never write."""
    import io
    import json
    import zipfile
    layer = {"name": "fc", "rows": 3, "cols": 4, "shape": [3, 4], "method": "x", "params": {},
             "weight_bits": 8, "scale_per": "layer", "activation": "none", "arrays": {}}
    arrays = {"block_sizes": np.ones(3, np.uint32), "keep": np.ones(3, np.uint32),
              "offsets": np.zeros(12, np.uint8), "values": np.ones(12, np.int8),
              "scale": np.float64(1.0)}
    for key, value in fields.items():
        (arrays if key in arrays else layer)[key] = value
    if "cols" in fields:
        layer["shape"] = [layer["rows"], layer["cols"]]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.save(buf, np.asarray(value))
            layer["arrays"][name] = f"layers/0/{name}.npy"
            z.writestr(layer["arrays"][name], buf.getvalue())
        z.writestr("manifest.json", json.dumps({
            "format": "darbgen-artifact", "format_version": 1,
            "provenance": provenance or {}, "layers": [layer]}))


def snapshot(*dirs):
    return {p for d in dirs for p in d.rglob("*")}


def run(argv, capsys):
    """``main(argv)`` in-process: (exit status, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as e:                 # argparse usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def nothing_heavy(monkeypatch):
    """A bad command must fail before it builds, serves or trains anything."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a bad command got as far as building or serving")
    monkeypatch.setattr(darbgen.boards, "build", forbidden)
    monkeypatch.setattr(os, "execv", forbidden)
    import darbgen.pruning.examples as examples
    monkeypatch.setattr(examples, "run_example", forbidden)


# (id, argv with {in} = the inputs directory and {out} = an empty output directory,
#  exit status, regex for the message after "darbgen CMD: error: ")
CASES = [
    # -- prune ----------------------------------------------------------------------------
    ("prune-missing", "prune {in}/nope.npy --method darb -o {out}/p.darb", 1,
     r".*nope\.npy: no such file \(built-in examples: digits-mlp, .*\)"),
    ("prune-directory", "prune {in}/folder --method darb -o {out}/p.darb", 1,
     r".*folder: is a directory, not a \.npy file or a saved torch model"),
    ("prune-junk", "prune {in}/junk.bin --method darb -o {out}/p.darb", 1,
     r".*junk\.bin: not a \.npy, ONNX, \.pt2 or torch\.save file"),
    ("prune-1d", "prune {in}/w_1d.npy --method darb -o {out}/p.darb", 1,
     r".*w_1d\.npy: must hold a 2-D float matrix, not float64 of shape \(5,\)"),
    ("prune-3d", "prune {in}/w_3d.npy --method darb -o {out}/p.darb", 1,
     r".*w_3d\.npy: must hold a 2-D float matrix, not float64 of shape \(2, 3, 4\)"),
    ("prune-int", "prune {in}/w_int.npy --method darb -o {out}/p.darb", 1,
     r".*w_int\.npy: must hold a 2-D float matrix, not int64 of shape \(3, 4\)"),
    ("prune-complex", "prune {in}/w_complex.npy --method darb -o {out}/p.darb", 1,
     r".*w_complex\.npy: must hold a 2-D float matrix, not complex128 of shape \(4, 8\)"),
    ("prune-nan", "prune {in}/w_nan.npy --method darb -o {out}/p.darb", 1,
     r".*w_nan\.npy: holds non-finite weights \(NaN or infinity\)"),
    ("prune-empty", "prune {in}/w_empty.npy --method darb -o {out}/p.darb", 1,
     r".*w_empty\.npy: holds an empty matrix of shape \(0, 8\)"),
    ("prune-unknown-method", "prune {in}/w.npy --method magic -o {out}/p.darb", 2,
     r"argument --method: invalid choice: 'magic' \(choose from .*"),
    ("prune-unknown-example", "prune digits-foo --method darb -o {out}/p.darb", 1,
     r"digits-foo: no such file \(built-in examples: digits-mlp, .*\)"),
    ("prune-ratio-below-1", "prune {in}/w.npy --method darb --ratio 0.5 -o {out}/p.darb", 1,
     r"pruning ratio must be at least 1 \(dense size / kept weights\), not 0\.5"),
    ("prune-ratio-negative", "prune {in}/w.npy --method irregular --ratio -3 -o {out}/p.darb",
     1, r"pruning ratio must be at least 1 .*, not -3\.0"),
    ("prune-ratio-nan", "prune {in}/w.npy --method darb --ratio nan -o {out}/p.darb", 1,
     r".*ratio.*nan"),
    ("prune-ratio-inf", "prune {in}/w.npy --method block --ratio inf -o {out}/p.darb", 1,
     r".*ratio.*inf"),
    ("prune-ratio-not-a-number", "prune {in}/w.npy --method darb --ratio lots -o {out}/p.darb",
     2, r"argument --ratio: must be a number, not 'lots'"),
    ("prune-keep-0", "prune {in}/w.npy --method bmwm --keep 0 -o {out}/p.darb", 1,
     r".*keep.*0"),
    ("prune-keep-over-block", "prune {in}/w.npy --method bmwm --block-size 4 --keep 5 "
     "-o {out}/p.darb", 1, r".*keep.*5.*"),
    ("prune-block-size-0", "prune {in}/w.npy --method bmwm --block-size 0 -o {out}/p.darb", 1,
     r".*[Bb]lock size.*0"),
    ("prune-nm-not-power", "prune {in}/w.npy --method nm --block-size 3 -o {out}/p.darb", 1,
     r".*M must be a power of 2, not 3"),
    ("prune-block-sizes-0", "prune {in}/w.npy --method darb --block-sizes 2,0 -o {out}/p.darb",
     1, r".*block size.*0"),
    ("prune-weight-bits-1", "prune {in}/w.npy --method darb --weight-bits 1 -o {out}/p.darb",
     1, r"weight bits must be an integer between 2 and 16, not 1"),
    ("prune-weight-bits-17", "prune {in}/w.npy --method darb --weight-bits 17 -o {out}/p.darb",
     1, r"weight bits must be an integer between 2 and 16, not 17"),
    ("prune-option-of-other-method", "prune {in}/w.npy --method bmwm --ratio 8 -o {out}/p.darb",
     1, r"--ratio does not apply to --method bmwm"),
    ("prune-pq-order", "prune {in}/w.npy --method sap --pq 2,1 -o {out}/p.darb", 1,
     r"PQ Index needs 0 < p < q, not p=2\.0, q=1\.0"),
    ("prune-beta-over-1", "prune {in}/w.npy --method sap --beta 2 -o {out}/p.darb", 1,
     r"SAP needs eta_r >= 0, gamma >= 0 and 0 <= beta <= 1, not eta_r=0\.0, gamma=1\.0, "
     r"beta=2\.0"),
    ("prune-iterations-0", "prune digits-mlp --method sap --iterations 0 -o {out}/p.darb", 1,
     r"--iterations must be a positive integer, not 0"),
    ("prune-lam-negative", "prune {in}/w.npy --method blkrew --lam -1 -o {out}/p.darb", 1,
     r"--lam must be a non-negative number, not -1\.0"),
    ("prune-keep-fraction-over-1", "prune {in}/cnn.pt --method structured --keep-fraction 1.5 "
     "-o {out}/p.darb", 1, r".*keep.fraction.*1\.5"),
    ("prune-stride-0", "prune {in}/cnn.pt --method structured --granularity strided "
     "--stride 0 -o {out}/p.darb", 1, r"--stride must be a positive integer, not 0"),
    ("prune-output-dir-missing", "prune {in}/w.npy --method darb -o {out}/no/such/p.darb", 1,
     r".*no/such: no such directory for the output"),
    ("prune-output-is-dir", "prune {in}/w.npy --method darb -o {in}/folder", 1,
     r".*folder: is a directory, not an output file"),
    ("prune-no-output", "prune {in}/w.npy --method darb", 2,
     r"the following arguments are required: -o/--output"),
    # -- inspect / dense ----------------------------------------------------------------------
    ("inspect-missing", "inspect {in}/nope.darb", 1, r".*nope\.darb: no such file"),
    ("inspect-directory", "inspect {in}/folder", 1, r".*folder: is a directory, not an artifact"),
    ("inspect-junk", "inspect {in}/junk.bin", 1,
     r".*junk\.bin: not a readable darbgen artifact \(corrupt or truncated zip: .*\)"),
    ("inspect-truncated", "inspect {in}/cut.darb", 1,
     r".*cut\.darb: not a readable darbgen artifact \(corrupt or truncated zip.*"),
    ("inspect-npy-not-artifact", "inspect {in}/w.npy", 1,
     r".*w\.npy: not a readable darbgen artifact \(corrupt or truncated zip: .*\)"),
    ("dense-unknown-layer", "dense {in}/a.darb --layer fc9 -o {out}/w.npy", 1,
     r"no layer 'fc9'; the artifact has 'fc1', 'fc2'"),
    ("dense-missing", "dense {in}/nope.darb --layer fc1 -o {out}/w.npy", 1,
     r".*nope\.darb: no such file"),
    ("dense-output-dir-missing", "dense {in}/a.darb --layer fc1 -o {out}/no/w.npy", 1,
     r".*no: no such directory for the output"),
    ("dense-output-is-dir", "dense {in}/a.darb --layer fc1 -o {in}/folder", 1,
     r".*folder: is a directory, not an output file"),
    # -- generate -------------------------------------------------------------------------------
    ("generate-lanes-0", "generate {in}/a.darb --lanes 0 -o {out}/g", 1,
     r"--lanes must be a positive integer, not 0"),
    ("generate-lanes-negative", "generate {in}/a.darb --lanes -4 -o {out}/g", 1,
     r"--lanes must be a positive integer, not -4"),
    ("generate-lanes-not-int", "generate {in}/a.darb --lanes two -o {out}/g", 2,
     r"argument --lanes: invalid int value: 'two'"),
    ("generate-unknown-board", "generate {in}/a.darb --board nexys -o {out}/g", 1,
     r"unknown board 'nexys'; choose from icebreaker, ulx3s, arty-a7"),
    ("generate-unknown-layer", "generate {in}/a.darb --board icebreaker --layer fc9 -o {out}/g",
     1, r"no layer 'fc9'; the artifact has 'fc1', 'fc2'"),
    ("generate-layer-without-board", "generate {in}/a.darb --layer fc1 -o {out}/g", 1,
     r"--layer needs --board \(the engine alone is sized for every layer\)"),
    ("generate-missing", "generate {in}/nope.darb -o {out}/g", 1, r".*nope\.darb: no such file"),
    ("generate-output-is-file", "generate {in}/a.darb -o {in}/w.npy", 1,
     r".*w\.npy: is a file, not an output directory"),
    # -- simulate -------------------------------------------------------------------------------
    ("simulate-wrong-cols", "simulate {in}/a.darb --inputs {in}/x_cols.npy -o {out}/y.npy", 1,
     r".*x_cols\.npy: inputs must have shape \(n, 40\) for layer 'fc1', not \(3, 39\)"),
    ("simulate-1d", "simulate {in}/a.darb --inputs {in}/x_1d.npy -o {out}/y.npy", 1,
     r".*x_1d\.npy: inputs must have shape \(n, 40\) for layer 'fc1', not \(40,\)"),
    ("simulate-3d", "simulate {in}/a.darb --inputs {in}/x_3d.npy -o {out}/y.npy", 1,
     r".*x_3d\.npy: inputs must have shape \(n, 40\) for layer 'fc1', not \(1, 3, 40\)"),
    ("simulate-float", "simulate {in}/a.darb --inputs {in}/x_f32.npy -o {out}/y.npy", 1,
     r".*x_f32\.npy: inputs must be int8, not float32"),
    ("simulate-int16", "simulate {in}/a.darb --inputs {in}/x_i16.npy -o {out}/y.npy", 1,
     r".*x_i16\.npy: inputs must be int8, not int16"),
    ("simulate-bool", "simulate {in}/a.darb --inputs {in}/x_bool.npy -o {out}/y.npy", 1,
     r".*x_bool\.npy: inputs must be int8, not bool"),
    ("simulate-object", "simulate {in}/a.darb --inputs {in}/x_obj.npy -o {out}/y.npy", 1,
     r".*x_obj\.npy: not a readable \.npy file \(.*"),
    ("simulate-lying-header", "simulate {in}/a.darb --inputs {in}/x_lie.npy -o {out}/y.npy", 1,
     r".*x_lie\.npy: not a readable \.npy file \(the \.npy header claims shape .*"),
    ("simulate-junk-inputs", "simulate {in}/a.darb --inputs {in}/junk.bin -o {out}/y.npy", 1,
     r".*junk\.bin: not a readable \.npy file \(.*"),
    ("simulate-missing-inputs", "simulate {in}/a.darb --inputs {in}/nope.npy -o {out}/y.npy",
     1, r".*nope\.npy: no such file"),
    ("simulate-inputs-directory", "simulate {in}/a.darb --inputs {in}/folder -o {out}/y.npy", 1,
     r".*folder: is a directory, not a \.npy file"),
    ("simulate-unknown-layer", "simulate {in}/a.darb --layer fc9 --inputs {in}/x.npy "
     "-o {out}/y.npy", 1, r"no layer 'fc9'; the artifact has 'fc1', 'fc2'"),
    ("simulate-lanes-0", "simulate {in}/a.darb --lanes 0 --inputs {in}/x.npy -o {out}/y.npy", 1,
     r"--lanes must be a positive integer, not 0"),
    ("simulate-unknown-simulator", "simulate {in}/a.darb --simulator modelsim "
     "--inputs {in}/x.npy -o {out}/y.npy", 2, r"argument --simulator: invalid choice: .*"),
    ("simulate-missing-artifact", "simulate {in}/nope.darb --inputs {in}/x.npy -o {out}/y.npy",
     1, r".*nope\.darb: no such file"),
    ("simulate-output-dir-missing", "simulate {in}/a.darb --inputs {in}/x.npy -o {out}/no/y.npy",
     1, r".*no: no such directory for the output"),
    ("simulate-output-is-dir", "simulate {in}/a.darb --inputs {in}/x.npy -o {in}/folder", 1,
     r".*folder: is a directory, not an output file"),
    # -- eval -----------------------------------------------------------------------------------
    ("eval-unknown-dataset", "eval {in}/net.darb --dataset cifar", 1,
     r"unknown dataset 'cifar'; choose one of digits.*"),
    ("eval-limit-0", "eval {in}/net.darb --dataset digits --limit 0", 1,
     r"--limit must be a positive integer, not 0"),
    ("eval-limit-negative", "eval {in}/net.darb --dataset digits --limit -5", 1,
     r"--limit must be a positive integer, not -5"),
    ("eval-lanes-0", "eval {in}/net.darb --dataset digits --on verilator --lanes 0", 1,
     r"--lanes must be a positive integer, not 0"),
    ("eval-uncalibrated", "eval {in}/a.darb --dataset digits", 1,
     r".*layer 'fc1' has no input_scale.*"),
    ("eval-missing", "eval {in}/nope.darb --dataset digits", 1, r".*nope\.darb: no such file"),
    ("eval-no-dataset", "eval {in}/net.darb", 2,
     r"one of the arguments --dataset --data is required"),
    # -- build / serve-sim ----------------------------------------------------------------------
    ("build-unknown-board", "build {in}/a.darb --board nexys -o {out}/b", 1,
     r"unknown board 'nexys'; choose from icebreaker, ulx3s, arty-a7"),
    ("build-lanes-0", "build {in}/a.darb --board icebreaker --lanes 0 -o {out}/b", 1,
     r"--lanes must be a positive integer, not 0"),
    ("build-unknown-layer", "build {in}/a.darb --board icebreaker --layer fc9 -o {out}/b", 1,
     r"no layer 'fc9'; the artifact has 'fc1', 'fc2'"),
    ("build-network-and-layer", "build {in}/net.darb --board ulx3s --network --layer fc1 "
     "-o {out}/b", 1, r"--network runs every layer: drop --layer"),
    ("build-network-uncalibrated", "build {in}/a.darb --board ulx3s --network -o {out}/b", 1,
     r".*layer 'fc1' has no input_scale.*"),
    ("build-missing", "build {in}/nope.darb --board icebreaker -o {out}/b", 1,
     r".*nope\.darb: no such file"),
    ("build-output-is-file", "build {in}/a.darb --board icebreaker -o {in}/w.npy", 1,
     r".*w\.npy: is a file, not an output directory"),
    ("build-no-board", "build {in}/a.darb -o {out}/b", 2,
     r"the following arguments are required: --board"),
    ("build-layer-without-artifact", "build --board icebreaker --layer fc1 -o {out}/b", 1,
     r"--layer needs an ARTIFACT"),
    ("build-processor-uncalibrated", "build {in}/a.darb --board icebreaker -o {out}/b", 1,
     r".*layer 'fc1' has no input_scale.*"),
    ("serve-sim-network-without-artifact", "serve-sim --board ulx3s --network", 1,
     r"--network needs an ARTIFACT"),
    ("serve-sim-unknown-board", "serve-sim --board nexys {in}/a.darb", 1,
     r"unknown board 'nexys'; choose from icebreaker, ulx3s, arty-a7"),
    ("serve-sim-lanes-0", "serve-sim --board icebreaker --lanes 0 {in}/a.darb", 1,
     r"--lanes must be a positive integer, not 0"),
    ("serve-sim-unknown-layer", "serve-sim --board icebreaker --layer fc9 {in}/a.darb", 1,
     r"no layer 'fc9'; the artifact has 'fc1', 'fc2'"),
    ("serve-sim-network-and-layer", "serve-sim --board ulx3s --network --layer fc1 "
     "{in}/net.darb", 1, r"--network runs every layer: drop --layer"),
    ("serve-sim-missing", "serve-sim --board icebreaker {in}/nope.darb", 1,
     r".*nope\.darb: no such file"),
    ("serve-sim-junk", "serve-sim --board icebreaker {in}/junk.bin", 1,
     r".*junk\.bin: not a readable darbgen artifact.*"),
    # -- deploy ---------------------------------------------------------------------------------
    ("deploy-inputs-without-output", "deploy {in}/a.darb --port /dev/null --inputs {in}/x.npy",
     1, r"--inputs and -o go together"),
    ("deploy-output-without-inputs", "deploy {in}/a.darb --port /dev/null -o {out}/y.npy", 1,
     r"--inputs and -o go together"),
    ("deploy-wrong-cols", "deploy {in}/a.darb --port /dev/null --inputs {in}/x_cols.npy "
     "-o {out}/y.npy", 1, r".*x_cols\.npy: inputs must have shape \(n, 40\) for layer 'fc1'.*"),
    ("deploy-float", "deploy {in}/a.darb --port /dev/null --inputs {in}/x_f32.npy "
     "-o {out}/y.npy", 1, r".*x_f32\.npy: inputs must be int8, not float32"),
    ("deploy-network-wrong-cols", "deploy {in}/net.darb --network --port /dev/null "
     "--inputs {in}/x.npy -o {out}/y.npy", 1,
     r".*x\.npy: inputs must have shape \(n, 64\) for layer 'fc1'.*"),
    ("deploy-missing-inputs", "deploy {in}/a.darb --port /dev/null --inputs {in}/nope.npy "
     "-o {out}/y.npy", 1, r".*nope\.npy: no such file"),
    ("deploy-unknown-layer", "deploy {in}/a.darb --layer fc9 --port /dev/null", 1,
     r"no layer 'fc9'; the artifact has 'fc1', 'fc2'"),
    ("deploy-no-such-port", "deploy {in}/a.darb --port {in}/no-tty --inputs {in}/x.npy "
     "-o {out}/y.npy", 1, r"cannot open .*no-tty: .*"),
    ("deploy-baud-0", "deploy {in}/a.darb --port /dev/null --baud 0", 1,
     r"--baud must be between 1 and 100000000, not 0"),
    ("deploy-baud-huge", "deploy {in}/a.darb --port /dev/null --baud 1" + "0" * 30, 1,
     r"--baud must be between 1 and 100000000, not 1" + "0" * 30),
    ("deploy-deadline-0", "deploy {in}/a.darb --port /dev/null --deadline 0", 1,
     r"--deadline must be a positive number of seconds, not 0\.0"),
    ("deploy-output-is-inputs", "deploy {in}/a.darb --port /dev/null --inputs {in}/x.npy "
     "-o {in}/x.npy", 1, r".*x\.npy: is the command's input .*x\.npy; write the output to "
     r"another file"),
    # -- hostile files (issue 16) ---------------------------------------------------------
    ("prune-output-is-source", "prune {in}/w.npy --method darb -o {in}/w.npy", 1,
     r".*w\.npy: is the command's input .*w\.npy; write the output to another file"),
    ("prune-output-dev-null", "prune {in}/w.npy --method darb -o /dev/null", 1,
     r"/dev/null: is a character device, not an output file"),
    ("prune-output-fifo", "prune {in}/w.npy --method darb -o {in}/fifo", 1,
     r".*fifo: is a FIFO, not an output file"),
    ("prune-output-unwritable", "prune {in}/w.npy --method darb -o /proc/p.darb", 1,
     r"/proc: cannot write the output there \(.*\)"),
    ("prune-huge-block-size", "prune {in}/w.npy --method bmwm --block-size 1099511627776 "
     "-o {out}/p.darb", 1, r"block size must be at most 1048576, not 1099511627776"),
    ("prune-huge-block-shape", "prune {in}/w.npy --method block --block-size 4x1099511627776 "
     "-o {out}/p.darb", 1, r"block shape must be integers between 1 and 1048576, "
                           r"not \(4, 1099511627776\)"),
    ("inspect-fifo", "inspect {in}/fifo", 1, r".*fifo: is a FIFO, not an artifact"),
    ("inspect-plot-is-artifact", "inspect {in}/a.darb --plot {in}/a.darb", 1,
     r".*a\.darb: is the command's input .*a\.darb; write the output to another file"),
    ("inspect-dev-zero", "inspect /dev/zero", 1,
     r"/dev/zero: is a character device, not an artifact"),
    ("inspect-dev-urandom", "inspect /dev/urandom", 1,
     r"/dev/urandom: is a character device, not an artifact"),
    ("inspect-zip-bomb", "inspect {in}/bomb.darb", 1,
     r".*bomb\.darb: layer 'fc': field 'values': unreadable array \(member "
     r"'layers/0/values\.npy' inflates to 80000128 bytes, more than the 67112960 it may "
     r"have\)"),
    ("dense-1gib", "dense {in}/dense-1gib.darb --layer fc -o {out}/w.npy", 1,
     r".*dense-1gib\.darb: layer 'fc': 32768 × 32768 weights, more than the 67108864 "
     r"\(at most 1048576 columns\) a layer may have"),
    ("inspect-cols-2e63", "inspect {in}/cols-2e63.darb", 1,
     r".*cols-2e63\.darb: layer 'fc': cols must be between 1 and 1048576, "
     r"not 9223372036854775808"),
    ("inspect-uint64-value", "inspect {in}/uint64.darb", 1,
     r".*uint64\.darb: layer 'fc': field 'values' holds 18446744073709551615, beyond any "
     r"size or value a layer can have"),
    ("eval-provenance-type", "eval {in}/bad-provenance.darb --dataset digits", 1,
     r".*bad-provenance\.darb: provenance field 'training' must be an object, not a string"),
    ("simulate-fifo-inputs", "simulate {in}/a.darb --inputs {in}/fifo -o {out}/y.npy", 1,
     r".*fifo: is a FIFO, not a \.npy file"),
    ("simulate-output-is-artifact", "simulate {in}/a.darb --inputs {in}/x.npy -o {in}/a.darb",
     1, r".*a\.darb: is the command's input .*a\.darb; write the output to another file"),
    ("deploy-timeout-0", "deploy {in}/a.darb --port /dev/null --timeout 0", 1,
     r"--timeout must be a positive number of seconds, not 0\.0"),
    ("deploy-timeout-nan", "deploy {in}/a.darb --port /dev/null --timeout nan", 1,
     r"--timeout must be a positive number of seconds, not nan"),
    ("deploy-missing-bitstream", "deploy {in}/a.darb --port /dev/null --program {in}/top.bin",
     1, r".*top\.bin: no such bitstream"),
    ("deploy-output-dir-missing", "deploy {in}/a.darb --port /dev/null --inputs {in}/x.npy "
     "-o {out}/no/y.npy", 1, r".*no: no such directory for the output"),
    ("deploy-missing", "deploy {in}/nope.darb --port /dev/null", 1,
     r".*nope\.darb: no such file"),
    ("deploy-no-port", "deploy {in}/a.darb", 2, r"the following arguments are required: --port"),
    # -- no subcommand --------------------------------------------------------------------------
    ("unknown-command", "frobnicate", 2, r"argument COMMAND: invalid choice: 'frobnicate'.*"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(case, files, tmp_path, capsys):
    name, argv, status, message = case
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(files, tmp_path)
    code, stdout, stderr = run(argv.format(**{"in": files, "out": out}).split(), capsys)
    lines = stderr.strip().splitlines()
    prefix = "darbgen: error: " if name == "unknown-command" else \
        f"darbgen {argv.split()[0]}: error: "
    assert code == status, (code, stderr)
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith(prefix), lines[0]
    assert re.fullmatch(message, lines[0][len(prefix):]), lines[0]
    assert snapshot(files, tmp_path) == before, "an output (or a partial one) was written"
    if os.environ.get("DARBGEN_ERROR_MATRIX"):     # bench/cli_error_matrix.py's record
        with open(os.environ["DARBGEN_ERROR_MATRIX"], "a") as f:
            line = lines[0].replace(str(out), "OUT").replace(str(files), "IN")
            f.write(json.dumps({"case": name, "exit": code, "line": line}) + "\n")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
@pytest.mark.parametrize("argv", ["inspect {f}", "prune {f} --method darb -o {out}/p.darb",
                                  "simulate {a} --inputs {f} -o {out}/y.npy"])
def test_unreadable_file(argv, files, tmp_path, capsys):
    f = tmp_path / "locked.npy"
    np.save(f, np.zeros((3, 40), np.int8))
    f.chmod(0)
    out = tmp_path / "out"
    out.mkdir()
    code, _, stderr = run(argv.format(f=f, a=files / "a.darb", out=out).split(), capsys)
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert "ermission denied" in stderr and "Traceback" not in stderr
    assert list(out.iterdir()) == []
