"""Training, masked fine-tuning and the progressive pruning schedule (PyTorch, CPU).

Masks stay fixed during fine-tuning: the pruning reparametrization computes
``weight = weight_orig * weight_mask`` in every forward pass, so the gradient
reaching a pruned ``weight_orig`` entry is exactly zero and a pruned weight
never comes back. ``tests/test_train.py`` checks this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .methods import PrunableLayer, PruningMethod

__all__ = ["Dataset", "OPTIMIZERS", "train", "accuracy", "progressive_prune", "per_layer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """A classification split held in memory: float inputs, integer labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


#: The optimizers :func:`train` offers: name → ``(parameters, lr) -> optimizer``.
OPTIMIZERS = {"adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
              "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9)}


def train(model: nn.Module, data: Dataset, *, epochs: int, lr: float = 1e-3,
          batch_size: int = 32, seed: int = 0, desc: str = "train",
          progress: bool = True, penalty: Callable[[], torch.Tensor] | None = None,
          epoch_hook: Callable[[int], None] | None = None, optimizer: str = "adam") -> float:
    """Train ``model`` with cross-entropy; return the final test accuracy.

    ``optimizer`` is ``"adam"`` or ``"sgd"`` (momentum 0.9: plain gradient steps, without
    Adam's per-parameter scaling, which evens out a regularizer's per-group weights).
    Pruned layers keep their masks (see the module docstring). Batches are
    shuffled by a generator seeded with ``seed``. ``penalty()``, when given, is added
    to every batch's loss (a regularizer); ``epoch_hook(epoch)`` runs before each epoch.

    Raises
    ------
    ValueError
        Unknown ``optimizer``.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of "
                         f"{', '.join(OPTIMIZERS)}")
    gen = torch.Generator().manual_seed(seed)
    opt = OPTIMIZERS[optimizer](model.parameters(), lr)
    loss_fn = nn.CrossEntropyLoss()
    n = data.x_train.shape[0]
    bar = tqdm(range(epochs), desc=desc, leave=False, disable=not progress)
    for epoch in bar:
        if epoch_hook is not None:
            epoch_hook(epoch)
        model.train()
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            opt.zero_grad()
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            if penalty is not None:
                loss = loss + penalty()
            loss.backward()
            opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return accuracy(model, data.x_test, data.y_test)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` classified as ``y``."""
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def per_layer(method, layers: Sequence[PrunableLayer]) -> list[PruningMethod]:
    """``method`` as one method per layer: a single :class:`PruningMethod` repeated, or a
    sequence with one method per layer (checked).

    Raises
    ------
    ValueError
        The sequence's length differs from the number of layers.
    """
    if isinstance(method, PruningMethod):
        return [method] * len(layers)
    methods = list(method)
    if len(methods) != len(layers):
        raise ValueError(f"per-layer pruning needs one method per prunable layer "
                         f"({len(layers)}: {', '.join(l.name for l in layers)}), not "
                         f"{len(methods)}")
    return methods


def progressive_prune(layers: Sequence[PrunableLayer], method, steps: int,
                      finetune: Callable[[int], float]) -> list[dict]:
    """Prune ``layers`` step by step towards ``method``, fine-tuning after each step.

    ``method`` is one :class:`PruningMethod` for every layer or one per layer (see
    :func:`per_layer`). Each of the ``steps`` steps applies the next method of ``m.schedule(steps)`` (a
    growing ratio or block size) to the effective weights of every layer, so what an
    earlier step pruned stays pruned unless a regular block needs an entry back, then
    calls ``finetune(step)``, which returns an accuracy.

    Returns
    -------
    list of dict
        Per step: the methods' parameters (one dict, or a list per layer), the reached
        pruning ratio and the accuracy.
    """
    methods = per_layer(method, layers)
    # A schedule may be shorter than ``steps`` (N:M has one step, BMWM stops at its
    # smallest block): its first method is repeated, so every method gets the same
    # ``steps`` rounds of fine-tuning (re-applying a mask to weights it already pruned
    # keeps it).
    n = max(steps, 1)
    schedules = [m.schedule(steps) for m in methods]
    schedules = [[s[0]] * (n - len(s)) + s if len(s) < n else s for s in schedules]
    log = []
    for step in range(n):
        kept = total = 0
        now = [s[step] for s in schedules]
        for layer, m in zip(layers, now):
            mask = layer.prune(m)
            kept += int(mask.sum())
            total += mask.size
        acc = finetune(step)
        params = now[0].params() if isinstance(method, PruningMethod) else \
            [m.params() for m in now]
        log.append({"step": step, "params": params, "pruning_ratio": total / kept,
                    "accuracy": acc})
        logger.info("pruning step %d/%d: %.2fx, accuracy %.4f after fine-tuning", step + 1,
                    n, total / kept, acc)
    return log


def seed_everything(seed: int) -> None:
    """Seed torch and numpy's global generators (the code itself uses explicit ones)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
