"""A user's network as a chain of steps the integer network runs, read from ONNX.

The integer network (:mod:`darbgen.network`) runs a chain: Linear layers and
convolutions, each optionally followed by a ReLU, a convolution's ReLU optionally by a
square max-pool, with flattening between maps and vectors. :class:`Chain` is that
chain with float weights, read from a graph (:func:`read_onnx` here, the torch graphs
in :mod:`darbgen.pruning.graphs`); everything downstream (pruning, fine-tuning,
calibration, export) starts from it. A step is what one layer of ``torch.nn``
would do, so the chain becomes an ``nn.Sequential`` one to one.

Reading is strict. BatchNormalization is folded into the Gemm or Conv before it
(:func:`fold_batchnorm`); inference no-ops (Identity, Dropout) vanish; every other op
the integer network cannot run is refused by name (``node 'gelu_3' (Gelu) has no
integer form``), never dropped. A graph that branches is refused too.

Only numpy (and the ``onnx`` package's protobuf reader): no torch. Nothing in an ONNX
file is executed: it is a protobuf of tensors and op names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .files import open_input, read_input

__all__ = ["SourceLayer", "STEP_KINDS", "ACTIVATIONS", "Step", "Chain", "GraphError", "read_onnx", "fold_batchnorm",
           "MAX_ONNX_BYTES", "integer_chain", "aten_constant", "aten_step", "read_pt2",
           "read_onnx_weights", "onnx_has_lstm"]

#: What a step does: ``linear`` and ``conv`` carry weights; ``relu``; ``maxpool`` (a
#: square window with stride equal to it); ``flatten`` (maps to vectors, channel-major);
#: ``unflatten`` (vectors to ``shape`` maps); ``batchnorm`` only until folded.
STEP_KINDS = ("linear", "conv", "relu", "maxpool", "flatten", "unflatten", "batchnorm")
#: What may run between the Linear layers of a state dict read as a chain (a state dict
#: names no ops, so the user says which: ``darbgen prune SD.pt --data D --activation A``).
ACTIVATIONS = ("relu", "none")
#: Largest ONNX file read (protobuf itself stops at 2 GiB).
MAX_ONNX_BYTES = 1 << 30


class GraphError(ValueError):
    """A graph the integer network cannot run; the message names the node."""


@dataclass(frozen=True, eq=False)
class Step:
    """One step of a :class:`Chain`.

    Parameters
    ----------
    kind : str
        One of :data:`STEP_KINDS`.
    name : str
        The node's name, usable as a module name (no dots).
    weight, bias : ndarray, optional
        ``linear``: ``rows × cols``; ``conv``: ``F × C × kh × kw``. ``batchnorm``:
        ``weight`` is ``(scale, shift, mean, var)`` stacked and ``bias`` ``[epsilon]``.
    padding, stride : (int, int)
        ``conv`` only.
    window : int
        ``maxpool`` only.
    shape : tuple of int
        ``unflatten`` only: ``(C, H, W)``.
    """

    kind: str
    name: str
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    padding: tuple = (0, 0)
    stride: tuple = (1, 1)
    window: int = 1
    shape: tuple = ()

    def __post_init__(self):
        if self.kind not in STEP_KINDS:
            raise ValueError(f"step kind must be one of {', '.join(STEP_KINDS)}, "
                             f"not {self.kind!r}")


class SourceLayer(NamedTuple):
    """One weight matrix of a model file, in GEMM view, before pruning.

    ``weight`` is ``rows × cols`` float64 (a convolution's ``F × C·kh·kw``, an LSTM's
    stacked ``[W_ih | W_hh]``), ``shape`` the original one, ``recurrent`` whether it is
    an LSTM's gate matrix: a kind the file said, not one guessed from a name.
    """

    name: str
    weight: np.ndarray
    bias: np.ndarray | None
    shape: tuple
    recurrent: bool = False


@dataclass(frozen=True, eq=False)
class Chain:
    """A network as a chain of :class:`Step`, with the shape of one input sample."""

    steps: tuple
    input_shape: tuple = field(default=())

    @property
    def layers(self) -> list:
        """The steps with weights (``linear``, ``conv``), in order."""
        return [s for s in self.steps if s.kind in ("linear", "conv")]


def clean_name(name: str, fallback: str) -> str:
    """A node name as a module name: ``'/0/Gemm'`` → ``'0_Gemm'``."""
    clean = re.sub(r"\W+", "_", name).strip("_")
    return clean or fallback


def fold_batchnorm(chain: Chain) -> Chain:
    """``chain`` with each BatchNorm folded into the Linear or Conv right before it:
    ``W' = W · g``, ``b' = (b − mean) · g + shift`` with ``g = scale / sqrt(var + eps)``
    per output channel.

    Raises
    ------
    GraphError
        A BatchNorm that follows no Linear or Conv (the node is named).
    """
    out = []
    for s in chain.steps:
        if s.kind != "batchnorm":
            out.append(s)
            continue
        prev = out[-1] if out else None
        if prev is None or prev.kind not in ("linear", "conv"):
            raise GraphError(f"node {s.name!r} (BatchNormalization) follows no Gemm, MatMul or "
                             "Conv to fold into")
        scale, shift, mean, var = s.weight
        if len(scale) != prev.weight.shape[0]:
            raise GraphError(f"node {s.name!r} (BatchNormalization) normalizes {len(scale)} "
                             f"channels, node {prev.name!r} produces {prev.weight.shape[0]}")
        g = scale / np.sqrt(var + s.bias[0])
        w = prev.weight * g.reshape((-1,) + (1,) * (prev.weight.ndim - 1))
        b = np.zeros(len(g)) if prev.bias is None else prev.bias
        out[-1] = replace(prev, weight=w, bias=(b - mean) * g + shift)
    return replace(chain, steps=tuple(out))


# -- ONNX ------------------------------------------------------------------------------

#: What a refused op would need, where darbgen can say more than "no integer form".
_HINTS = {
    "Shape": "flatten with torch.flatten(x, 1) or nn.Flatten rather than x.view(x.size(0), -1)",
    "LSTM": "a network with an LSTM is pruned one-shot (without --data)",
}


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _refuse(node, why: str = "has no integer form") -> GraphError:
    hint = _HINTS.get(node.op_type)
    return GraphError(f"node {node.name!r} ({node.op_type}) {why}" + (f": {hint}" if hint else ""))


def read_onnx(path) -> Chain:
    """The chain of an ONNX model: Gemm, MatMul (+ Add), Conv, Relu, MaxPool, Flatten,
    Reshape, BatchNormalization (folded), Identity, Dropout.

    Raises
    ------
    GraphError
        An op without integer form, an attribute the integer network does not run
        (dilation, groups, asymmetric padding, a pool whose stride differs from its
        window, ...), or a graph that is not a chain; the message names the node.
    ValueError
        Not a readable ONNX file, or one with external data (darbgen reads one file).
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    model = load_onnx(path)
    g = model.graph
    consts = {}
    for t in g.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"{path}: initializer {t.name!r} is stored in an external file; "
                             "darbgen reads self-contained ONNX files only")
        consts[t.name] = numpy_helper.to_array(t).astype(np.float64, copy=False) \
            if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                               onnx.TensorProto.FLOAT16) else numpy_helper.to_array(t)
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise GraphError(f"{path}: the graph has {len(inputs)} inputs; darbgen runs networks "
                         "with one")
    dims = inputs[0].type.tensor_type.shape.dim
    input_shape = tuple(d.dim_value for d in dims[1:])
    current = inputs[0].name           # the one activation tensor the chain carries
    steps = []
    for i, node in enumerate(g.node):
        op = node.op_type
        name = clean_name(node.name, f"{op.lower()}{i}")
        a = _attrs(node)
        if op == "Constant":
            if "value" not in a:
                raise _refuse(node, "holds no tensor 'value'")
            consts[node.output[0]] = numpy_helper.to_array(a["value"])
            continue
        if op in ("Identity", "Dropout") and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
            continue
        ins = list(node.input)
        if current not in ins:
            raise _refuse(node, "does not take the chain's activation (the graph branches "
                                "or computes on constants)")
        others = [x for x in ins if x != current and x]
        missing = [x for x in others if x not in consts]
        if missing:
            raise _refuse(node, f"joins a second activation {missing[0]!r}; darbgen runs chains")
        step = _onnx_step(node, name, a, [consts[x] for x in others], steps, ins.index(current))
        if step is not None:
            steps.append(step)
        current = node.output[0]
    if g.output[0].name != current:
        raise GraphError(f"{path}: the graph's output {g.output[0].name!r} is not the end "
                         "of its chain")
    return integer_chain(fold_batchnorm(Chain(tuple(steps), input_shape)))


def integer_chain(chain: Chain) -> Chain:
    """``chain`` in the order the integer network runs it, or a :class:`GraphError`.

    A layer may be followed by a ReLU, a convolution (after its ReLU, if any) by one
    max-pool; a pool before a ReLU is moved after it (they commute). Flattening a
    vector is dropped. The chain ends in a Linear layer: its outputs are the logits.

    Raises
    ------
    GraphError
        A step where the integer network has none (a ReLU that follows no layer, a pool
        after a Linear layer, a Linear layer on maps, ...); the message names the node.
    """
    steps = list(chain.steps)
    for i in range(len(steps) - 1):             # maxpool, relu -> relu, maxpool
        if steps[i].kind == "maxpool" and steps[i + 1].kind == "relu":
            steps[i], steps[i + 1] = steps[i + 1], steps[i]
    maps = len(chain.input_shape) == 3
    out = []
    for s in steps:
        prev = out[-1].kind if out else None
        before = out[-2].kind if len(out) > 1 else None
        if s.kind == "flatten":
            if maps:
                out.append(s)
            maps = False
            continue
        if s.kind == "unflatten" and (maps or out):
            raise GraphError(f"node {s.name!r} reshapes to maps after the first layer; "
                             "darbgen unflattens the network's input only")
        if s.kind == "conv" and not maps:
            raise GraphError(f"node {s.name!r} (Conv) takes vectors; give the network image "
                             "inputs (N, C, H, W) or unflatten them first")
        if s.kind == "linear" and maps:
            raise GraphError(f"node {s.name!r} (Gemm/MatMul) takes maps; flatten them first")
        if s.kind == "relu" and prev not in ("linear", "conv"):
            raise GraphError(f"node {s.name!r} (Relu) follows no Gemm, MatMul or Conv; "
                             "the integer network applies a ReLU right after a layer")
        if s.kind == "maxpool" and not (prev == "conv" or (prev == "relu" and before == "conv")):
            raise GraphError(f"node {s.name!r} (MaxPool) follows no Conv (or Conv and Relu); "
                             "the integer network pools a convolution's output once")
        if s.kind == "unflatten":
            maps = True
        out.append(s)
    layers = [s for s in out if s.kind in ("linear", "conv")]
    if not layers:
        raise GraphError("the graph has no Gemm, MatMul or Conv layer")
    if out[-1].kind != "linear":
        raise GraphError(f"the graph ends in node {out[-1].name!r} ({out[-1].kind}), not a "
                         "Linear layer: the integer network's logits are a Linear layer's "
                         "outputs")
    return replace(chain, steps=tuple(out))


def _onnx_step(node, name, a, args, steps, position):
    """The step of one ONNX node (``None``: it changed an earlier step or nothing)."""
    op = node.op_type
    if op in ("Identity", "Dropout"):
        return None
    if op == "Relu":
        return Step("relu", name)
    if op == "Gemm":
        if a.get("transA", 0) or position != 0:
            raise _refuse(node, "multiplies from the left (transA); darbgen runs x · Wᵀ")
        w = args[0] if a.get("transB", 0) else args[0].T
        bias = a.get("beta", 1.0) * np.broadcast_to(np.asarray(args[1], np.float64).reshape(-1),
                                                    w.shape[:1]) if len(args) > 1 else None
        return Step("linear", name, np.asarray(w, np.float64) * a.get("alpha", 1.0), bias)
    if op == "MatMul":
        if position != 0 or args[0].ndim != 2:
            raise _refuse(node, "is not activation × a 2-D weight")
        return Step("linear", name, np.asarray(args[0].T, np.float64))
    if op == "Add":
        prev = steps[-1] if steps else None
        if prev is None or prev.kind not in ("linear", "conv") or prev.bias is not None:
            raise _refuse(node, "adds a constant that is no Gemm, MatMul or Conv bias")
        rows = prev.weight.shape[0]
        c = np.asarray(args[0], np.float64)
        if c.size != rows or (prev.kind == "conv" and c.ndim == 1):
            raise _refuse(node, f"adds {c.shape}, not one bias per output of {prev.name!r}")
        steps[-1] = replace(prev, bias=c.reshape(rows))
        return None
    if op == "Conv":
        w = np.asarray(args[0], np.float64)
        if w.ndim != 4:
            raise _refuse(node, f"is a {w.ndim - 2}-D convolution; darbgen runs 2-D ones")
        pads = tuple(a.get("pads", (0, 0, 0, 0)))
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or \
                tuple(a.get("dilations", (1, 1))) != (1, 1) or a.get("group", 1) != 1 or \
                pads[:2] != pads[2:]:
            raise _refuse(node, f"has pads {pads}, dilations {tuple(a.get('dilations', (1, 1)))}"
                                f", group {a.get('group', 1)}: darbgen runs symmetric padding, "
                                "dilation 1, group 1")
        return Step("conv", name, w, None if len(args) < 2 else np.asarray(args[1], np.float64),
                    padding=pads[:2], stride=tuple(a.get("strides", (1, 1))))
    if op == "MaxPool":
        k = tuple(a.get("kernel_shape", ()))
        if len(k) != 2 or k[0] != k[1] or tuple(a.get("strides", (1, 1))) != k or \
                any(a.get("pads", (0,))) or a.get("ceil_mode", 0) or \
                any(d != 1 for d in a.get("dilations", (1, 1))) or len(node.output) > 1:
            raise _refuse(node, f"has kernel {k}, strides {tuple(a.get('strides', (1, 1)))}: "
                                "darbgen pools square windows with stride equal to the window, "
                                "no padding, floor mode")
        return Step("maxpool", name, window=k[0])
    if op == "Flatten":
        if a.get("axis", 1) != 1:
            raise _refuse(node, f"flattens from axis {a.get('axis')}; darbgen flattens from 1")
        return Step("flatten", name)
    if op == "Reshape":
        shape = tuple(int(v) for v in np.asarray(args[0]).reshape(-1))
        if len(shape) == 2 and shape[0] in (0, -1, 1) and shape[1] != 0:
            return Step("flatten", name)
        if len(shape) == 4 and shape[0] in (0, -1, 1) and min(shape[1:]) > 0:
            return Step("unflatten", name, shape=shape[1:])
        raise _refuse(node, f"reshapes to {shape}; darbgen flattens to (N, -1) or unflattens "
                            "vectors to (N, C, H, W)")
    if op == "BatchNormalization":
        if a.get("training_mode", 0):
            raise _refuse(node, "is in training mode; export the model in eval mode")
        scale, shift, mean, var = (np.asarray(x, np.float64) for x in args[:4])
        return Step("batchnorm", name, np.stack([scale, shift, mean, var]),
                    np.array([a.get("epsilon", 1e-5)]))
    raise _refuse(node)


# -- torch.export graphs (ATen ops) ------------------------------------------------------

def aten_constant(name: str, target: str, args: list, const) -> np.ndarray | None:
    """The value of an ATen op on parameters alone: what ``torch.nn.utils.prune``'s
    forward pre-hook computes (``weight_orig * weight_mask``, with the mask's dtype
    cast and checked). ``None`` for a check that yields nothing.

    Raises
    ------
    GraphError
        Any other op that does not take the chain's activation (the graph branches).
    """
    t = target.removeprefix("torch.ops.").removesuffix(".default")
    if t == "aten._assert_tensor_metadata":
        return None
    if t in ("aten.to.dtype", "aten.to.dtype_layout", "aten._to_copy"):
        return const(args[0])
    if t == "aten.mul.Tensor" and len(args) == 2:
        return const(args[0]) * const(args[1])
    raise GraphError(f"node {name!r} ({t}) does not take the chain's activation (the graph "
                     "branches)")


def aten_step(name: str, target: str, args: list, const, path: str = "") -> Step | None:
    """The step of one ATen op of a ``torch.export`` graph (``None``: a no-op).

    Parameters
    ----------
    name : str
        The node's name (a step's name, and the name in errors).
    target : str
        The op, ``aten.linear.default`` or ``torch.ops.aten.linear.default``.
    args : list
        Its positional arguments, the activation first; tensors as opaque references.
    const : callable
        A tensor reference (or ``None``) → its float64 array (or ``None``).
    path : str
        The module path of the layer the op belongs to (``fc1``): a layer's name.

    Raises
    ------
    GraphError
        An op or argument the integer network does not run; the message names the node.
    """
    t = target.removeprefix("torch.ops.").removesuffix(".default")
    args = list(args) + [None] * 8
    layer = path.replace(".", "_") or name
    if t in ("aten.relu", "aten.relu_"):
        return Step("relu", name)
    if t in ("aten.dropout", "aten.clone", "aten.contiguous", "aten.detach",
             "aten.alias"):
        return None
    if t == "aten.linear":
        return Step("linear", layer, const(args[1]), const(args[2]))
    if t in ("aten.conv2d", "aten.conv2d.padding"):
        stride, padding, dilation, groups = (args[3] or [1, 1], args[4] or [0, 0],
                                             args[5] or [1, 1], args[6] or 1)
        if isinstance(padding, str) or list(dilation) not in ([1, 1], [1]) or groups != 1:
            raise GraphError(f"node {name!r} ({t}) has padding {padding!r}, dilation "
                             f"{dilation}, groups {groups}: darbgen runs numeric padding, "
                             "dilation 1, groups 1")
        pair = (lambda v: tuple(v) * (2 // len(v)) if isinstance(v, (list, tuple)) else (v, v))
        return Step("conv", layer, const(args[1]), const(args[2]),
                    padding=pair(padding), stride=pair(stride))
    if t == "aten.batch_norm":
        w, b, mean, var = (const(a) for a in args[1:5])
        if args[5]:
            raise GraphError(f"node {name!r} ({t}) normalizes in training mode: export the "
                             "module in eval mode")
        w = np.ones_like(mean) if w is None else w
        b = np.zeros_like(mean) if b is None else b
        return Step("batchnorm", name, np.stack([w, b, mean, var]), np.array([args[7]]))
    if t == "aten.max_pool2d":
        k = list(args[1])
        stride = list(args[2] or k)
        k2 = k * (2 // len(k))
        if k2[0] != k2[1] or stride * (2 // len(stride)) != k2 or any(args[3] or [0]) or \
                any(d != 1 for d in (args[4] or [1])) or args[5]:
            raise GraphError(f"node {name!r} ({t}) has kernel {k}, stride {stride}: darbgen "
                             "pools square windows with stride equal to the window, no "
                             "padding, floor mode")
        return Step("maxpool", name, window=k2[0])
    if t == "aten.flatten.using_ints":
        end = -1 if args[2] is None else args[2]
        if args[1] != 1 or end != -1:
            raise GraphError(f"node {name!r} ({t}) flattens dims {args[1]}..{end}; "
                             "darbgen flattens from 1 to the end")
        return Step("flatten", name)
    if t in ("aten.view", "aten.reshape", "aten.unflatten.int"):
        shape = list(args[1]) if t != "aten.unflatten.int" else None
        if shape is not None and len(shape) == 2:
            return Step("flatten", name)
        if t == "aten.unflatten.int" and args[1] == 1:
            return Step("unflatten", name, shape=tuple(args[2]))
        if shape is not None and len(shape) == 4:
            return Step("unflatten", name, shape=tuple(shape[1:]))
        raise GraphError(f"node {name!r} ({t}) reshapes to {args[1:3]}; darbgen flattens to "
                         "(N, -1) or unflattens vectors to (N, C, H, W)")
    raise GraphError(f"node {name!r} ({t}) has no integer form")


#: torch.export's serialized dtypes (``torch._export.serde.schema.ScalarType``) that
#: weights may have, as numpy dtypes.
_PT2_DTYPES = {5: np.int64, 6: np.float16, 7: np.float32, 8: np.float64}


class _Ref(str):
    """A tensor argument of a serialized node: the tensor's name."""


def _pt2_arg(arg: dict):
    """A serialized argument as a Python value (tensors as :class:`_Ref`)."""
    (kind, value), = arg.items()
    if kind == "as_tensor":
        return _Ref(value["name"])
    if kind == "as_none":
        return None
    if kind in ("as_int", "as_float", "as_bool", "as_string", "as_ints", "as_floats",
                "as_bools", "as_scalar_type", "as_layout", "as_memory_format", "as_device"):
        return value
    raise GraphError(f"argument {kind} {value!r} is not a constant darbgen reads")


def read_pt2(path) -> Chain:
    """The chain of a ``torch.export.save`` file, read without ``torch.export.load``.

    ``torch.export.load`` unpickles with ``torch.load(weights_only=False)``, which runs
    code from the file. This reader takes only the archive's JSON (the graph and the
    weights' table) and the weights' raw bytes, whose sizes it checks against the table;
    a pickled weight or constant is refused.

    Raises
    ------
    GraphError
        An op the integer network cannot run (named by its node), or a graph that is
        not a chain.
    ValueError
        Not a ``torch.export`` archive, a pickled weight, or a weight whose bytes do not
        match its declared shape.
    """
    import json
    import zipfile

    path = Path(path)
    try:
        archive = zipfile.ZipFile(open_input(path, what="a torch.export archive"))
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path}: not a torch.export archive ({e})") from None
    with archive:
        infos = {i.filename.split("/", 1)[-1]: i for i in archive.infolist()}

        def member(name, limit=MAX_ONNX_BYTES):
            if name not in infos:
                raise ValueError(f"{path}: has no {name!r}; not a torch.export.save archive")
            if infos[name].file_size > limit:
                raise ValueError(f"{path}: {name!r} holds {infos[name].file_size} bytes, "
                                 f"more than {limit}")
            return archive.read(infos[name])

        try:
            model = json.loads(member("models/model.json", 64 << 20))
            table = json.loads(member("data/weights/model_weights_config.json", 64 << 20))
            consts = json.loads(member("data/constants/model_constants_config.json", 64 << 20))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: damaged JSON in the archive ({e})") from None
        if consts.get("config"):
            raise ValueError(f"{path}: holds constants ({', '.join(consts['config'])}), "
                             "which torch.export pickles; darbgen reads parameters and "
                             "buffers only")
        weights = {}
        for fqn, entry in table.get("config", {}).items():
            meta = entry["tensor_meta"]
            if entry.get("use_pickle") or meta["dtype"] not in _PT2_DTYPES:
                raise ValueError(f"{path}: weight {fqn!r} is pickled or of dtype code "
                                 f"{meta['dtype']}; darbgen reads raw float weights only")
            shape = tuple(d["as_int"] for d in meta["sizes"])
            dtype = np.dtype(_PT2_DTYPES[meta["dtype"]])
            raw = member(f"data/weights/{entry['path_name']}")
            offset = meta["storage_offset"]["as_int"] * dtype.itemsize
            need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            contiguous = [d["as_int"] for d in meta["strides"]] == \
                [int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape))]
            if not contiguous or offset + need > len(raw):
                raise ValueError(f"{path}: weight {fqn!r} of shape {shape} does not fit its "
                                 f"{len(raw)} bytes contiguously")
            weights[fqn] = np.frombuffer(raw, dtype, int(np.prod(shape)), offset).reshape(shape)
    gm = model["graph_module"]
    names, user = {}, []
    for spec in gm["signature"]["input_specs"]:
        (kind, v), = spec.items()
        if kind in ("parameter", "buffer"):
            names[v["arg"]["name"]] = v[f"{kind}_name"]
        elif kind == "user_input":
            user.append(v["arg"]["as_tensor"]["name"])
        else:
            raise ValueError(f"{path}: input {kind} is not a parameter, buffer or user input")
    if len(user) != 1:
        raise GraphError(f"{path}: the graph has {len(user)} inputs; darbgen runs networks "
                         "with one")

    computed = {}                   # tensor name -> array: ops on parameters only

    def const(ref):
        if ref is None:
            return None
        if ref in computed:
            return computed[ref]
        if ref not in names or names[ref] not in weights:
            raise GraphError(f"{path}: tensor {ref!r} is no stored parameter or buffer")
        return weights[names[ref]].astype(np.float64)

    current, steps = user[0], []
    for node in gm["graph"]["nodes"]:
        args = [_pt2_arg(i["arg"]) for i in node["inputs"]]
        name = node.get("name") or node["outputs"][0]["as_tensor"]["name"]
        outputs = [o["as_tensor"]["name"] for o in node["outputs"] if "as_tensor" in o]
        if current not in args:
            value = aten_constant(name, node["target"], args, const)
            if value is not None and outputs:
                computed[outputs[0]] = value
            continue
        if args[0] != current:
            raise GraphError(f"node {name!r} ({node['target']}) does not take the chain's "
                             "activation first")
        stack = (node.get("metadata") or {}).get("nn_module_stack", "")
        module = stack.split(";")[-1].split(",")[1] if stack.count(",") >= 2 else ""
        step = aten_step(name, node["target"], args, const, module)
        if step is not None:
            steps.append(step)
        if not outputs:
            raise GraphError(f"node {name!r} ({node['target']}) has no tensor output")
        current = outputs[0]
    out = gm["signature"]["output_specs"]
    if len(out) != 1 or out[0].get("user_output", {}).get("arg", {}).get(
            "as_tensor", {}).get("name") != current:
        raise GraphError(f"{path}: the graph's output is not the end of its chain")
    shape = ()
    for t in (gm["graph"].get("tensor_values") or {}).get(user[0], {}).get("sizes", [])[1:]:
        shape += (t.get("as_int", 0),)
    return integer_chain(fold_batchnorm(Chain(tuple(steps), shape)))


# -- ONNX weights alone (one-shot pruning of graphs that are not chains, e.g. LSTMs) --------

#: Ops the weights-only reader passes over: they move, reshape or select activations.
_SHAPE_OPS = {"Constant", "Identity", "Dropout", "Transpose", "Shape", "Gather", "Unsqueeze",
              "Squeeze", "Concat", "Expand", "Slice", "Reshape", "Flatten", "Relu", "MaxPool",
              "ConstantOfShape"}
#: ONNX stacks an LSTM's gates i, o, f, c; torch (and darbgen) i, f, g (= c), o.
_ONNX_TO_TORCH_GATES = (0, 2, 3, 1)


def load_onnx(path):
    """The ``onnx.ModelProto`` in the file at ``path``: a regular file of at most
    :data:`MAX_ONNX_BYTES` (:func:`darbgen.files.read_input`), parsed from its bytes, so
    no external data file is ever opened.

    Raises
    ------
    ValueError
        Not a regular file, too large, or not a readable ONNX model.
    """
    import onnx

    data = read_input(path, max_bytes=MAX_ONNX_BYTES, what="an ONNX file")
    try:
        return onnx.load_model_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ValueError(f"{path}: not a readable ONNX file ({e})") from None


def onnx_has_lstm(path) -> bool:
    """Whether the ONNX file at ``path`` has an LSTM node."""
    import onnx

    return any(n.op_type == "LSTM" for n in load_onnx(path).graph.node)


def read_onnx_weights(path) -> list:
    """The weight matrices of an ONNX graph in GEMM view, as :class:`SourceLayer` like a
    state dict's (:func:`darbgen.pruning.sources.load_source`): Gemm,
    MatMul (its Add as bias), Conv and LSTM (``[W | R]`` with the gates in torch's order,
    ``Wb + Rb``), for one-shot pruning of a graph that is no chain (an LSTM classifier).
    Ops that move or select activations are passed over; any other op is refused by name.

    Raises
    ------
    GraphError
        An op with weights or arithmetic darbgen would drop (BatchNormalization, Gelu,
        ...), or an LSTM with options the integer LSTM does not run.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    model = load_onnx(path)
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
              if t.data_location != onnx.TensorProto.EXTERNAL}
    layers, by_output = [], {}
    for i, node in enumerate(model.graph.node):
        op, a = node.op_type, _attrs(node)
        name = clean_name(node.name, f"{op.lower()}{i}")
        args = [consts.get(x) for x in node.input]
        if op in ("Gemm", "MatMul", "Conv") and len(args) > 1 and args[1] is not None:
            w = np.asarray(args[1], np.float64)
            if op == "Gemm":
                w = w if a.get("transB", 0) else w.T
            elif op == "MatMul":
                w = w.T
            bias = None if len(args) < 3 or args[2] is None else np.asarray(args[2], np.float64)
            layers.append([name, w.reshape(w.shape[0], -1), bias, tuple(w.shape)])
            by_output[node.output[0]] = len(layers) - 1
        elif op == "Add" and node.input[0] in by_output and args[1] is not None and \
                layers[by_output[node.input[0]]][2] is None:
            layers[by_output[node.input[0]]][2] = np.asarray(args[1], np.float64).reshape(-1)
        elif op == "LSTM":
            layers += _onnx_lstm(node, name, a, args)
        elif op not in _SHAPE_OPS:
            raise _refuse(node)
    return [SourceLayer(*layer) for layer in layers]


def _onnx_lstm(node, name, a, args) -> list:
    if a.get("direction", b"forward") not in (b"forward", "forward", b"bidirectional",
                                                "bidirectional") or a.get("clip") or \
            a.get("input_forget") or "activations" in a or len(node.input) > 7 and node.input[7]:
        raise _refuse(node, "has a direction, clip, coupled gates, peepholes or activations "
                            "the integer LSTM does not run")
    w, r = (np.asarray(x, np.float64) for x in args[1:3])
    b = args[3] if len(args) > 3 and args[3] is not None else np.zeros((w.shape[0], 2 * w.shape[1]))
    h = w.shape[1] // 4
    order = np.concatenate([np.arange(g * h, (g + 1) * h) for g in _ONNX_TO_TORCH_GATES])
    out = []
    for d in range(w.shape[0]):
        gemm = np.concatenate([w[d], r[d]], axis=1)[order]
        bias = (np.asarray(b[d][:4 * h], np.float64) + np.asarray(b[d][4 * h:], np.float64))[order]
        out.append([f"{name}.l0" + ("_reverse" if d else ""), gemm, bias, gemm.shape, True])
    return out
