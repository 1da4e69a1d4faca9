"""Bring your own model: ONNX graphs and torch modules in, the user's data for
fine-tuning, calibration and evaluation, the hardware equal to the integer model."""

import json
import re
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from darbgen.cli import main
from darbgen.datasets import digits_split
from darbgen.graph import GraphError, read_onnx
from darbgen.pruning.graphs import chain_module, from_module, load_graph, trace_module

SEED = 15


def export_onnx(model, x, path):
    """``torch.onnx.export`` (the TorchScript exporter: the dynamo one needs onnxscript)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})
    return path


def randomize_bn(model, seed=SEED):
    """BatchNorm statistics and affine parameters far from the identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=gen))
            m.bias.data.copy_(torch.randn(n, generator=gen))
    return model.eval()


def mlp_bn():
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))


def cnn_pool():
    """Conv, BatchNorm, then the pool before the ReLU (they commute; darbgen swaps them)."""
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.MaxPool2d(2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(96, 10))


class FunctionalNet(nn.Module):
    """ReLUs through ``F.relu``: no module says they are there."""

    def __init__(self, act=F.relu):
        super().__init__()
        torch.manual_seed(SEED)
        self.fc1, self.fc2, self.act = nn.Linear(64, 32), nn.Linear(32, 10), act

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


@pytest.mark.parametrize("make, shape", [(mlp_bn, (64,)), (cnn_pool, (1, 8, 8))],
                         ids=["mlp-batchnorm", "cnn-pool"])
def test_onnx_equals_float_model(tmp_path, make, shape):
    model = randomize_bn(make())
    x = torch.randn((16, *shape), generator=torch.Generator().manual_seed(SEED))
    seq, chain = load_graph(export_onnx(model, x, tmp_path / "m.onnx"))
    assert "batchnorm" not in [s.kind for s in chain.steps]            # folded
    assert chain.input_shape == shape
    with torch.no_grad():
        assert torch.allclose(seq(x), model(x), atol=1e-5)
        # the check can fail: without the BatchNorm the outputs differ
        assert not torch.allclose(seq(x), nn.Sequential(*[m for m in model if not isinstance(
            m, nn.modules.batchnorm._BatchNorm)])(x), atol=1e-2)


def test_torch_export_captures_functional_relu():
    model = FunctionalNet()
    chain = trace_module(model, torch.zeros(2, 64))
    assert [(s.kind, s.name) for s in chain.steps] == [("linear", "fc1"), ("relu", "relu"),
                                                       ("linear", "fc2")]
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        assert torch.equal(chain_module(chain)(x), model(x))


def test_torch_export_batchnorm_and_pool():
    model = randomize_bn(cnn_pool())
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        assert torch.allclose(from_module(model, x)(x), model(x), atol=1e-5)


def test_torch_export_reads_prune_hooks(tmp_path):
    """A torch.nn.utils.prune module: its graph computes weight_orig × weight_mask."""
    from torch.nn.utils import prune
    model = FunctionalNet()
    prune.l1_unstructured(model.fc1, "weight", amount=0.5)
    seq = from_module(model, torch.zeros(2, 64))
    assert int((seq.fc1.weight == 0).sum()) == 32 * 64 // 2
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        assert torch.equal(seq(x), model(x))
    seq2, _ = load_graph(save_pt2(model, torch.zeros(2, 64), tmp_path / "p.pt2"))
    assert torch.equal(seq2.fc1.weight, seq.fc1.weight)


def test_torch_export_refuses_gelu():
    with pytest.raises(GraphError, match=r"^node 'gelu' \(aten\.gelu\) has no integer form$"):
        trace_module(FunctionalNet(F.gelu), torch.zeros(2, 64))


# -- ONNX refusals, on graphs built node by node ------------------------------------------

def graph(nodes, inits, in_shape=(1, 4), out="y"):
    rng = np.random.default_rng(SEED)
    tensors = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), name)
               for name, s in inits.items()]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     list(in_shape))],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], tensors)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def gemm(name, x, y, w="w", b="b"):
    return helper.make_node("Gemm", [x, w, b], [y], name=name, transB=1)


def save(tmp_path, model):
    onnx.save(model, str(tmp_path / "m.onnx"))
    return tmp_path / "m.onnx"


W = {"w": (3, 4), "b": (3,)}
REFUSALS = [
    ("gelu", [gemm("fc", "x", "h"), helper.make_node("Gelu", ["h"], ["y"], name="gelu_3")], W,
     r"^node 'gelu_3' \(Gelu\) has no integer form$"),
    ("branch", [gemm("fc", "x", "h"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
                helper.make_node("Add", ["h", "r"], ["y"], name="residual")], W,
     r"^node 'residual' \(Add\) joins a second activation 'h'; darbgen runs chains$"),
    ("dilation", [helper.make_node("Conv", ["x", "k"], ["c"], name="conv", dilations=[2, 2]),
                  helper.make_node("Flatten", ["c"], ["f"], name="flat"), gemm("fc", "f", "y")],
     {"k": (2, 1, 3, 3), "w": (3, 8), "b": (3,)},
     r"^node 'conv' \(Conv\) has pads \(0, 0, 0, 0\), dilations \(2, 2\), group 1: darbgen "
     r"runs symmetric padding, dilation 1, group 1$"),
    ("pool-stride", [helper.make_node("Conv", ["x", "k"], ["c"], name="conv"),
                     helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[2, 2]),
                     helper.make_node("Flatten", ["p"], ["f"], name="flat"), gemm("fc", "f", "y")],
     {"k": (2, 1, 3, 3), "w": (3, 8), "b": (3,)},
     r"^node 'pool' \(MaxPool\) has kernel \(2, 2\), strides \(1, 1\): darbgen pools square "
     r"windows with stride equal to the window, no padding, floor mode$"),
    ("bn-first", [helper.make_node("BatchNormalization", ["x", "s", "t", "m", "v"], ["n"],
                                   name="bn"), gemm("fc", "n", "y")],
     {"s": (4,), "t": (4,), "m": (4,), "v": (4,), **W},
     r"^node 'bn' \(BatchNormalization\) follows no Gemm, MatMul or Conv to fold into$"),
    ("final-relu", [gemm("fc", "x", "h"), helper.make_node("Relu", ["h"], ["y"], name="out")], W,
     r"^the graph ends in node 'out' \(relu\), not a Linear layer"),
    ("shape", [helper.make_node("Shape", ["x"], ["y"], name="size")], {},
     r"^node 'size' \(Shape\) has no integer form: flatten with torch\.flatten\(x, 1\)"),
]


def node(op, ins, out, name, **attrs):
    return helper.make_node(op, ins, [out], name=name, **attrs)


CONV = {"k": (2, 1, 3, 3), "w": (3, 8), "b": (3,)}
FLAT = [node("Flatten", ["c"], "f", "flat"), gemm("fc", "f", "y")]
REFUSALS += [
    ("gemm-transA", [node("Gemm", ["x", "w", "b"], "y", "g", transA=1)], W,
     r"^node 'g' \(Gemm\) multiplies from the left \(transA\); darbgen runs x · Wᵀ$"),
    ("matmul-3d", [node("MatMul", ["x", "w3"], "y", "mm")], {"w3": (2, 4, 3)},
     r"^node 'mm' \(MatMul\) is not activation × a 2-D weight$"),
    ("add-no-bias", [node("Add", ["x", "b4"], "h", "add"), gemm("fc", "h", "y")], {"b4": (4,), **W},
     r"^node 'add' \(Add\) adds a constant that is no Gemm, MatMul or Conv bias$"),
    ("add-wrong-size", [node("MatMul", ["x", "wt"], "h", "mm"), node("Add", ["h", "b2"], "y", "add")],
     {"wt": (4, 3), "b2": (2,)}, r"^node 'add' \(Add\) adds \(2,\), not one bias per output of "
                                 r"'mm'$"),
    ("conv-groups", [node("Conv", ["x", "k"], "c", "conv", group=2)] + FLAT, CONV,
     r"^node 'conv' \(Conv\) has pads .*, group 2: darbgen runs"),
    ("conv-asymmetric", [node("Conv", ["x", "k"], "c", "conv", pads=[0, 0, 1, 1])] + FLAT, CONV,
     r"^node 'conv' \(Conv\) has pads \(0, 0, 1, 1\)"),
    ("conv-1d", [node("Conv", ["x", "k1"], "y", "conv")], {"k1": (2, 1, 3)},
     r"^node 'conv' \(Conv\) is a 1-D convolution; darbgen runs 2-D ones$"),
    ("flatten-axis", [node("Conv", ["x", "k"], "c", "conv"), node("Flatten", ["c"], "f", "flat",
                                                                   axis=2), gemm("fc", "f", "y")],
     CONV, r"^node 'flat' \(Flatten\) flattens from axis 2; darbgen flattens from 1$"),
    ("reshape-3d", [node("Reshape", ["x", "s"], "y", "rs")], {"s": (3,)},
     r"^node 'rs' \(Reshape\) reshapes to \("),
    ("bn-training", [gemm("fc", "x", "h"), node("BatchNormalization", ["h", "s", "t", "m", "v"],
                                                 "y", "bn", training_mode=1)],
     {"s": (3,), "t": (3,), "m": (3,), "v": (3,), **W},
     r"^node 'bn' \(BatchNormalization\) is in training mode; export the model in eval mode$"),
    ("bn-channels", [gemm("fc", "x", "h"), node("BatchNormalization", ["h", "s", "t", "m", "v"],
                                                 "y", "bn")],
     {"s": (5,), "t": (5,), "m": (5,), "v": (5,), **W},
     r"^node 'bn' \(BatchNormalization\) normalizes 5 channels, node 'fc' produces 3$"),
    ("constants-only", [node("Mul", ["w", "w"], "w2", "mul"), gemm("fc", "x", "y", w="w2")], W,
     r"^node 'mul' \(Mul\) does not take the chain's activation \(the graph branches or "
     r"computes on constants\)$"),
    ("relu-first", [node("Relu", ["x"], "r", "relu"), gemm("fc", "r", "y")], W,
     r"^node 'relu' \(Relu\) follows no Gemm, MatMul or Conv; the integer network applies a "
     r"ReLU right after a layer$"),
    ("pool-after-linear", [gemm("fc", "x", "h"), node("MaxPool", ["h"], "p", "pool",
                                                       kernel_shape=[2, 2], strides=[2, 2]),
                           gemm("fc2", "p", "y", w="w2", b="b2")],
     {**W, "w2": (2, 3), "b2": (2,)},
     r"^node 'pool' \(MaxPool\) follows no Conv \(or Conv and Relu\)"),
    ("linear-on-maps", [gemm("fc", "x", "y")], {"w": (3, 16), "b": (3,)},
     r"^node 'fc' \(Gemm/MatMul\) takes maps; flatten them first$"),
    ("conv-on-vectors", [node("Conv", ["x", "k"], "y", "conv")], {"k": (2, 1, 3, 3)},
     r"^node 'conv' \(Conv\) takes vectors; give the network image inputs"),
    ("ends-in-conv", [node("Conv", ["x", "k"], "y", "conv")], {"k": (2, 1, 3, 3)},
     r"^the graph ends in node 'conv' \(conv\), not a Linear layer"),
    ("no-layer", [node("Relu", ["x"], "y", "relu")], {},
     r"^node 'relu' \(Relu\) follows no Gemm"),
    ("output-not-end", [gemm("fc", "x", "h"), node("Relu", ["h"], "r", "relu")], W,
     r"m\.onnx: the graph's output 'y' is not the end of its chain$"),
    ("two-inputs", [gemm("fc", "x", "y")], W, r"m\.onnx: the graph has 2 inputs; darbgen runs "
                                              r"networks with one$"),
]
SHAPES = {"linear-on-maps": (1, 1, 4, 4), "conv-on-vectors": (1, 16), "ends-in-conv": (1, 1, 4, 4),
          "conv-1d": (1, 1, 4)}


@pytest.mark.parametrize("case, nodes, inits, message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_onnx_refusal_messages(tmp_path, case, nodes, inits, message):
    shape = SHAPES.get(case, (1, 1, 4, 4) if "k" in inits else (1, 4))
    model = graph(nodes, inits, shape)
    if case == "two-inputs":
        model.graph.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1]))
    with pytest.raises(GraphError, match=message):
        read_onnx(save(tmp_path, model))


def test_onnx_matmul_add_and_file_refusals(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "wt"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["y"], name="add")]
    chain = read_onnx(save(tmp_path, graph(nodes, {"wt": (4, 3), "b": (3,)})))
    assert [s.kind for s in chain.steps] == ["linear"] and chain.steps[0].bias.shape == (3,)
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xff junk")
    with pytest.raises(ValueError, match=r"junk\.onnx: not a readable ONNX file"):
        read_onnx(tmp_path / "junk.onnx")
    (tmp_path / "m.pt2").write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"m\.pt2: not a torch\.export archive"):
        load_graph(tmp_path / "m.pt2")


def save_pt2(model, x, path):
    torch.export.save(torch.export.export(model.eval(), (x,)), str(path))
    return path


def test_pt2_read_without_unpickling(tmp_path, monkeypatch):
    model = randomize_bn(cnn_pool())
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(SEED))
    path = save_pt2(model, x, tmp_path / "m.pt2")

    def forbidden(*args, **kwargs):
        raise AssertionError("a .pt2 file was unpickled")
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.export, "load", forbidden)
    seq, chain = load_graph(path)
    assert [s.name for s in chain.layers] == ["0", "5"] and chain.input_shape == (1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(seq(x), model(x), atol=1e-5)


def test_pt2_refusals(tmp_path):
    with pytest.raises(GraphError, match=r"^node 'gelu' \(aten\.gelu\) "
                                         r"has no integer form$"):
        load_graph(save_pt2(FunctionalNet(F.gelu), torch.zeros(2, 64), tmp_path / "g.pt2"))
    import zipfile
    good = save_pt2(FunctionalNet(), torch.zeros(2, 64), tmp_path / "f.pt2")
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(tmp_path / "cut.pt2", "w") as out:
        for info in z.infolist():         # a weight cut short: its size no longer fits
            data = z.read(info)
            out.writestr(info, data[:-4] if info.filename.endswith("weight_0") else data)
    with pytest.raises(ValueError, match=r"cut\.pt2: weight 'fc1\.weight' of shape \(32, 64\) "
                                         r"does not fit its 8188 bytes contiguously$"):
        load_graph(tmp_path / "cut.pt2")


# -- the whole path: prune with the user's data, evaluate on the golden model and in
#    Verilator -------------------------------------------------------------------------

def digits(images=False):
    xtr, xte, ytr, yte = digits_split(0)
    xtr, xte = (xtr / 16).astype(np.float32), (xte / 16).astype(np.float32)
    if images:
        xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
    return xtr, ytr, xte, yte


def trained(model, xtr, ytr, epochs=80):
    """``model`` trained full-batch (seeded): a user's own trained model."""
    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr).long()
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def run_json(capsys, argv):
    """Run ``argv``: its JSON line and its stderr."""
    assert main(argv) == 0
    out = capsys.readouterr()
    return json.loads(out.out.strip().splitlines()[-1]), out.err


def export_source(kind, model, x, tmp_path):
    """``model`` saved as the source kind the test is about."""
    if kind == "pt2":
        return save_pt2(model, x, tmp_path / "m.pt2")
    if kind.startswith("torch-prune"):
        from torch.nn.utils import prune
        prune.l1_unstructured(model.fc1, "weight", amount=0.5)
        prune.l1_unstructured(model.fc2, "weight", amount=0.5)
    if kind == "torch-prune-state-dict":
        assert {"fc1.weight_orig", "fc1.weight_mask"} <= set(model.state_dict())
        torch.save(model.state_dict(), tmp_path / "m.pt")
        return tmp_path / "m.pt"
    return export_onnx(model, x, tmp_path / "m.onnx")


@pytest.mark.parametrize("make, images, kind", [
    (mlp_bn, False, "onnx"), (cnn_pool, True, "onnx"), (FunctionalNet, False, "pt2"),
    (FunctionalNet, False, "torch-prune"), (FunctionalNet, False, "torch-prune-state-dict"),
], ids=["onnx-mlp-batchnorm", "onnx-cnn-pool", "pt2-functional-relu", "onnx-torch-prune",
        "torch-prune-state-dict"])
def test_prune_with_data_golden_and_verilator(tmp_path, capsys, make, images, kind):
    xtr, ytr, xte, yte = digits(images)
    np.savez(tmp_path / "data.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    src = export_source(kind, trained(make(), xtr, ytr), torch.from_numpy(xte[:2]), tmp_path)
    out = tmp_path / "m.darb"
    # A state dict names no ops: the user says that F.relu runs between its layers.
    said = ["--activation", "relu"] * (kind == "torch-prune-state-dict")
    pruned, err = run_json(capsys, ["prune", str(src), "--method", "darb", "--ratio", "4",
                               "--data", str(tmp_path / "data.npz"), "--epochs", "2",
                               "-o", str(out)] + said)
    assert re.search(r"darbgen: pruning step 4/4: \d\.\d\dx, accuracy", err)  # no TTY
    assert pruned["accuracy_dense"] > 0.9 and pruned["pruning_ratio"] == pytest.approx(4, 0.05)
    for key in ("accuracy_pruned", "accuracy_quantized", "accuracy_int"):
        assert 0.5 < pruned[key] <= 1, (key, pruned)
    golden, _ = run_json(capsys, ["eval", str(out), "--data", str(tmp_path / "data.npz")])
    assert golden["accuracy_int"] == pytest.approx(pruned["accuracy_int"])
    assert golden["samples"] == len(yte)
    hw, _ = run_json(capsys, ["eval", str(out), "--data", str(tmp_path / "data.npz"), "--on",
                           "verilator", "--limit", "12"])
    assert hw["hw_matches_int"] is True and hw["accuracy_hw"] == hw["accuracy_int"]


# -- refusals of the data and of the options -------------------------------------------

@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(SEED)
    np.savez(d / "data.npz", x_train=rng.random((20, 64), np.float32), y_train=np.arange(20) % 10,
             x_test=rng.random((8, 64), np.float32), y_test=np.arange(8))
    torch.manual_seed(SEED)
    export_onnx(nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10)),
                torch.zeros(2, 64), d / "m.onnx")
    torch.save({"fc.weight": torch.zeros(3, 64)}, d / "sd.pt")
    torch.save({"a.weight": torch.zeros(8, 64), "b.weight": torch.zeros(10, 8)}, d / "sd2.pt")
    torch.save({"a.weight": torch.zeros(8, 64), "b.weight": torch.zeros(10, 9)}, d / "gap.pt")
    torch.save({"c.weight": torch.zeros(8, 1, 3, 3), "b.weight": torch.zeros(10, 8)},
               d / "conv.pt")
    arrays = dict(np.load(d / "data.npz"))
    for name, change in {"no-y-test": {"y_test": None}, "int-x": {"x_train": np.zeros((20, 64),
                                                                                       np.int64)},
                         "shape": {"x_train": np.zeros((20, 63), np.float32),
                                   "x_test": np.zeros((8, 63), np.float32)},
                         "label": {"y_train": np.full(20, 10)},
                         "float-y": {"y_test": np.zeros(8)},
                         "lengths": {"y_train": np.zeros(19, np.int64)}}.items():
        a = {k: v for k, v in {**arrays, **change}.items() if v is not None}
        np.savez(d / f"{name}.npz", **a)
    return d


@pytest.fixture(scope="module")
def small_darb(small_onnx):
    """The small ONNX model pruned with its data (no fine-tuning): a calibrated network."""
    out = small_onnx / "m.darb"
    assert main(["prune", str(small_onnx / "m.onnx"), "--method", "darb", "--ratio", "2",
                 "--data", str(small_onnx / "data.npz"), "--epochs", "0", "-o", str(out)]) == 0
    return out


@pytest.mark.parametrize("argv, message", [
    ("prune {d}/m.onnx --method darb --data {d}/no-y-test.npz",
     r"no-y-test\.npz: has no 'y_test' array \(a DATA\.npz holds x_train, y_train, x_test, "
     r"y_test\)$"),
    ("prune {d}/m.onnx --method darb --data {d}/int-x.npz",
     r"int-x\.npz: 'x_train' must hold float inputs, not int64$"),
    ("prune {d}/m.onnx --method darb --data {d}/shape.npz",
     r"shape\.npz: 'x_train' has samples of shape \(63,\), the model takes \(64,\)$"),
    ("prune {d}/m.onnx --method darb --data {d}/label.npz",
     r"label\.npz: 'y_train' has label 10, the model has 10 outputs$"),
    ("prune {d}/m.onnx --method darb --data {d}/float-y.npz",
     r"float-y\.npz: 'y_test' must be a 1-D array of integer labels, not float64 of shape "
     r"\(8,\)$"),
    ("prune {d}/m.onnx --method darb --data {d}/lengths.npz",
     r"lengths\.npz: 'x_train' has 20 samples, 'y_train' 19$"),
    ("prune {d}/m.onnx --method darb --data {d}/m.onnx",
     r"m\.onnx: not a \.npz file"),
    ("prune {d}/sd.pt --method darb --data {d}/data.npz",
     r"data\.npz: 'y_train' has label 9, the model has 3 outputs$"),
    ("prune {d}/sd2.pt --method darb --data {d}/data.npz",
     r"sd2\.pt: --data needs the model's graph, and a state dict names no ops: for Linear "
     r"layers in a chain say what runs between them \(--activation relu or none\), else "
     r"export the model with torch\.onnx\.export or torch\.export\.save$"),
    ("prune {d}/gap.pt --method darb --data {d}/data.npz --activation relu",
     r"gap\.pt: layer 'b' takes 9 inputs, but 'a' before it gives 8$"),
    ("prune {d}/conv.pt --method darb --data {d}/data.npz --activation relu",
     r"conv\.pt: layer 'c' is a convolution \(8×1×3×3\), which a state dict cannot chain "
     r"\(its padding, pooling or time steps are not in it\): export the model to ONNX or with "
     r"torch\.export$"),
    ("prune {d}/m.onnx --method darb --data {d}/data.npz --activation relu",
     r"m\.onnx: --activation is for weights \(a state dict\) pruned with --data; a graph "
     r"says its own activations$"),
    ("prune {d}/sd2.pt --method darb --activation relu",
     r"--activation needs --data \(without data a state dict is pruned layer by layer, "
     r"one-shot\)$"),
    ("prune {d}/m.onnx --method darb --epochs 3",
     r"--epochs needs --data \(fine-tuning runs on the user's data\)$"),
    ("prune {d}/m.onnx --method darb --data {d}/data.npz --epochs -1",
     r"--epochs must be a non-negative integer, not -1$"),
    ("prune {d}/m.onnx --method sap --data {d}/data.npz",
     r"--method sap does not take --data or a graph source; use darb, bmwm, block, nm or "
     r"irregular$"),
    ("eval {d}/m.darb --data {d}/shape.npz",
     r"shape\.npz has 63 inputs, the network takes 64$"),
    ("eval {d}/m.darb --data {d}/data.npz --report {d}",
     r"small\d*: is a directory, not an output file$"),
    ("inspect {d}/m.darb --layer 0_Gemm", r"--layer needs --plot$"),
    ("inspect {d}/m.darb --plot {d}/p.png --layer nope", r"no layer 'nope'"),
])
def test_data_refusals(small_onnx, small_darb, capsys, argv, message):
    out = small_onnx / "out.darb"
    code = main(argv.format(d=small_onnx).split() + ["-o", str(out)] * argv.startswith("prune"))
    err = capsys.readouterr().err
    assert code == 1 and re.search(message, err.strip()), err
    assert not out.exists()


def test_oneshot_says_no_calibration(small_onnx, capsys):
    out = small_onnx / "oneshot.darb"
    assert main(["prune", str(small_onnx / "m.onnx"), "--method", "darb", "--ratio", "2",
                 "-o", str(out)]) == 0
    assert "was pruned one-shot: no fine-tuning and no calibration" in capsys.readouterr().out
    assert main(["eval", str(out), "--data", str(small_onnx / "data.npz")]) == 1
    assert "has no input_scale" in capsys.readouterr().err


# -- the registry drives the CLI ----------------------------------------------------------

def test_cli_methods_are_the_registry():
    from darbgen.cli import METHOD_NAMES, _DRIVER_OPTIONS
    from darbgen.pruning.methods import METHODS
    assert set(METHOD_NAMES) == set(METHODS) | set(_DRIVER_OPTIONS)
    for name, cls in METHODS.items():              # every declared default builds the method
        assert cls.from_options(**cls.OPTIONS).name == name


@pytest.mark.parametrize("method", ["nm", "bmwm"])
def test_single_block_size_message(small_onnx, capsys, method):
    assert main(["prune", str(small_onnx / "m.onnx"), "--method", method, "--block-size",
                 "4x4", "-o", str(small_onnx / "o.darb")]) == 1
    assert capsys.readouterr().err.strip().endswith(
        f"block size must be a single integer for {method}, not 4x4")


def test_expected_build_time_learns(tmp_path, monkeypatch):
    from darbgen.sim import runner
    monkeypatch.setenv("DARBGEN_CACHE", str(tmp_path))
    (tmp_path / "sim").mkdir()
    text = "x" * 10240                                 # 10 kB
    assert runner.expected_build_seconds(text) == pytest.approx(
        10 * runner.DEFAULT_BUILD_SECONDS_PER_KB)
    for seconds in (2.0, 3.0, 4.0):
        runner._record_build_rate(text, "verilator", seconds)
    assert runner.expected_build_seconds(text) == pytest.approx(3.0)  # the median rate


def test_inspect_plot(small_onnx, small_darb, capsys):
    png = small_onnx / "mask.png"
    assert main(["inspect", str(small_darb), "--plot", str(png), "--layer", "2_Gemm"]) == 0
    assert "the mask and block sizes of '2_Gemm'" in capsys.readouterr().err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_eval_report(small_onnx, small_darb, capsys):
    report = small_onnx / "report.json"
    assert main(["eval", str(small_darb), "--data", str(small_onnx / "data.npz"), "--report",
                 str(report)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    r = json.loads(report.read_text())
    confusion = np.array(r["confusion_int"])
    assert r["classes"] == 10 and confusion.shape == (10, 10)
    assert confusion.sum(axis=1).tolist() == r["samples"] == [1] * 8 + [0, 0]
    assert r["class_accuracy_int"][8:] == [None, None]
    assert np.trace(confusion) / confusion.sum() == pytest.approx(summary["accuracy_int"])
    assert r["accuracy_int"] == summary["accuracy_int"] and "confusion_hw" not in r


def test_eval_on_a_served_board(small_onnx, small_darb, capsys, monkeypatch):
    """``eval --on PORT``: the user's network loaded onto a simulated iCEBreaker (its UART
    on a pseudo-terminal, served by ``serve-sim --network``), run over the serial link, every
    logit equal to the integer model's; a board given one changed bias is caught."""
    import dataclasses
    import subprocess
    import sys

    from darbgen.host import Board

    proc = subprocess.Popen([sys.executable, "-m", "darbgen.cli", "serve-sim", "--board",
                             "icebreaker", "--network", "--lanes", "2", str(small_darb)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = json.loads(proc.stdout.readline())["port"]
        argv = ["eval", str(small_darb), "--data", str(small_onnx / "data.npz"), "--on", port,
                "--timeout", "10"]
        on_board, err = run_json(capsys, argv)
        assert on_board["hw_matches_int"] is True and on_board["samples"] == 8
        assert on_board["accuracy_hw"] == on_board["accuracy_int"]
        assert "identified build" in err and "verified by CRC-32" in err

        load = Board.load

        def load_changed(board, net):            # one logit's bias off by one on the board
            last = dataclasses.replace(net.layers[-1], bias=net.layers[-1].bias + np.eye(
                len(net.layers[-1].bias), dtype=np.int64)[3])
            return load(board, dataclasses.replace(net, layers=net.layers[:-1] + (last,)))

        monkeypatch.setattr(Board, "load", load_changed)
        assert main(argv) == 3
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])[
            "hw_matches_int"] is False
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert main(["eval", str(small_darb), "--data", str(small_onnx / "data.npz"), "--on",
                 str(small_onnx / "no-such-port")]) == 1
    assert "no-such-port" in capsys.readouterr().err


class Wrap(nn.Module):
    def __init__(self, body, tail):
        super().__init__()
        self.body, self.tail = body, tail

    def forward(self, x):
        return self.tail(self.body(x))


@pytest.mark.parametrize("body, message", [
    (nn.Conv2d(1, 2, 3, dilation=2), r"^node 'conv2d' \(aten\.conv2d\) has padding \[0, 0\], "
                                     r"dilation \[2, 2\], groups 1: darbgen runs numeric padding"),
    (nn.Conv2d(1, 2, 3, padding="same"), r"^node 'conv2d' \(aten\.conv2d\.padding\) has padding 'same'"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, stride=1)),
     r"^node 'max_pool2d' \(aten\.max_pool2d\) has kernel \[2, 2\], stride \[1, 1\]: darbgen "
     r"pools square windows"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(2)),
     r"^node 'flatten' \(aten\.flatten\.using_ints\) flattens dims 2\.\.-1; darbgen flattens "
     r"from 1 to the end$"),
], ids=["dilation", "padding-same", "pool-stride", "flatten-dims"])
def test_torch_export_refusals(body, message):
    torch.manual_seed(SEED)
    model = Wrap(body, nn.Sequential(nn.Flatten(), nn.LazyLinear(3)))
    x = torch.zeros(2, 1, 8, 8)
    model(x)                                  # materializes the LazyLinear
    with pytest.raises(GraphError, match=message):
        trace_module(model, x)


class LSTMNet(nn.Module):
    """An LSTM classifier: the last step's hidden state into a Linear layer."""

    def __init__(self, bidirectional=False):
        super().__init__()
        torch.manual_seed(SEED)
        self.lstm = nn.LSTM(8, 6, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(6 * (1 + bidirectional), 3)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y[:, -1])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
def test_onnx_lstm_weights_equal_the_state_dict(tmp_path, bidirectional):
    from darbgen.graph import read_onnx_weights
    from darbgen.pruning.sources import state_dict_layers
    model = LSTMNet(bidirectional)
    onnx_layers = read_onnx_weights(export_onnx(model, torch.zeros(2, 5, 8), tmp_path / "l.onnx"))
    torch_layers = state_dict_layers(model.state_dict())
    assert [w.shape for _, w, *_ in onnx_layers] == [w.shape for _, w, *_ in torch_layers]
    for o, t in zip(onnx_layers, torch_layers):         # gates i, f, g, o
        assert np.allclose(o.weight, t.weight) and np.allclose(o.bias, t.bias)
        assert o.recurrent == t.recurrent


def test_onnx_lstm_prunes_one_shot(tmp_path, capsys, small_onnx):
    src = export_onnx(LSTMNet(), torch.zeros(2, 5, 8), tmp_path / "l.onnx")
    out = tmp_path / "l.darb"
    assert main(["prune", str(src), "--method", "darb", "--ratio", "2", "-o", str(out)]) == 0
    assert "pruned one-shot: no fine-tuning and no calibration" in capsys.readouterr().out
    from darbgen.format import Artifact
    assert [(l.name, l.rows, l.cols) for l in Artifact.load(out).layers] == [
        ("lstm_LSTM.l0", 24, 14), ("fc_Gemm", 3, 6)]
    assert main(["prune", str(src), "--method", "darb", "--data", str(small_onnx / "data.npz"),
                 "-o", str(out)]) == 1
    assert capsys.readouterr().err.strip().endswith(
        "l.onnx: has an LSTM, which darbgen prunes one-shot (its integer LSTM runs apart from "
        "the chain of layers): drop --data")


def test_onnx_weights_refuse_what_they_would_drop(tmp_path):
    from darbgen.graph import read_onnx_weights
    nodes = [gemm("fc", "x", "h"), node("BatchNormalization", ["h", "s", "t", "m", "v"], "y",
                                        "bn")]
    path = save(tmp_path, graph(nodes, {"s": (3,), "t": (3,), "m": (3,), "v": (3,), **W}))
    with pytest.raises(GraphError, match=r"^node 'bn' \(BatchNormalization\) has no integer "
                                         r"form$"):
        read_onnx_weights(path)
