"""A user's network as a torch model darbgen can prune, fine-tune and calibrate.

Every graph source becomes a :class:`darbgen.graph.Chain` (BatchNorm folded, refused
ops named), then :func:`chain_module` turns the chain into an ``nn.Sequential`` of
Linear, Conv2d, ReLU, MaxPool2d, Flatten and Unflatten modules, the shape the
built-in examples have, so the same progressive pruning, fine-tuning and calibration
(:func:`darbgen.pruning.examples.prune_trained`) run on it.

Sources: an ONNX file (:func:`darbgen.graph.read_onnx`), or a torch module given in
Python, captured with ``torch.export`` (:func:`trace_module`), so functional ops such
as ``F.relu`` are in the graph. A ``.pt2`` file is refused: ``torch.export.load``
unpickles its weights with ``torch.load(weights_only=False)``, which runs code from
the file.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..graph import Chain, GraphError, Step, fold_batchnorm, integer_chain, read_onnx

__all__ = ["chain_module", "trace_module", "from_module", "load_graph", "GRAPH_SUFFIXES"]

#: File suffixes read as graphs (the rest are weights: .npy, torch.save state dicts).
GRAPH_SUFFIXES = (".onnx", ".pt2")


def chain_module(chain: Chain) -> nn.Sequential:
    """``chain`` as an ``nn.Sequential`` whose children are named after its steps."""
    mods = OrderedDict()
    for s in chain.steps:
        name = s.name.replace(".", "_")
        while name in mods:
            name += "_"
        if s.kind == "linear":
            m = nn.Linear(s.weight.shape[1], s.weight.shape[0], bias=s.bias is not None)
        elif s.kind == "conv":
            f, c, kh, kw = s.weight.shape
            m = nn.Conv2d(c, f, (kh, kw), stride=s.stride, padding=s.padding,
                          bias=s.bias is not None)
        elif s.kind == "relu":
            m = nn.ReLU()
        elif s.kind == "maxpool":
            m = nn.MaxPool2d(s.window)
        elif s.kind == "flatten":
            m = nn.Flatten()
        elif s.kind == "unflatten":
            m = nn.Unflatten(1, s.shape)
        else:
            raise GraphError(f"step {s.name!r} ({s.kind}) has no module; fold it first")
        if s.weight is not None:
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(np.ascontiguousarray(s.weight)))
                if s.bias is not None:
                    m.bias.copy_(torch.from_numpy(np.ascontiguousarray(s.bias)))
        mods[name] = m
    return nn.Sequential(mods).float()


def load_graph(path) -> tuple[nn.Sequential, Chain]:
    """The model and chain of a graph file (see :data:`GRAPH_SUFFIXES`).

    Raises
    ------
    ValueError
        A ``.pt2`` file (its loader runs code), or what :func:`~darbgen.graph.read_onnx`
        refuses.
    """
    path = Path(path)
    if path.suffix == ".pt2":
        raise ValueError(f"{path}: torch.export.load unpickles a .pt2 file's weights with "
                         "torch.load(weights_only=False), which can run code from the file, "
                         "so darbgen does not open .pt2 files: export the model to ONNX "
                         "(torch.onnx.export), or pass the module itself to "
                         "darbgen.pruning.graphs.trace_module in Python")
    chain = read_onnx(path)
    return chain_module(chain), chain


def from_module(module: nn.Module, example: torch.Tensor) -> nn.Sequential:
    """A torch module as the ``nn.Sequential`` darbgen prunes: :func:`trace_module`, then
    :func:`chain_module` (BatchNorm folded, every op checked)."""
    return chain_module(trace_module(module, example))


def _name(node) -> str:
    return str(node.target).removesuffix(".default")


def trace_module(module: nn.Module, example: torch.Tensor) -> Chain:
    """The chain of a torch module, captured with ``torch.export`` on ``example`` (a
    batch of inputs): every op the forward pass runs, functional ones (``F.relu``,
    ``torch.flatten``) included.

    Raises
    ------
    GraphError
        An op the integer network cannot run, named by its node
        (``node 'gelu' (aten.gelu) has no integer form``).
    """
    module = module.eval()
    ep = torch.export.export(module, (example,))
    sig = ep.graph_signature
    fqn = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    values = {**ep.state_dict, **ep.constants}

    def const(arg):
        if arg is None:
            return None
        if isinstance(arg, torch.fx.Node) and arg.name in fqn:
            return values[fqn[arg.name]].detach().double().numpy()
        raise GraphError(f"node {arg} is not a parameter")

    current = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name in
                   sig.user_inputs)
    steps = []
    for n in ep.graph.nodes:
        if n.op != "call_function":
            if n.op == "output" and n.args[0][0] is not current:
                raise GraphError(f"the module's output is not the end of its chain (node "
                                 f"{n.args[0][0]})")
            continue
        if not n.args or n.args[0] is not current:
            raise GraphError(f"node {n.name!r} ({_name(n)}) does not take the chain's "
                             "activation (the graph branches)")
        step = _torch_step(n, const)
        if step is not None:
            steps.append(step)
        current = n
    shape = tuple(example.shape[1:])
    return integer_chain(fold_batchnorm(Chain(tuple(steps), shape)))




def _torch_step(n, const) -> Step | None:
    t = _name(n)
    args = list(n.args) + [None] * 8
    name = n.name
    if t in ("aten.relu", "aten.relu_"):
        return Step("relu", name)
    if t in ("aten.dropout", "aten.clone", "aten.contiguous", "aten.detach",
             "aten.alias"):
        return None
    if t == "aten.linear":
        return Step("linear", _param_name(n, name), const(args[1]), const(args[2]))
    if t == "aten.conv2d":
        stride, padding, dilation, groups = (args[3] or [1, 1], args[4] or [0, 0],
                                             args[5] or [1, 1], args[6] or 1)
        if isinstance(padding, str) or list(dilation) not in ([1, 1], [1]) or groups != 1:
            raise GraphError(f"node {name!r} ({t}) has padding {padding!r}, dilation "
                             f"{dilation}, groups {groups}: darbgen runs numeric padding, "
                             "dilation 1, groups 1")
        pair = (lambda v: tuple(v) * (2 // len(v)) if isinstance(v, (list, tuple)) else (v, v))
        return Step("conv", _param_name(n, name), const(args[1]), const(args[2]),
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
        if args[1] != 1 or args[2] not in (None, -1):
            raise GraphError(f"node {name!r} ({t}) flattens dims {args[1]}..{args[2]}; "
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


def _param_name(node, fallback: str) -> str:
    """The module path of a layer's weight (``'fc1'``), from the export's metadata."""
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1][0]
        if path:
            return path.replace(".", "_")
    return fallback
