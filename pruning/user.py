"""A user's model and data through darbgen: ``darbgen prune SOURCE [--data DATA.npz]``.

A graph source (ONNX, ``torch.export.save``) becomes an ``nn.Sequential``
(:mod:`darbgen.pruning.graphs`); with data it goes through the built-in examples' path (progressive masked fine-tuning,
calibration, :func:`~darbgen.pruning.examples.prune_model`), without data it is pruned
one-shot like a state dict. A state dict names no ops, so with data the user says what
runs between its Linear layers (``--activation relu``) and it is read as that chain
(:func:`~darbgen.pruning.graphs.state_dict_chain`); a single layer (a ``.npy`` matrix)
needs no activation.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from ..format import Artifact
from ..graph import ACTIVATIONS, onnx_has_lstm, read_onnx_weights
from .graphs import GRAPH_SUFFIXES, chain_module, load_graph, state_dict_chain
from .methods import PruningMethod
from .sources import load_source, model_layers, prune_oneshot
from .train import Dataset

__all__ = ["prune_source", "user_dataset"]

log = logging.getLogger(__name__)


def user_dataset(path, input_shape=()) -> Dataset:
    """A ``DATA.npz`` (:func:`darbgen.datasets.load_data`) as torch tensors."""
    from ..datasets import load_data

    a = load_data(path, input_shape)
    return Dataset(*(torch.from_numpy(a[k]) for k in ("x_train", "y_train", "x_test",
                                                       "y_test")))


def prune_source(source, method: PruningMethod, *, data=None, epochs: int = 5,
                 weight_bits: int = 8, seed: int = 0, activation: str | None = None
                 ) -> Artifact:
    """Prune the model in the file ``source`` with ``method``: with ``data`` (a
    ``DATA.npz`` path) progressively, fine-tuned and calibrated; without, one-shot.

    ``activation`` (one of :data:`~darbgen.graph.ACTIVATIONS`) is what runs
    between the Linear layers of a state dict pruned with ``data``; a graph says it
    itself, and a single layer (a ``.npy`` matrix) needs none.

    Raises
    ------
    ValueError
        ``data`` for a state dict of several layers without ``activation``,
        ``activation`` without ``data`` or for a graph, data that does not fit the model
        (the labels exceed its outputs, the inputs its input shape), or what loading
        refuses.
    """
    source = Path(source)
    weights = source.suffix not in GRAPH_SUFFIXES
    if activation is not None and (data is None or not weights):
        raise ValueError(f"{source}: --activation is for weights (a state dict) pruned with "
                         "--data; a graph says its own activations")
    if weights:
        layers = load_source(source)
        if data is None:
            return prune_oneshot(layers, method, weight_bits=weight_bits, source=str(source))
        if len(layers) > 1 and activation is None:
            raise ValueError(f"{source}: --data needs the model's graph, and a state dict "
                             "names no ops: for Linear layers in a chain say what runs between "
                             f"them (--activation {' or '.join(ACTIVATIONS)}), else export the "
                             "model with torch.onnx.export or torch.export.save")
        chain = state_dict_chain(layers, activation or "none", str(source))
        model = chain_module(chain)
    elif source.suffix == ".onnx" and onnx_has_lstm(source):
        if data is not None:
            raise ValueError(f"{source}: has an LSTM, which darbgen prunes one-shot (its "
                             "integer LSTM runs apart from the chain of layers): drop --data")
        return prune_oneshot(read_onnx_weights(source), method, weight_bits=weight_bits,
                             source=str(source))
    else:
        model, chain = load_graph(source)
    if data is None:
        return prune_oneshot(model_layers(model), method, weight_bits=weight_bits,
                             source=str(source))
    from .examples import USER_STEPS, prune_model

    dataset = user_dataset(data, chain.input_shape if all(chain.input_shape) else ())
    classes = chain.layers[-1].weight.shape[0]
    for split, y in (("y_train", dataset.y_train), ("y_test", dataset.y_test)):
        if int(y.max()) >= classes:
            raise ValueError(f"{data}: {split!r} has label {int(y.max())}, the model has "
                             f"{classes} outputs")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    log.info("%s: %d layers (%s); pruning in %d steps of %d fine-tuning epochs on %d "
             "samples", source, len(chain.layers), ", ".join(s.name for s in chain.layers),
             USER_STEPS, epochs, len(dataset.x_train))
    result = prune_model(model, dataset, method, epochs=epochs, weight_bits=weight_bits,
                         seed=seed, progress=sys.stderr.isatty(),
                         source=str(source))
    return result.artifact
