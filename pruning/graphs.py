"""A user's network as a torch model darbgen can prune, fine-tune and calibrate.

Every graph source becomes a :class:`darbgen.graph.Chain` (BatchNorm folded, refused
ops named), then :func:`chain_module` turns the chain into an ``nn.Sequential`` of
Linear, Conv2d, ReLU, MaxPool2d, Flatten and Unflatten modules, the shape the
built-in examples have, so the same progressive pruning, fine-tuning and calibration
(:func:`darbgen.pruning.examples.prune_trained`) run on it.

Sources: an ONNX file (:func:`darbgen.graph.read_onnx`), or a torch module given in
Python, captured with ``torch.export`` (:func:`trace_module`), so functional ops such
as ``F.relu`` are in the graph; or a ``torch.export.save`` file (``.pt2``), read by
:func:`darbgen.graph.read_pt2` from its JSON and raw weights, never through
``torch.export.load``, which unpickles with ``torch.load(weights_only=False)``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..graph import (ACTIVATIONS, Chain, GraphError, Step, clean_name, aten_constant, aten_step,
                     fold_batchnorm, integer_chain, read_onnx, read_pt2)

__all__ = ["chain_module", "trace_module", "from_module", "load_graph", "state_dict_chain",
           "GRAPH_SUFFIXES"]

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
        What :func:`~darbgen.graph.read_onnx` or :func:`~darbgen.graph.read_pt2` refuses.
    """
    path = Path(path)
    if path.suffix == ".pt2":
        chain = read_pt2(path)
        return chain_module(chain), chain
    chain = read_onnx(path)
    return chain_module(chain), chain


def from_module(module: nn.Module, example: torch.Tensor) -> nn.Sequential:
    """A torch module as the ``nn.Sequential`` darbgen prunes: :func:`trace_module`, then
    :func:`chain_module` (BatchNorm folded, every op checked)."""
    return chain_module(trace_module(module, example))


def _name(node) -> str:
    return str(node.target)


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
    computed = {}                   # node name -> array: ops on parameters only

    def const(arg):
        if arg is None:
            return None
        if isinstance(arg, torch.fx.Node) and arg.name in fqn:
            return values[fqn[arg.name]].detach().double().numpy()
        if isinstance(arg, torch.fx.Node) and arg.name in computed:
            return computed[arg.name]
        raise GraphError(f"tensor {str(arg)!r} is no parameter of the module")

    current = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name in
                   sig.user_inputs)
    steps = []
    for n in ep.graph.nodes:
        if n.op != "call_function":
            if n.op == "output" and n.args[0][0] is not current:
                raise GraphError(f"the module's output is not the end of its chain (node "
                                 f"{n.args[0][0]})")
            continue
        if current not in n.args:
            # An op on parameters alone, e.g. torch.nn.utils.prune's weight_orig * mask.
            value = aten_constant(n.name, _name(n), list(n.args), const)
            if value is not None:
                computed[n.name] = value
            continue
        if n.args[0] is not current:
            raise GraphError(f"node {n.name!r} ({_name(n)}) does not take the chain's "
                             "activation first")
        step = aten_step(n.name, _name(n), list(n.args), const, _module_path(n))
        if step is not None:
            steps.append(step)
        current = n
    shape = tuple(example.shape[1:])
    return integer_chain(fold_batchnorm(Chain(tuple(steps), shape)))



def state_dict_chain(layers, activation: str, where: str = "state dict") -> Chain:
    """The chain of a state dict's layers (:func:`~darbgen.pruning.sources.load_source`)
    read as Linear layers in the dict's order with ``activation`` between them and none
    after the last, the shape ``nn.Sequential(Linear, ReLU, ..., Linear)`` saves.

    Raises
    ------
    ValueError
        An unknown ``activation``; a convolution or LSTM (their padding, stride, pooling
        or time steps are not in a state dict); layers whose sizes do not chain. The
        message names the layer.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not "
                         f"{activation!r}")
    steps = []
    for i, layer in enumerate(layers):
        if len(layer.shape) != 2 or layer.recurrent:
            kind = ("an LSTM" if layer.recurrent
                    else f"a convolution ({'×'.join(map(str, layer.shape))})")
            raise ValueError(f"{where}: layer {layer.name!r} is {kind}, which a state dict "
                             "cannot chain (its padding, pooling or time steps are not in it): "
                             "export the model to ONNX or with torch.export")
        before = layers[i - 1] if steps else None
        if before is not None and layer.weight.shape[1] != before.weight.shape[0]:
            raise ValueError(f"{where}: layer {layer.name!r} takes {layer.weight.shape[1]} "
                             f"inputs, but {before.name!r} before it gives "
                             f"{before.weight.shape[0]}")
        if steps and activation == "relu":
            steps.append(Step("relu", f"relu{i}"))
        steps.append(Step("linear", clean_name(layer.name, f"fc{i}"), layer.weight, layer.bias))
    return Chain(tuple(steps), (layers[0].weight.shape[1],))


def _module_path(node) -> str:
    """The module path of the module that ran ``node`` (``'fc1'``), from the export's
    metadata; ``''`` for the top module."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""
