"""Built-in examples: small models trained on data that ships with scikit-learn or Debian.

``digits-mlp``: a 64-300-100-10 MLP on scikit-learn's bundled 8×8 digits (1797
images, no download); ``digits-cnn``: a small CNN on the same data. On Fashion-MNIST
(60000/10000 28×28 images from Debian's dataset-fashion-mnist, installed by ``make
data``): ``fashion-mlp`` (784-256-10), ``fashion-lenet300`` (LeNet-300-100, 784-300-100-10)
and ``fashion-lenet5`` (a LeNet-5-style CNN). Each is trained dense, pruned progressively
with masked fine-tuning, quantized and exported as an artifact. Seeded and CPU-only.
"""

from __future__ import annotations

import gzip
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..datasets import DIGITS_TEST_FRACTION
from ..datasets import digits_split as _digits_split
from ..conv import ConvSpec
from ..format import Artifact
from .methods import PruningMethod, export_layer, prunable_layers
from .train import Dataset, accuracy, per_layer, progressive_prune, train

__all__ = ["EXAMPLES", "EXAMPLE_DATA", "SCHEDULES", "ExampleResult", "digits_data", "digits_mlp",
           "digits_cnn", "fashion_data", "fashion_mlp", "fashion_lenet300", "fashion_lenet5", "mlp", "example_data", "run_example",
           "prune_trained", "prune_model", "export_network", "conv_spec", "USER_STEPS"]


def digits_data(seed: int = 0) -> Dataset:
    """scikit-learn's digits, pixels scaled to [0, 1], stratified 80/20 split."""
    xtr, xte, ytr, yte = _digits_split(seed)
    return Dataset(torch.from_numpy((xtr / 16.0).astype(np.float32)), torch.from_numpy(ytr).long(),
                   torch.from_numpy((xte / 16.0).astype(np.float32)), torch.from_numpy(yte).long())


#: Where Debian's dataset-fashion-mnist installs Fashion-MNIST.
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip): the big-endian header gives the dimensions."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_data(seed: int = 0) -> Dataset:
    """Fashion-MNIST from Debian's dataset-fashion-mnist: 60000 training and 10000 test
    images, pixels scaled to [0, 1], flattened to 784. ``seed`` is unused (the split is
    the dataset's own).

    Raises
    ------
    ValueError
        The package is not installed; the message says how to install it.
    """
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        raise ValueError(f"the fashion-* examples need Fashion-MNIST from Debian's "
                         f"dataset-fashion-mnist package (apt-get install "
                         f"dataset-fashion-mnist, or `make data` as root); {FASHION_DIR} has "
                         "no data")

    def images(name):
        return torch.from_numpy(_idx(FASHION_DIR / name).reshape(-1, 784).astype(np.float32)
                                / 255.0)

    def labels(name):
        return torch.from_numpy(_idx(FASHION_DIR / name).astype(np.int64))

    return Dataset(images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz"),
                   images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz"))


def mlp(inputs: int, hidden, seed: int = 0) -> nn.Sequential:
    """A ReLU MLP ``inputs``-``hidden``-10: Linear layers ``fc1``, ``fc2``, …"""
    torch.manual_seed(seed)
    dims = (inputs, *hidden, 10)
    layers = OrderedDict()
    for i, (a, b) in enumerate(zip(dims, dims[1:]), start=1):
        layers[f"fc{i}"] = nn.Linear(a, b)
        if i < len(dims) - 1:
            layers[f"relu{i}"] = nn.ReLU()
    return nn.Sequential(layers)


def fashion_mlp(hidden: int = 256, seed: int = 0) -> nn.Sequential:
    """A 784-256-10 ReLU MLP for Fashion-MNIST."""
    return mlp(784, (hidden,), seed)


def fashion_lenet300(hidden=(300, 100), seed: int = 0) -> nn.Sequential:
    """LeNet-300-100 (784-300-100-10), the MLP of the pruning literature (Han et al.)."""
    return mlp(784, hidden, seed)


def digits_mlp(hidden=(300, 100), seed: int = 0) -> nn.Sequential:
    """The digits MLP: 64 inputs, ReLU hidden layers, 10 classes."""
    return mlp(64, hidden, seed)


def _cnn(size: int, convs, pools, hidden, seed: int) -> nn.Sequential:
    """A CNN on ``size``×``size`` images: ``convs`` are ``(filters, kernel, padding)``, each
    followed by a ReLU and, where ``pools`` says so, a 2×2 max-pool; then ReLU Linear
    layers of ``hidden`` units and 10 classes."""
    torch.manual_seed(seed)
    layers, channels = OrderedDict(image=nn.Unflatten(1, (1, size, size))), 1
    for i, ((filters, kernel, pad), pool) in enumerate(zip(convs, pools), start=1):
        layers[f"conv{i}"] = nn.Conv2d(channels, filters, kernel, padding=pad)
        layers[f"relu{i}"] = nn.ReLU()
        size = size + 2 * pad - kernel + 1
        if pool:
            layers[f"pool{i}" if sum(pools) > 1 else "pool"] = nn.MaxPool2d(2)
            size //= 2
        channels = filters
    layers["flatten"] = nn.Flatten()
    dims = (channels * size * size, *hidden, 10)
    for i, (a, b) in enumerate(zip(dims, dims[1:]), start=1):
        layers[f"fc{i}"] = nn.Linear(a, b)
        if i < len(dims) - 1:
            layers[f"relu{len(convs) + i}"] = nn.ReLU()
    return nn.Sequential(layers)


def digits_cnn(channels=(16, 32), hidden: int = 64, seed: int = 0) -> nn.Sequential:
    """The digits CNN: 8×8 images, two 3×3 convolutions (padding 1), a 2×2 max-pool,
    then two Linear layers. Its convolutions are the GEMM-view layers of the artifact
    (filters × C·3·3)."""
    c1, c2 = channels
    return _cnn(8, ((c1, 3, 1), (c2, 3, 1)), (False, True), (hidden,), seed)


def fashion_lenet5(channels=(6, 16), hidden=(120, 84), seed: int = 0) -> nn.Sequential:
    """A LeNet-5-style CNN for 28×28 Fashion-MNIST: two 5×5 convolutions (no padding),
    each followed by a ReLU and a 2×2 max-pool (28→24→12→8→4), then 256-120-84-10."""
    c1, c2 = channels
    return _cnn(28, ((c1, 5, 0), (c2, 5, 0)), (True, True), hidden, seed)


@dataclass
class ExampleResult:
    """What running an example produced."""

    artifact: Artifact
    model: nn.Module
    accuracy_dense: float
    accuracy_pruned: float
    accuracy_quantized: float
    steps: list = field(default_factory=list)
    seconds: float = 0.0


def run_example(name: str, method: PruningMethod, *, weight_bits: int = 8, seed: int = 0,
                epochs: int | None = None, finetune_epochs: int | None = None,
                steps: int | None = None, progress: bool = True) -> ExampleResult:
    """Train the example ``name`` dense, prune it with ``method`` progressively, fine-tune,
    quantize and export.

    Raises
    ------
    ValueError
        Unknown example; the message lists the known ones.
    """
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}")
    defaults = SCHEDULES[name]
    epochs = defaults["epochs"] if epochs is None else epochs
    finetune_epochs = defaults["finetune_epochs"] if finetune_epochs is None else finetune_epochs
    steps = defaults["steps"] if steps is None else steps
    start = time.monotonic()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = example_data(name, seed)
    model = EXAMPLES[name](seed=seed)
    batch_size = defaults["batch_size"]
    acc_dense = train(model, data, epochs=epochs, seed=seed, desc="dense", progress=progress,
                      batch_size=batch_size)
    pruned = prune_trained(model, data, method, weight_bits=weight_bits, seed=seed,
                           finetune_epochs=finetune_epochs, steps=steps, progress=progress,
                           input_scale=INPUT_SCALES.get(name), batch_size=batch_size)
    sparse, acc_pruned, acc_quant, log = (pruned[k] for k in ("layers", "accuracy_pruned",
                                                              "accuracy_quantized", "log"))
    provenance = {
        "source": name, "method": method.name, "parameters": method.params(),
        "weight_bits": weight_bits, "quantization": "symmetric, per-row scale",
        "training": {"seed": seed, "epochs": epochs, "finetune_epochs": finetune_epochs,
                     "steps": steps, "batch_size": batch_size,
                     "dataset": DATASET_NAMES[EXAMPLE_DATA[name]],
                     **({"test_fraction": DIGITS_TEST_FRACTION, "split_seed": seed}
                        if EXAMPLE_DATA[name] is digits_data else {})},
        "accuracy": {"dense": acc_dense, "pruned": acc_pruned, "quantized": acc_quant},
        "schedule": log,
    }
    return ExampleResult(Artifact(sparse, provenance), model, acc_dense, acc_pruned, acc_quant,
                         log, time.monotonic() - start)


#: Progressive pruning steps for a user's model (``darbgen prune SOURCE --data``).
USER_STEPS = 4


def prune_model(model, data: Dataset, method: PruningMethod, *, epochs: int,
                steps: int = USER_STEPS, weight_bits: int = 8, seed: int = 0,
                progress: bool = False, source: str = "") -> ExampleResult:
    """Prune a user's trained ``model`` on the user's ``data``: the built-in examples'
    path without the dense training. ``steps`` rounds of pruning, each followed by
    ``epochs`` of masked fine-tuning; then quantization, calibration of every layer's
    input scale on ``data.x_train``, and the accuracy of the integer network (the golden
    model) on the test split.

    Returns
    -------
    ExampleResult
        Its artifact's provenance holds ``accuracy``: ``dense``, ``pruned``,
        ``quantized`` (int weights, float activations) and ``int`` (the integer network).
    """
    from ..network import plan
    from ..sim.golden import network_ref

    start = time.monotonic()
    torch.manual_seed(seed)
    acc_dense = accuracy(model, data.x_test, data.y_test)
    pruned = prune_trained(model, data, method, weight_bits=weight_bits, seed=seed,
                           finetune_epochs=epochs, steps=steps, progress=progress)
    provenance = {
        "source": source, "method": method.name, "parameters": method.params(),
        "weight_bits": weight_bits, "quantization": "symmetric, per-row scale",
        "training": {"seed": seed, "finetune_epochs": epochs, "steps": steps,
                     "dataset": "user data", "train_samples": len(data.x_train),
                     "test_samples": len(data.x_test)},
        "accuracy": {"dense": acc_dense, "pruned": pruned["accuracy_pruned"],
                     "quantized": pruned["accuracy_quantized"]},
        "schedule": pruned["log"],
    }
    artifact = Artifact(pruned["layers"], provenance)
    net = plan(artifact)
    x = data.x_test.reshape(len(data.x_test), -1).double().numpy()
    logits = network_ref(net, net.quantize_input(x))
    provenance["accuracy"]["int"] = float((net.predict(logits) == data.y_test.numpy()).mean())
    return ExampleResult(artifact, model, acc_dense, pruned["accuracy_pruned"],
                         pruned["accuracy_quantized"], pruned["log"], time.monotonic() - start)


def prune_trained(model, data, method, *, weight_bits: int = 8, seed: int = 0,
                  finetune_epochs: int, steps: int, progress: bool = False,
                  input_scale: float | None = None, batch_size: int = 32) -> dict:
    """Prune a trained ``model`` with ``method`` progressively (``steps`` rounds of masked
    fine-tuning, seeds ``seed + 1 + step``), quantize, export and calibrate.

    ``method`` is one :class:`PruningMethod` for every layer or a sequence of them, one
    per prunable layer (per-layer ratios or formats).

    Returns
    -------
    dict
        ``layers`` (the calibrated SparseLayers), ``accuracy_pruned`` (float),
        ``accuracy_quantized`` (int weights) and ``log`` (the schedule).
    """
    layers = list(prunable_layers(model))
    methods = per_layer(method, layers)
    log = progressive_prune(
        layers, methods, steps,
        lambda step: train(model, data, epochs=finetune_epochs, seed=seed + 1 + step,
                           lr=5e-4, desc=f"prune {step + 1}/{steps}", progress=progress,
                           batch_size=batch_size))
    acc_pruned = accuracy(model, data.x_test, data.y_test)
    sparse = [export_layer(layer, m, weight_bits=weight_bits)
              for layer, m in zip(layers, methods)]
    acc_quant = _quantized_accuracy(model, layers, sparse, data)
    return {"layers": _calibrate(model, layers, sparse, data.x_train, input_scale),
            "accuracy_pruned": acc_pruned, "accuracy_quantized": acc_quant, "log": log}


def _quantized_accuracy(model, layers, sparse, data) -> float:
    """Test accuracy with every pruned weight replaced by its dequantized int value."""
    saved = [layer.weight() for layer in layers]
    try:
        for layer, s in zip(layers, sparse):
            _load_weight(layer, s.dequantized())
        return accuracy(model, data.x_test, data.y_test)
    finally:
        for layer, w in zip(layers, saved):
            _load_weight(layer, w)


def export_network(model: nn.Module, method: PruningMethod, x_train, *, weight_bits: int = 8,
                   input_scale: float | None = None, provenance: dict | None = None) -> Artifact:
    """The artifact of a pruned ``model`` (every Linear and Conv2d masked, e.g. by
    ``method.apply`` or :meth:`PrunableLayer.prune`) that runs as a whole integer network:
    each layer quantized in ``method``'s layout and calibrated on ``x_train`` (a batch of
    float inputs), the ReLU and max-pool after it recorded.

    ``model`` must be an ``nn.Sequential`` of Linear, Conv2d, ReLU, MaxPool2d, Flatten and
    Unflatten modules (what :func:`darbgen.pruning.graphs.from_module` returns).
    """
    layers = list(prunable_layers(model))
    sparse = [export_layer(layer, method, weight_bits=weight_bits) for layer in layers]
    calibrated = _calibrate(model, layers, sparse, torch.as_tensor(x_train), input_scale)
    return Artifact(calibrated, {"method": method.name, "parameters": method.params(),
                                 "weight_bits": weight_bits, **(provenance or {})})


def _calibrate(model, layers, sparse, x_train, input_scale=None) -> list:
    """Give every layer its ``input_scale`` and ``activation`` for integer inference.

    A layer's input step is the ``CALIBRATION_QUANTILE`` quantile of the input magnitudes
    it sees on the training split (with the quantized weights) over 127: the rare larger
    inputs saturate, and every other input gets a finer step than the plain maximum would
    give it. The first layer's step is the data set's own when it has one (digits: pixels
    are integers 0..16).
    """
    seen = [0.0] * len(layers)
    sizes = [None] * len(layers)

    def record(i, args):
        magnitudes = args[0].detach().abs().flatten().numpy()
        seen[i] = max(seen[i], float(np.quantile(magnitudes, CALIBRATION_QUANTILE)))
        sizes[i] = tuple(args[0].shape[-2:])

    hooks = [layer.module.register_forward_pre_hook(lambda _m, args, i=i: record(i, args))
             for i, layer in enumerate(layers)]
    saved = [layer.weight() for layer in layers]
    try:
        for layer, s in zip(layers, sparse):
            _load_weight(layer, s.dequantized())
        with torch.no_grad():
            model.eval()
            model(x_train)
    finally:
        for hook in hooks:
            hook.remove()
        for layer, w in zip(layers, saved):
            _load_weight(layer, w)
    children = list(model.children())
    out = []
    for i, (layer, s) in enumerate(zip(layers, sparse)):
        scale = input_scale if i == 0 and input_scale else max(seen[i], 1e-8) / 127
        at = next((j for j, c in enumerate(children) if c is layer.module), None)
        relu = at is not None and at + 1 < len(children) and isinstance(children[at + 1], nn.ReLU)
        extra = {}
        if isinstance(layer.module, nn.Conv2d):
            after = children[at + 1 + relu] if at is not None and at + 1 + relu < len(children) \
                else None
            extra["conv"] = conv_spec(layer.module, sizes[i], after)
        out.append(replace(s, input_scale=scale, activation="relu" if relu else "none", **extra))
    return out


def conv_spec(conv: nn.Conv2d, input_size, after: nn.Module | None = None) -> ConvSpec:
    """The :class:`~darbgen.conv.ConvSpec` of a Conv2d that sees ``input_size`` maps,
    with the ``MaxPool2d`` that may follow its activation.

    Raises
    ------
    ValueError
        A feature the integer network does not run (dilation, groups, non-zero padding
        modes, a pool whose stride differs from its window, pool padding).
    """
    name = type(conv).__name__
    if conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros" or \
            isinstance(conv.padding, str):
        raise ValueError(f"{name} with dilation {conv.dilation}, groups {conv.groups}, padding "
                         f"{conv.padding!r} ({conv.padding_mode}) is not supported: only "
                         "dilation 1, groups 1 and numeric zero padding")
    pool = 1
    if isinstance(after, nn.MaxPool2d):
        k, stride = after.kernel_size, after.stride
        if not isinstance(k, int) or stride not in (k, (k, k)) or after.padding not in (0, (0, 0)) \
                or after.dilation not in (1, (1, 1)) or after.ceil_mode:
            raise ValueError(f"{after} is not supported: only square MaxPool2d(k) windows "
                             "with stride k, no padding, floor mode")
        pool = k
    return ConvSpec(input_size, conv.padding, conv.stride, pool)


def _load_weight(layer, w2d: np.ndarray) -> None:
    with torch.no_grad():
        start = 0
        for p in layer.params:
            orig = getattr(layer.module, p + "_orig")
            width = orig[0].numel()
            orig.copy_(torch.from_numpy(w2d[:, start:start + width]).reshape(orig.shape))
            start += width


#: Built-in examples: name → model constructor.
EXAMPLES = {"digits-mlp": digits_mlp, "digits-cnn": digits_cnn, "fashion-mlp": fashion_mlp,
            "fashion-lenet300": fashion_lenet300, "fashion-lenet5": fashion_lenet5}
#: ... and their data.
EXAMPLE_DATA = {"digits-mlp": digits_data, "digits-cnn": digits_data, "fashion-mlp": fashion_data,
                "fashion-lenet300": fashion_data, "fashion-lenet5": fashion_data}
#: How the provenance names each data set.
DATASET_NAMES = {digits_data: "sklearn digits",
                 fashion_data: "Fashion-MNIST (Debian dataset-fashion-mnist)"}
#: The input step of examples whose inputs are integers already (digits pixels 0..16,
#: scaled by 1/16 for training): their int8 inputs are the pixels themselves.
INPUT_SCALES = {"digits-mlp": 1 / 16, "digits-cnn": 1 / 16}

#: Which quantile of a layer's input magnitudes its int8 range covers (see _calibrate):
#: the plain maximum (1.0) spends the range on a handful of outliers.
CALIBRATION_QUANTILE = 0.9999
#: Their training schedules: dense epochs, then progressive steps of fine-tuning epochs,
#: and the batch size. A CNN epoch costs more on the CPU, so the CNN trains shorter
#: (digits-cnn: about 18 s in all). Fashion-MNIST's 60000 images take larger batches: an
#: epoch of fashion-lenet300 at 128 is a few seconds on one core, fashion-lenet5 at 256
#: about ten (see docs/fashion.md).
SCHEDULES = {"digits-mlp": {"epochs": 60, "finetune_epochs": 30, "steps": 6, "batch_size": 32},
             "digits-cnn": {"epochs": 30, "finetune_epochs": 15, "steps": 4, "batch_size": 32},
             "fashion-mlp": {"epochs": 4, "finetune_epochs": 2, "steps": 3, "batch_size": 32},
             "fashion-lenet300": {"epochs": 15, "finetune_epochs": 2, "steps": 3,
                                  "batch_size": 128},
             "fashion-lenet5": {"epochs": 6, "finetune_epochs": 2, "steps": 2,
                                "batch_size": 256}}


def example_data(name: str, seed: int = 0) -> Dataset:
    """The data set of the built-in example ``name``."""
    if name not in EXAMPLE_DATA:
        raise ValueError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}")
    return EXAMPLE_DATA[name](seed)


def digits_inputs(seed: int = 0) -> np.ndarray:
    """The digits test split as int8 input vectors: pixels 0..16 are exact int8 values."""
    return _digits_split(seed)[1].astype(np.int8)


if __name__ == "__main__":
    # python -m darbgen.pruning.examples digits-inputs OUT.npy [N]: the demo's input vectors
    import sys

    from ..format import atomic_write

    if len(sys.argv) not in (3, 4) or sys.argv[1] != "digits-inputs":
        sys.exit("usage: python -m darbgen.pruning.examples digits-inputs OUT.npy [N]")
    x = digits_inputs()[:int(sys.argv[3])] if len(sys.argv) == 4 else digits_inputs()
    atomic_write(sys.argv[2], lambda f: np.save(f, x, allow_pickle=False))
    print(f"wrote {sys.argv[2]}: {x.shape[0]} digits test images as int8 vectors")
