"""Loading a user's weights: nothing from the file runs, nothing is dropped or misread."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from darbgen.cli import main
from darbgen.format import Artifact
from darbgen.pruning.sources import load_source
from darbgen.pruning.torchfile import pickle_globals


class Payload:
    """Unpickles by running ``code`` through ``eval``: what a crafted model file does."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


def touch(marker) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def evil_files(tmp_path):
    """Crafted files, each of which would create ``marker`` if unpickled."""
    marker = tmp_path / "marker"
    plain = {"fc.weight": torch.zeros(3, 4), "x": Payload(touch(marker))}
    # This one even yields a valid state dict: the payload returns the tensor it replaces.
    valid = {"fc.weight": Payload(f"({touch(marker)}, __import__('torch').ones(3, 4))[1]"),
             "fc.bias": torch.zeros(3)}
    files = {}
    for name, obj, save in (("evil.pt", plain, torch.save), ("valid.pt", valid, torch.save),
                            ("evil4.pt", plain, lambda o, p: torch.save(o, p, pickle_protocol=4))):
        save(obj, tmp_path / name)
        files[name] = tmp_path / name
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(plain, f)
    files["evil.pkl"] = tmp_path / "evil.pkl"
    return marker, files


def test_payload_is_real(tmp_path):
    """The crafted file does run its command under a full unpickler (in a child process),
    so the tests below can fail."""
    marker, files = evil_files(tmp_path)
    code = ("import sys, torch; sd = torch.load(sys.argv[1], weights_only=False); "
            "assert float(sd['fc.weight'].sum()) == 12")
    subprocess.run([sys.executable, "-c", code, str(files["valid.pt"])], check=True)
    assert marker.exists()


@pytest.mark.parametrize("name", ["evil.pt", "valid.pt", "evil4.pt", "evil.pkl"])
def test_malicious_pickle_executes_nothing(tmp_path, name):
    marker, files = evil_files(tmp_path)
    with pytest.raises(ValueError, match=r"holds pickled Python objects \((.*, )?builtins\.eval\) "
                                         r"that "
                                         r"loading would import and run; darbgen loads weights "
                                         r"only: save the weights with torch\.save"):
        load_source(files[name])
    assert not marker.exists()


def test_malicious_pickle_cli(tmp_path, capsys):
    marker, files = evil_files(tmp_path)
    out = tmp_path / "out.darb"
    for path in files.values():
        assert main(["prune", str(path), "--method", "darb", "-o", str(out)]) == 1
        assert "builtins.eval" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def test_pickle_globals_stack_global():
    data = pickle.dumps(Payload("1"), protocol=4)
    assert pickle_globals(data) == ["builtins.eval"]
    assert pickle_globals(pickle.dumps({"a": 1}, protocol=4)) == []


def test_module_pickle_refused(tmp_path):
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3)), tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"m\.pt: holds a pickled model object \(torch\.nn\."
                                         r"modules\.container\.Sequential.*never unpickles code.*"
                                         r"torch\.save\(model\.state_dict\(\), PATH\), or export "
                                         r"the model to ONNX \(torch\.onnx\.export\) or with "
                                         r"torch\.export \(a \.pt2 file\)$"):
        load_source(tmp_path / "m.pt")


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))


@pytest.mark.parametrize("wrap", ["model_state_dict", "state_dict", None])
def test_checkpoint_and_torch_prune_state_dicts(tmp_path, wrap):
    model = mlp()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    sd = model.state_dict()
    assert "0.weight_orig" in sd and "0.weight_mask" in sd
    obj = sd if wrap is None else {wrap: sd, "epoch": 7, "optimizer_state_dict": {"lr": 1e-3}}
    torch.save(obj, tmp_path / "ck.pt")
    layers = load_source(tmp_path / "ck.pt")
    assert [name for name, *_ in layers] == ["0", "2"]
    w = layers[0][1]
    assert np.array_equal(w, model[0].weight.detach().double().numpy())
    assert (w == 0).sum() == 24                       # weight_orig × weight_mask
    assert np.array_equal(layers[0][2], model[0].bias.detach().double().numpy())


def test_torch_prune_state_dict_cli(tmp_path, capsys):
    model = mlp()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    torch.save(model.state_dict(), tmp_path / "p.pt")
    assert main(["prune", str(tmp_path / "p.pt"), "--method", "darb", "--ratio", "4", "-o",
                 str(tmp_path / "p.darb")]) == 0
    assert [l.name for l in Artifact.load(tmp_path / "p.darb").layers] == ["0", "2"]


def save(tmp_path, module, name="sd.pt"):
    torch.manual_seed(0)
    torch.save(module.state_dict(), tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("module, message", [
    (torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)),
     r"holds BatchNorm parameters \('1\.running_mean'\); a state dict has no graph to fold "
     r"'1' into the layer before it, and dropping it would change the network: export the "
     r"model to ONNX \(torch\.onnx\.export\) or with torch\.export \(\.pt2\)"),
    (torch.nn.GRU(4, 5),
     r"'weight_hh_l0' has 15 gate rows for hidden size 5, a GRU \(3 gates\); darbgen runs "
     r"LSTM layers \(4 gates\), not this one$"),
    (torch.nn.RNN(4, 5),
     r"'weight_hh_l0' has 5 gate rows for hidden size 5, a plain RNN \(1 gate\)"),
    (torch.nn.LSTM(4, 5, proj_size=2),
     r"'weight_ih_l0' belongs to an LSTM with projections \(proj_size\)"),
    (torch.nn.ModuleDict({"embedding": torch.nn.Embedding(10, 4),
                          "fc": torch.nn.Linear(4, 2)}),
     r"key 'embedding\.weight' looks like an Embedding \(a table lookup, not a matrix "
     r"product\): it has no integer form on the engine$"),
    (torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)),
     r"key '1\.weight' \(3\) belongs to no Linear, Conv2d or LSTM weight, and darbgen drops "
     r"nothing: export the model"),
], ids=["batchnorm", "gru", "rnn", "lstm-proj", "embedding", "layernorm"])
def test_state_dict_refusals(tmp_path, module, message):
    with pytest.raises(ValueError, match=message):
        load_source(save(tmp_path, module))


def test_state_dict_lstm_accepted(tmp_path):
    layers = load_source(save(tmp_path, torch.nn.LSTM(4, 5)))
    assert [(name, w.shape) for name, w, *_ in layers] == [("layer0.l0", (20, 9))]


@pytest.mark.parametrize("make, message", [
    (lambda p: torch.save([torch.zeros(2)], p), r"holds a list, not a state dict$"),
    (lambda p: torch.save({"epoch": 3}, p),
     r"holds a dict \('epoch'\) that is neither a state dict nor a checkpoint with "
     r"'model_state_dict' or 'state_dict'$"),
    (lambda p: torch.save({"model_state_dict": {"a.weight": torch.zeros(2, 2), "n": 3}}, p),
     r"key 'n' holds a int, not a tensor$"),
    (lambda p: torch.save({"a.weight_orig": torch.zeros(2, 2)}, p),
     r"has 'a\.weight_orig' but not 'a\.weight_mask' \(a torch\.nn\.utils\.prune state dict "
     r"keeps both\)$"),
    (lambda p: torch.save({"a.weight": torch.zeros(2, 2)}, p, pickle_protocol=4),
     r"torch's weights-only loader refuses it \(Unsupported operand 149\)"),
    (lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"),
     r"not a \.npy, ONNX, \.pt2 or torch\.save file$"),
], ids=["list", "dict", "non-tensor", "orig-without-mask", "protocol-4", "bad-zip"])
def test_file_refusals(tmp_path, make, message):
    make(tmp_path / "f.pt")
    with pytest.raises(ValueError, match=message):
        load_source(tmp_path / "f.pt")


def test_torch_file_format_refusals(tmp_path):
    import zipfile
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "legacy.pt",
               _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"legacy\.pt: a bare pickle, not torch\.save's zip "
                                         r"format \(torch >= 1\.6\): save the weights"):
        load_source(tmp_path / "legacy.pt")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "sd.pt")
    with zipfile.ZipFile(tmp_path / "sd.pt") as z, \
            zipfile.ZipFile(tmp_path / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            out.writestr(info.filename, z.read(info))
    with pytest.raises(ValueError, match=r"deflated\.pt: member 'sd/data\.pkl' is compressed; "
                                         r"torch\.save writes uncompressed archives$"):
        load_source(tmp_path / "deflated.pt")
    with zipfile.ZipFile(tmp_path / "nopkl.pt", "w") as out:
        out.writestr("a/byteorder", "little")
    with pytest.raises(ValueError, match=r"nopkl\.pt: a zip archive, but not a torch\.save file "
                                         r"\(it has 0 data\.pkl members, not 1\)$"):
        load_source(tmp_path / "nopkl.pt")


@pytest.mark.parametrize("change, message", [
    ({"x_train": np.full((4, 3), np.nan, np.float32)}, r"'x_train' holds non-finite values$"),
    ({"y_train": np.array([0, -1, 0, 1])}, r"'y_train' has a negative label -1$"),
], ids=["nan", "negative-label"])
def test_data_file_refusals(tmp_path, change, message):
    from darbgen.datasets import load_data
    arrays = {"x_train": np.zeros((4, 3), np.float32), "y_train": np.zeros(4, np.int64),
              "x_test": np.zeros((2, 3), np.float32), "y_test": np.zeros(2, np.int64)}
    np.savez(tmp_path / "d.npz", **{**arrays, **change})
    with pytest.raises(ValueError, match=message):
        load_data(tmp_path / "d.npz")


def test_state_dict_chain_reads_kinds_not_names(tmp_path):
    """A Linear whose module path looks like an LSTM layer's name (``enc.l0``) chains; an
    LSTM is refused because the state dict's keys say it is one, whatever its name."""
    from darbgen.pruning.graphs import state_dict_chain

    enc = torch.nn.Module()
    enc.l0 = torch.nn.Linear(6, 4)
    model = torch.nn.Module()
    model.enc, model.head = enc, torch.nn.Linear(4, 3)
    chain = state_dict_chain(load_source(save(tmp_path, model)), "relu")
    assert [(s.kind, s.name) for s in chain.steps] == [
        ("linear", "enc_l0"), ("relu", "relu1"), ("linear", "head")]

    layers = load_source(save(tmp_path, torch.nn.LSTM(4, 5)))
    assert [s.recurrent for s in layers] == [True]
    with pytest.raises(ValueError, match=r"layer 'layer0\.l0' is an LSTM, which a state dict "
                                         r"cannot chain"):
        state_dict_chain(layers, "relu")
