"""``torch.nn.utils.prune``-compatible pruning methods and the layers they act on.

Each method is a :class:`torch.nn.utils.prune.BasePruningMethod`, so the usual
machinery works: ``DARB.apply(module, "weight", ratio=16)`` adds a ``weight_orig``
parameter and a ``weight_mask`` buffer, ``prune.remove`` makes it permanent and
``prune.custom_from_mask`` takes a mask from elsewhere. The masks come from the
pure functions of :mod:`darbgen.pruning.masks`, applied to the GEMM view of the
weight (dimension 0 = rows, the rest flattened to columns).

An LSTM's gate matrices are pruned jointly: rows of the stacked ``[W_ih | W_hh]``
(one row per gate unit), see :class:`PrunableLayer`.

>>> import torch
>>> fc = torch.nn.Linear(64, 32)
>>> _ = DARB.apply(fc, "weight", ratio=8)
>>> round(fc.weight.numel() / int(fc.weight_mask.sum()))
8
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from ..format import SparseLayer, infer_layout, single_block_layout
from . import masks

__all__ = [
    "PruningMethod", "Irregular", "Block", "NM", "BMWM", "DARB", "METHODS", "make_method",
    "PrunableLayer", "prunable_layers", "encode_layer", "export_layer",
]


class PruningMethod(prune.BasePruningMethod):
    """Base of darbgen's methods: a mask over the GEMM view of a weight tensor.

    ``PRUNING_TYPE = "global"``: when methods are stacked, the new mask sees the
    whole tensor (with earlier pruning applied) and replaces the old mask, because
    regular blocks cannot be intersected with an earlier mask and stay regular.
    """

    PRUNING_TYPE = "global"
    #: Name used in the CLI and in the artifact.
    name = ""
    #: The method's options in ``darbgen prune --method NAME`` (argument names without
    #: dashes) and their defaults; :meth:`from_options` turns them into the method.
    OPTIONS: dict = {}

    @classmethod
    def from_options(cls, **options) -> "PruningMethod":
        """The method for the :data:`OPTIONS` values ``options``."""
        return cls(**options)

    def compute_mask(self, t, default_mask):
        w = (t.detach() * default_mask).reshape(t.shape[0], -1).cpu().numpy()
        mask = self.mask_2d(w)
        return torch.from_numpy(mask).reshape(t.shape).to(dtype=default_mask.dtype,
                                                          device=default_mask.device)

    def mask_2d(self, weight: np.ndarray) -> np.ndarray:
        """The keep-mask of a ``rows × cols`` float matrix."""
        raise NotImplementedError

    def layout(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row block sizes and keep counts that store ``mask`` exactly."""
        return single_block_layout(mask)

    def params(self) -> dict:
        """The method's parameters, for provenance."""
        raise NotImplementedError

    def schedule(self, steps: int) -> list["PruningMethod"]:
        """Progressively harder versions of this method, ending with itself."""
        return [self]

    def _ratio_schedule(self, steps, **fixed):
        ratios = np.geomspace(self.ratio ** (1 / max(steps, 1)), self.ratio, max(steps, 1))
        return [type(self)(ratio=round(float(r), 6), **fixed) for r in ratios[:-1]] + [self]

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class Irregular(PruningMethod):
    """Magnitude pruning of single weights to ``ratio`` (the baseline; CSR index cost)."""

    name = "irregular"
    OPTIONS = {"ratio": 16.0}

    def __init__(self, ratio: float = 16.0):
        self.ratio = masks._check_ratio(ratio)

    def mask_2d(self, weight):
        return masks.irregular_mask(weight, self.ratio)

    def params(self):
        return {"ratio": self.ratio}

    def schedule(self, steps):
        return self._ratio_schedule(steps)


class Block(PruningMethod):
    """Uniform ``bh × bw`` block-magnitude pruning to ``ratio`` (the structured baseline)."""

    name = "block"
    OPTIONS = {"ratio": 16.0, "block_size": (4, 4)}

    @classmethod
    def from_options(cls, ratio, block_size):
        """``block_size`` is ``(B,)`` (square) or ``(BH, BW)``."""
        return cls(ratio=ratio, block_shape=tuple(block_size) * (2 // len(block_size)))

    def __init__(self, ratio: float = 16.0, block_shape=(4, 4)):
        self.ratio = masks._check_ratio(ratio)
        self.block_shape = masks._check_block_shape(block_shape)

    def mask_2d(self, weight):
        return masks.block_mask(weight, self.ratio, self.block_shape)

    def params(self):
        return {"ratio": self.ratio, "block_shape": list(self.block_shape)}

    def schedule(self, steps):
        return self._ratio_schedule(steps, block_shape=self.block_shape)


class NM(PruningMethod):
    """N:M sparsity: ``n`` of every aligned ``m`` weights in a row."""

    name = "nm"
    OPTIONS = {"block_size": (4,), "keep": 2}

    @classmethod
    def from_options(cls, block_size, keep):
        """``block_size`` is ``(M,)``, ``keep`` is N."""
        return cls(n=keep, m=_single_size(block_size, cls.name))

    def __init__(self, n: int = 2, m: int = 4):
        masks.nm_mask(np.zeros((1, 1)), n, m)     # validates n and m
        self.n, self.m = int(n), int(m)

    def mask_2d(self, weight):
        return masks.nm_mask(weight, self.n, self.m)

    def layout(self, mask):
        rows = mask.shape[0]
        return np.full(rows, self.m, dtype=np.int64), np.full(rows, self.n, dtype=np.int64)

    def params(self):
        return {"n": self.n, "m": self.m}


class BMWM(PruningMethod):
    """Block-max weight masking: ``keep`` largest of each aligned ``block_size`` block."""

    name = "bmwm"
    OPTIONS = {"block_size": (16,), "keep": 1}

    @classmethod
    def from_options(cls, block_size, keep):
        return cls(_single_size(block_size, cls.name), keep)

    def __init__(self, block_size: int = 16, keep: int = 1):
        self.block_size = masks._check_power_of_two("block size", block_size)
        self.keep = masks._check_keep(keep, self.block_size)

    def mask_2d(self, weight):
        return masks.bmwm_mask(weight, self.block_size, self.keep)

    def layout(self, mask):
        rows = mask.shape[0]
        return (np.full(rows, self.block_size, dtype=np.int64),
                np.full(rows, self.keep, dtype=np.int64))

    def params(self):
        return {"block_size": self.block_size, "keep": self.keep}

    def schedule(self, steps):
        sizes = [self.block_size >> s for s in range(steps - 1, 0, -1)]
        return [BMWM(b, self.keep) for b in sizes if b >= max(2, self.keep)] + [self]


class DARB(PruningMethod):
    """Density-adaptive regular-block pruning (see :func:`masks.darb_block_sizes`)."""

    name = "darb"
    OPTIONS = {"ratio": 16.0, "block_sizes": None, "keep": 1}

    @classmethod
    def from_options(cls, ratio, block_sizes, keep):
        """``block_sizes`` ``None`` means the default set."""
        sizes = masks.DEFAULT_BLOCK_SIZES if block_sizes is None else block_sizes
        return cls(ratio=ratio, block_sizes=sizes, keep=keep)

    def __init__(self, ratio: float = 16.0, block_sizes=masks.DEFAULT_BLOCK_SIZES,
                 keep: int = 1, rule=masks.nearest_density_rule):
        self.ratio = masks._check_ratio(ratio)
        self.block_sizes = masks.check_block_sizes(block_sizes)
        self.keep = masks._check_keep(keep, self.block_sizes[0])
        if not callable(rule):
            raise TypeError(f"block-size rule must be callable, not {rule!r}")
        self.rule = rule

    def mask_2d(self, weight):
        mask, _ = masks.darb_mask(weight, self.ratio, self.block_sizes, self.keep, self.rule)
        return mask

    def layout(self, mask):
        return infer_layout(mask, self.keep, sizes=self.block_sizes)

    def params(self):
        return {"ratio": self.ratio, "block_sizes": list(self.block_sizes), "keep": self.keep}

    def schedule(self, steps):
        return self._ratio_schedule(steps, block_sizes=self.block_sizes, keep=self.keep,
                                    rule=self.rule)


METHODS = {cls.name: cls for cls in (DARB, BMWM, Block, NM, Irregular)}


def _single_size(block_size, name: str) -> int:
    if len(block_size) != 1:
        raise ValueError(f"block size must be a single integer for {name}, not "
                         f"{'x'.join(map(str, block_size))}")
    return block_size[0]


def make_method(name: str, **params) -> PruningMethod:
    """The method called ``name`` with ``params``.

    Raises
    ------
    ValueError
        Unknown method; the message lists the known ones.
    """
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown pruning method {name!r}; choose one of "
                         f"{', '.join(METHODS)}") from None
    return cls(**params)


# -- the layers a model offers for pruning ------------------------------------------

@dataclass(frozen=True)
class PrunableLayer:
    """One weight matrix of a model in its GEMM view.

    Parameters
    ----------
    name : str
        Layer name in the artifact: the module path (``"fc1"``); an LSTM layer adds
        ``.l{n}`` (``"lstm.l0"``).
    module : torch.nn.Module
    params : tuple of str
        The weight parameters, concatenated along columns: ``("weight",)``, or
        ``("weight_ih_l0", "weight_hh_l0")`` for an LSTM layer.
    biases : tuple of str
        The bias parameters, summed (an LSTM has two).
    """

    name: str
    module: nn.Module
    params: tuple
    biases: tuple

    def _tensor(self, p: str) -> torch.Tensor:
        if hasattr(self.module, p + "_orig"):      # pruned: weight = weight_orig * weight_mask
            return getattr(self.module, p + "_orig") * getattr(self.module, p + "_mask")
        return getattr(self.module, p)

    def _widths(self) -> list[int]:
        return [self._tensor(p)[0].numel() for p in self.params]

    def weight(self) -> np.ndarray:
        """The effective (masked) weight, ``rows × cols`` float64."""
        with torch.no_grad():
            parts = [self._tensor(p).reshape(self._tensor(p).shape[0], -1) for p in self.params]
            return torch.cat(parts, dim=1).double().cpu().numpy()

    def mask(self) -> np.ndarray | None:
        """The current mask (``rows × cols`` bool), or None when not pruned."""
        if not hasattr(self.module, self.params[0] + "_mask"):
            return None
        parts = [getattr(self.module, p + "_mask").reshape(self._tensor(p).shape[0], -1)
                 for p in self.params]
        return torch.cat(parts, dim=1).bool().cpu().numpy()

    def set_mask(self, mask: np.ndarray) -> None:
        """Install ``mask`` (replacing any earlier one) through ``prune.custom_from_mask``."""
        start = 0
        for p, width in zip(self.params, self._widths()):
            t = self._tensor(p)
            part = torch.from_numpy(np.ascontiguousarray(mask[:, start:start + width]))
            start += width
            if hasattr(self.module, p + "_orig"):
                prune.remove(self.module, p)       # weights stay masked; the new mask replaces
            prune.custom_from_mask(self.module, p, part.reshape(t.shape).to(t.device))

    def update_mask(self, mask: np.ndarray) -> None:
        """Overwrite the installed mask buffers in place.

        Unlike :meth:`set_mask` this never calls ``prune.remove``, so the weights behind
        the mask (``weight_orig``) are kept: use it to try candidate masks.

        Raises
        ------
        ValueError
            The layer is not pruned yet (install a mask with :meth:`set_mask` first).
        """
        if self.mask() is None:
            raise ValueError(f"layer {self.name!r} has no mask to update")
        start = 0
        with torch.no_grad():
            for p, width in zip(self.params, self._widths()):
                buf = getattr(self.module, p + "_mask")
                part = torch.from_numpy(np.ascontiguousarray(mask[:, start:start + width]))
                buf.copy_(part.reshape(buf.shape).to(buf.dtype))
                start += width

    def prune(self, method: PruningMethod) -> np.ndarray:
        """Compute ``method``'s mask on the effective weight and install it."""
        mask = method.mask_2d(self.weight())
        self.set_mask(mask)
        return mask

    def bias(self) -> np.ndarray | None:
        """The summed float bias, or None."""
        with torch.no_grad():
            parts = [getattr(self.module, b) for b in self.biases
                     if getattr(self.module, b, None) is not None]
            return sum(parts).double().cpu().numpy() if parts else None

    def shape(self) -> tuple:
        """Original tensor shape for a single weight (a Conv2d's 4-D shape), else the
        GEMM shape."""
        if len(self.params) == 1:
            return tuple(self._tensor(self.params[0]).shape)
        w = self.weight()
        return w.shape


def prunable_layers(model: nn.Module) -> Iterator[PrunableLayer]:
    """Every Linear, Conv2d and LSTM weight matrix of ``model``, in module order."""
    for path, module in model.named_modules():
        name = path or "layer0"
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            yield PrunableLayer(name, module, ("weight",), ("bias",))
        elif isinstance(module, nn.LSTM):
            if module.proj_size:
                raise ValueError(f"layer {name!r}: LSTM projections are not supported")
            for n in range(module.num_layers):
                for sfx in ("", "_reverse") if module.bidirectional else ("",):
                    yield PrunableLayer(f"{name}.l{n}{sfx}", module,
                                        (f"weight_ih_l{n}{sfx}", f"weight_hh_l{n}{sfx}"),
                                        (f"bias_ih_l{n}{sfx}", f"bias_hh_l{n}{sfx}"))


def encode_layer(name: str, weight: np.ndarray, mask: np.ndarray, method: PruningMethod, *,
                 weight_bits: int = 8, per_row_scale: bool = True, bias=None,
                 shape=None) -> SparseLayer:
    """Quantize a masked float matrix into the artifact's form, in ``method``'s layout."""
    block_sizes, keep = method.layout(mask)
    return SparseLayer.from_float(name, weight, mask, block_sizes, keep,
                                  weight_bits=weight_bits, per_row_scale=per_row_scale,
                                  method=method.name, params=method.params(),
                                  bias=bias, shape=shape)


def export_layer(layer: PrunableLayer, method: PruningMethod, **kwargs) -> SparseLayer:
    """Quantize a pruned model layer (see :func:`encode_layer` for ``kwargs``)."""
    mask = layer.mask()
    if mask is None:
        raise ValueError(f"layer {layer.name!r} is not pruned")
    return encode_layer(layer.name, layer.weight(), mask, method, bias=layer.bias(),
                        shape=layer.shape(), **kwargs)
