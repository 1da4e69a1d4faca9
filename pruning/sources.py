"""Where weights come from for one-shot pruning: a ``.npy`` matrix or a saved torch model."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..files import read_input
from ..format import Artifact, read_npy
from .methods import PruningMethod, encode_layer, prunable_layers

__all__ = ["SourceLayer", "load_source", "prune_oneshot", "masked_artifact", "model_layers"]

SourceLayer = tuple  # (name, weight rows × cols float64, bias or None, original shape)


def load_source(path) -> list[SourceLayer]:
    """The weight matrices of a ``.npy`` file (one layer, ``layer0``) or a saved torch
    model (a whole ``nn.Module`` or a state dict), in GEMM view.

    Raises
    ------
    ValueError
        The file holds no usable weight matrix; the message says what it holds.
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
        return [("layer0", w.astype(np.float64), None, w.shape)]
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a pickled Module needs the full unpickler
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a model"
            raise ValueError(f"{path}: not a .npy file or a saved torch model ({e})") from None
    if isinstance(obj, nn.Module):
        layers = [(layer.name, layer.weight(), layer.bias(), layer.shape())
                  for layer in prunable_layers(obj)]
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        layers = _state_dict_layers(obj)
    else:
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a model or a state dict")
    if not layers:
        raise ValueError(f"{path}: has no Linear, Conv2d or LSTM weights to prune")
    return layers


_LSTM_KEY = re.compile(r"^(?P<mod>.*?)\.?weight_ih_(?P<layer>l\d+(_reverse)?)$")


def _state_dict_layers(sd: dict) -> list[SourceLayer]:
    out = []
    for key, t in sd.items():
        m = _LSTM_KEY.match(key)
        if m:
            hh = key.replace("weight_ih_", "weight_hh_")
            if hh not in sd:
                raise ValueError(f"state dict has {key!r} but not {hh!r}")
            w = torch.cat([t, sd[hh]], dim=1)
            biases = [sd.get(key.replace("weight_", "bias_")), sd.get(hh.replace("weight_", "bias_"))]
            bias = sum(b for b in biases if b is not None) if any(
                b is not None for b in biases) else None
            name = f"{m['mod'] or 'layer0'}.{m['layer']}"
            out.append((name, w.double().numpy(), None if bias is None else bias.double().numpy(),
                        tuple(w.shape)))
        elif (key.endswith("weight") and t.ndim >= 2 and t.dtype.is_floating_point):
            name = key[:-len("weight")].rstrip(".") or "layer0"
            bias = sd.get(key[:-len("weight")] + "bias")
            out.append((name, t.reshape(t.shape[0], -1).double().numpy(),
                        None if bias is None else bias.double().numpy(), tuple(t.shape)))
    return out


def prune_oneshot(layers: list[SourceLayer], method: PruningMethod, *, weight_bits: int = 8,
                  source: str = "") -> Artifact:
    """Prune each matrix with ``method`` (no data, no fine-tuning) and quantize it."""
    sparse = [encode_layer(name, w, method.mask_2d(w), method, weight_bits=weight_bits,
                           bias=bias, shape=shape) for name, w, bias, shape in layers]
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
    for i, ((name, w, bias, shape), mask) in enumerate(zip(source_layers, masks)):
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
    return [(layer.name, layer.weight(), layer.bias(), layer.shape())
            for layer in prunable_layers(model)]
