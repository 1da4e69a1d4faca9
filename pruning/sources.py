"""Where weights come from for one-shot pruning: a ``.npy`` matrix or a ``torch.save``
state dict, read without executing anything from the file."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..files import read_input
from ..format import Artifact, read_npy
from ..graph import SourceLayer
from .methods import PruningMethod, encode_layer, prunable_layers
from .torchfile import load_weights

__all__ = ["SourceLayer", "load_source", "state_dict_layers", "prune_oneshot", "masked_artifact",
           "model_layers"]


def load_source(path) -> list[SourceLayer]:
    """The weight matrices of a ``.npy`` file (one layer, ``layer0``) or a ``torch.save``
    state dict, in GEMM view.

    A state dict may be wrapped in a checkpoint (``{'model_state_dict': sd, ...}`` or
    ``{'state_dict': sd, ...}``) and may hold ``torch.nn.utils.prune`` parameters
    (``weight_orig`` and ``weight_mask``, read as their product). Nothing in the file is
    executed (:func:`~darbgen.pruning.torchfile.load_weights`).

    Raises
    ------
    ValueError
        The file holds no usable weight matrix, pickled objects (a whole model), or
        weights darbgen would have to drop or misread (BatchNorm, GRU, Embedding, ...);
        the message names the key and says what to do.
    """
    path = Path(path)
    # Regular files of a bounded size only: a FIFO or /dev/zero must not hang or fill memory.
    data = read_input(path, what="a .npy file or a saved torch model")
    if path.suffix == ".npy":
        try:
            # read_npy checks the header before allocating (np.load trusts it).
            w = read_npy(data)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{path}: not a readable .npy file ({e})") from None
        if w.dtype.kind != "f" or w.ndim != 2:
            raise ValueError(f"{path}: must hold a 2-D float matrix, not {w.dtype} of "
                             f"shape {w.shape}")
        if w.size == 0:
            raise ValueError(f"{path}: holds an empty matrix of shape {w.shape}")
        if not np.isfinite(w).all():
            raise ValueError(f"{path}: holds non-finite weights (NaN or infinity)")
        return [SourceLayer("layer0", w.astype(np.float64), None, w.shape)]
    layers = state_dict_layers(_state_dict(load_weights(path, data), path), str(path))
    if not layers:
        raise ValueError(f"{path}: has no Linear, Conv2d or LSTM weights to prune")
    return layers


#: Checkpoint keys under which training scripts commonly keep the model's state dict.
CHECKPOINT_KEYS = ("model_state_dict", "state_dict")


def _state_dict(obj, path) -> dict:
    """The state dict in a loaded file: the object itself or a checkpoint's entry."""
    if isinstance(obj, dict):
        for key in CHECKPOINT_KEYS:
            if isinstance(obj.get(key), dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        keys = ", ".join(repr(k) for k in list(obj)[:5])
        raise ValueError(f"{path}: holds a dict ({keys}) that is neither a state dict nor "
                         f"a checkpoint with {' or '.join(map(repr, CHECKPOINT_KEYS))}")
    raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict")


_RECURRENT_KEY = re.compile(r"^(?P<mod>.*?)\.?weight_ih_(?P<layer>l\d+(_reverse)?)$")
_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")
#: The tail of every refusal of a state dict's content.
EXPORT_HINT = ("export the model to ONNX (torch.onnx.export) or with torch.export (.pt2), "
               "whose graph says what each weight does")


def _unprune(sd: dict, where: str) -> dict:
    """``torch.nn.utils.prune`` parameters (``X_orig``, ``X_mask``) as their product ``X``."""
    out = {}
    for key, t in sd.items():
        if key.endswith("_mask") and key[:-5] + "_orig" in sd:
            continue
        if key.endswith("_orig"):
            base = key[:-5]
            if base + "_mask" not in sd:
                raise ValueError(f"{where}: has {key!r} but not {base + '_mask'!r} (a "
                                 "torch.nn.utils.prune state dict keeps both)")
            mask = sd[base + "_mask"]
            if mask.shape != t.shape:
                raise ValueError(f"{where}: {base + '_mask'!r} has shape {tuple(mask.shape)}, "
                                 f"{key!r} {tuple(t.shape)}")
            out[base] = t * mask
        else:
            out[key] = t
    return out


def state_dict_layers(sd: dict, where: str = "state dict") -> list[SourceLayer]:
    """The Linear, Conv2d and LSTM weight matrices of a state dict, in GEMM view.

    A state dict names no module types, so each key is read by its name and shape:
    ``X.weight`` (2-D or more) with its ``X.bias`` is a Linear or Conv layer,
    ``X.weight_ih_lN`` with ``X.weight_hh_lN`` an LSTM when ``weight_hh`` has 4 gate
    rows per hidden unit. Every other key is refused, never dropped.

    Raises
    ------
    ValueError
        BatchNorm statistics (they fold into the layer before only when the graph is
        known), a GRU or plain RNN, an Embedding (by its name), or any key that belongs
        to no such layer; the message names the key.
    """
    for key, t in sd.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{where}: key {key!r} holds a {type(t).__name__}, not a tensor")
    sd = _unprune(sd, where)
    norm = next((k for k in sd if k.rsplit(".", 1)[-1] in _NORM_STATS), None)
    if norm is not None:
        module = norm.rsplit(".", 1)[0]
        raise ValueError(f"{where}: holds BatchNorm parameters ({norm!r}); a state dict has no "
                         f"graph to fold {module!r} into the layer before it, and dropping it "
                         f"would change the network: {EXPORT_HINT}")
    out, used = [], set()
    for key, t in sd.items():
        m = _RECURRENT_KEY.match(key)
        if m:
            out.append(_lstm_layer(sd, key, m, where))
            used.update(k for k in (key, key.replace("weight_ih_", "weight_hh_"),
                                    key.replace("weight_", "bias_"),
                                    key.replace("weight_ih_", "bias_hh_")) if k in sd)
        elif key.rsplit(".", 1)[-1] == "weight" and t.ndim >= 2 and t.dtype.is_floating_point:
            module = key[:-len("weight")].rstrip(".")
            if "emb" in module.lower():
                raise ValueError(f"{where}: key {key!r} looks like an Embedding (a table "
                                 "lookup, not a matrix product): it has no integer form "
                                 "on the engine")
            bias = sd.get(key[:-len("weight")] + "bias")
            out.append(SourceLayer(module or "layer0", t.reshape(t.shape[0], -1).double().numpy(),
                                   None if bias is None else bias.double().numpy(),
                                   tuple(t.shape)))
            used.update((key, key[:-len("weight")] + "bias"))
    rest = [k for k in sd if k not in used]
    if rest and out:
        shape = "×".join(map(str, sd[rest[0]].shape)) or "scalar"
        raise ValueError(f"{where}: key {rest[0]!r} ({shape}) belongs to no Linear, Conv2d "
                         f"or LSTM weight, and darbgen drops nothing: {EXPORT_HINT}")
    return out


def _lstm_layer(sd, key, m, where) -> SourceLayer:
    hh = key.replace("weight_ih_", "weight_hh_")
    if hh not in sd:
        raise ValueError(f"state dict has {key!r} but not {hh!r}")
    w_hh = sd[hh]
    if key.replace("weight_ih_", "weight_hr_") in sd:
        raise ValueError(f"{where}: {key!r} belongs to an LSTM with projections (proj_size), "
                         "which the integer LSTM does not run")
    rows, hidden = (w_hh.shape[0], w_hh.shape[1]) if w_hh.ndim == 2 else (0, 0)
    if rows != 4 * hidden:
        kind = {3 * hidden: "a GRU (3 gates)", hidden: "a plain RNN (1 gate)"}.get(
            rows, "no LSTM")
        raise ValueError(f"{where}: {hh!r} has {rows} gate rows for hidden size {hidden}, "
                         f"{kind}; darbgen runs LSTM layers (4 gates), not this one")
    w = torch.cat([sd[key], w_hh], dim=1)
    biases = [sd.get(key.replace("weight_", "bias_")), sd.get(hh.replace("weight_", "bias_"))]
    bias = sum(b for b in biases if b is not None) if any(
        b is not None for b in biases) else None
    name = f"{m['mod'] or 'layer0'}.{m['layer']}"
    return SourceLayer(name, w.double().numpy(), None if bias is None else bias.double().numpy(),
                       tuple(w.shape), recurrent=True)


def prune_oneshot(layers: list[SourceLayer], method: PruningMethod, *, weight_bits: int = 8,
                  source: str = "") -> Artifact:
    """Prune each matrix with ``method`` (no data, no fine-tuning) and quantize it."""
    sparse = [encode_layer(s.name, s.weight, method.mask_2d(s.weight), method,
                           weight_bits=weight_bits, bias=s.bias, shape=s.shape) for s in layers]
    return Artifact(sparse, {"source": source, "method": method.name,
                             "parameters": method.params(), "weight_bits": weight_bits,
                             "quantization": "symmetric, per-row scale", "fine_tuned": False})


def masked_artifact(source_layers: list[SourceLayer], masks, method: str, params: dict, *,
                    row_block_sizes=None, weight_bits: int = 8, compact: bool = False,
                    provenance: dict | None = None) -> Artifact:
    """Quantize masked matrices into an artifact.

    Without ``row_block_sizes`` each mask is stored in the CSR layout (one block per row),
    which fits any mask; with them (one array per layer), as regular blocks of one entry.
    A ``None`` or all-true mask keeps every weight, stored densely (block size 1).
    With ``compact``, columns empty in every row are dropped and recorded in the layer's
    ``input_columns`` (CSR layout only).
    """
    from ..format import SparseLayer, single_block_layout

    layers = []
    for i, (source, mask) in enumerate(zip(source_layers, masks)):
        name, w, bias, shape = source[:4]
        mask = np.ones(w.shape, dtype=bool) if mask is None else mask
        columns = None
        used = mask.any(axis=0)
        if compact and row_block_sizes is None and not used.all():
            columns = np.nonzero(used)[0]
            w, mask = w[:, used], mask[:, used]
        if mask.all():                       # unpruned: the dense layout needs no index
            sizes = keep = np.ones(mask.shape[0], dtype=np.int64)
        elif row_block_sizes is None:
            sizes, keep = single_block_layout(mask)
        else:
            sizes, keep = row_block_sizes[i], np.ones(mask.shape[0], dtype=np.int64)
        layers.append(SparseLayer.from_float(name, w, mask, sizes, keep, weight_bits=weight_bits,
                                             method=method, params=params, bias=bias,
                                             shape=shape, input_columns=columns))
    return Artifact(layers, {**(provenance or {}), "method": method, "parameters": params,
                             "weight_bits": weight_bits})


def model_layers(model: nn.Module) -> list[SourceLayer]:
    """A model's prunable matrices as source layers (effective, masked weights)."""
    return [SourceLayer(layer.name, layer.weight(), layer.bias(), layer.shape(),
                        recurrent=isinstance(layer.module, nn.LSTM))
            for layer in prunable_layers(model)]
