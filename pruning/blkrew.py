"""BLK-REW: block-based row/column pruning with reweighted group regularization
(Ma et al., arXiv 2001.08357; reconstructed, see ``docs/blkrew.md``).

The GEMM view of a weight (FC, LSTM gates, conv as ``F × C·kh·kw``) is cut into
``bh × bw`` blocks (edge blocks may be partial). Inside each block, every row and every
column is a group. Training adds a penalty on the groups:

* ``reweighted``: ``λ Σ_g P_g ‖W_g‖²`` with ``P_g = 1 / (‖W_g‖² + ε)`` recomputed from the
  current weights every few epochs, so small groups are pushed to zero and large ones
  are left alone;
* ``group_lasso`` (the baseline): ``λ Σ_g ‖W_g‖``, the same shrinkage for every group.

Then a hard prune (:func:`bcr_mask`) removes whole rows and columns inside each block
until the block keeps its share of the target ratio, and masked retraining follows.
The mask is stored in the CSR layout (:func:`darbgen.format.single_block_layout`), which
the engine runs.
"""

from __future__ import annotations

import numpy as np
import torch

from .masks import _check_block_shape, _check_ratio, _matrix

__all__ = ["bcr_mask", "GroupPenalty", "blkrew_prune", "blkrew_artifact"]


def _blocks(rows, cols, bh, bw):
    for i in range(0, rows, bh):
        for j in range(0, cols, bw):
            yield slice(i, min(i + bh, rows)), slice(j, min(j + bw, cols))


def bcr_mask(weight, ratio: float, block_shape=(4, 4)) -> np.ndarray:
    """Block column-row mask: inside each block, drop the row or column group of least
    mean squared weight, one at a time, until the kept area is at most
    ``block area / ratio`` (at least one row and one column stay).

    Every block gets the same kept fraction (balanced), so the layer lands near
    ``ratio``; the kept entries of a block form a dense sub-matrix.

    Examples
    --------
    >>> w = np.array([[9., 1, 8, 1], [1, 1, 1, 1], [7, 1, 9, 1], [1, 1, 1, 1]])
    >>> bcr_mask(w, 4, (4, 4)).astype(int)
    array([[1, 0, 1, 0],
           [0, 0, 0, 0],
           [1, 0, 1, 0],
           [0, 0, 0, 0]])
    """
    w2 = _matrix(weight) ** 2
    ratio = _check_ratio(ratio)
    bh, bw = _check_block_shape(block_shape)
    mask = np.zeros(w2.shape, dtype=bool)
    for rs, cs in _blocks(*w2.shape, bh, bw):
        blk = w2[rs, cs]
        rows_kept = np.ones(blk.shape[0], dtype=bool)
        cols_kept = np.ones(blk.shape[1], dtype=bool)
        budget = blk.size / ratio
        while rows_kept.sum() * cols_kept.sum() > budget:
            sub = blk[np.ix_(rows_kept, cols_kept)]
            row_score = np.full(blk.shape[0], np.inf)
            col_score = np.full(blk.shape[1], np.inf)
            if rows_kept.sum() > 1:
                row_score[rows_kept] = sub.mean(axis=1)
            if cols_kept.sum() > 1:
                col_score[cols_kept] = sub.mean(axis=0)
            if not (np.isfinite(row_score).any() or np.isfinite(col_score).any()):
                break
            # ties go to rows first, then to the lowest index
            if row_score.min() <= col_score.min():
                rows_kept[np.argmin(row_score)] = False
            else:
                cols_kept[np.argmin(col_score)] = False
        mask[rs, cs] = np.outer(rows_kept, cols_kept)
    return mask


class GroupPenalty:
    """The BLK-REW (``reweighted``) or group-lasso penalty over one GEMM-view weight.

    Parameters
    ----------
    block_shape : (int, int)
    kind : {"reweighted", "group_lasso"}
    eps : float
        ε of the reweighting, ``P_g = 1 / (‖W_g‖² + ε)``.

    Call :meth:`refresh` every few epochs (reweighted only) and add ``penalty(w)`` (a
    torch scalar, differentiable in ``w``) to the loss, times λ.
    """

    KINDS = ("reweighted", "group_lasso")

    def __init__(self, block_shape=(4, 4), kind: str = "reweighted", eps: float = 1e-3):
        if kind not in self.KINDS:
            raise ValueError(f"unknown penalty {kind!r}; choose one of {', '.join(self.KINDS)}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, not {eps}")
        self.bh, self.bw = _check_block_shape(block_shape)
        self.kind, self.eps = kind, eps
        self._rows = self._cols = None

    def _group_sq_norms(self, w: torch.Tensor):
        rows, cols = w.shape
        nbr, nbc = -(-rows // self.bh), -(-cols // self.bw)
        padded = torch.nn.functional.pad(w, (0, nbc * self.bw - cols, 0, nbr * self.bh - rows))
        blocks = padded.reshape(nbr, self.bh, nbc, self.bw) ** 2
        return blocks.sum(dim=3), blocks.sum(dim=1)   # (nbr, bh, nbc) rows, (nbr, nbc, bw) cols

    def refresh(self, w: torch.Tensor) -> None:
        """Recompute ``P_g`` from the current weights (reweighted only)."""
        with torch.no_grad():
            r, c = self._group_sq_norms(w.reshape(w.shape[0], -1))
            self._rows, self._cols = 1 / (r + self.eps), 1 / (c + self.eps)

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        r, c = self._group_sq_norms(w.reshape(w.shape[0], -1))
        if self.kind == "group_lasso":
            # sqrt with a floor: the gradient of ‖W_g‖ is undefined at 0
            return torch.sqrt(r + 1e-12).sum() + torch.sqrt(c + 1e-12).sum()
        if self._rows is None:
            self.refresh(w)
        return (self._rows * r).sum() + (self._cols * c).sum()


def blkrew_prune(model: torch.nn.Module, data, *, ratio: float, block_shape=(4, 4),
                 kind: str = "reweighted", lam: float = 1e-4, epochs: int = 30,
                 refresh_every: int = 5, retrain_epochs: int = 20, seed: int = 0,
                 progress: bool = False, optimizer: str = "adam", lr: float = 1e-3,
                 batch_size: int = 32) -> dict:
    """Regularize, hard-prune to ``ratio`` with :func:`bcr_mask`, retrain with masks fixed.

    Every Linear/Conv2d/LSTM matrix of ``model`` gets its own :class:`GroupPenalty`.
    The regularized phase trains with ``optimizer`` at ``lr`` (see
    :func:`darbgen.pruning.train.train`); retraining uses Adam at 5e-4.
    Returns the accuracies after regularized training, right after the hard prune,
    and after retraining, plus the reached ratio.
    """
    from .methods import prunable_layers
    from .train import accuracy, train

    layers = list(prunable_layers(model))
    penalties = [GroupPenalty(block_shape, kind) for _ in layers]

    def tensors():
        return [torch.cat([getattr(layer.module, p).reshape(getattr(layer.module, p).shape[0], -1)
                           for p in layer.params], dim=1) for layer in layers]

    def penalty():
        return lam * sum(pen.penalty(w) for pen, w in zip(penalties, tensors()))

    def refresh(epoch):
        if kind == "reweighted" and epoch % refresh_every == 0:
            for pen, w in zip(penalties, tensors()):
                pen.refresh(w)

    acc_reg = train(model, data, epochs=epochs, seed=seed, penalty=penalty, epoch_hook=refresh,
                    desc=f"{kind}", progress=progress, optimizer=optimizer, lr=lr,
                    batch_size=batch_size)
    kept = total = 0
    for layer in layers:
        mask = bcr_mask(layer.weight(), ratio, block_shape)
        layer.set_mask(mask)
        kept += int(mask.sum())
        total += mask.size
    acc_pruned = accuracy(model, data.x_test, data.y_test)
    acc = train(model, data, epochs=retrain_epochs, lr=5e-4, seed=seed + 1, desc="retrain",
                progress=progress, batch_size=batch_size)
    return {"kind": kind, "optimizer": optimizer, "block_shape": list(block_shape), "lambda": lam,
            "pruning_ratio": total / kept, "accuracy_regularized": acc_reg,
            "accuracy_pruned": acc_pruned, "accuracy": acc}


def blkrew_artifact(source, *, ratio: float = 8.0, block_shape=(4, 4), kind: str = "reweighted",
                    lam: float = 1e-5, weight_bits: int = 8, seed: int = 0,
                    progress: bool = False):
    """BLK-REW on ``source``: a built-in example name (regularize, prune, retrain) or a list
    of ``(name, weight, bias, shape)`` matrices (one-shot :func:`bcr_mask`, no data)."""
    from .examples import EXAMPLES, SCHEDULES, example_data
    from .methods import prunable_layers
    from .sources import masked_artifact, model_layers

    params = {"ratio": float(ratio), "block_shape": list(_check_block_shape(block_shape)),
              "penalty": kind, "lambda": lam}
    if isinstance(source, str):
        if source not in EXAMPLES:
            raise ValueError(f"unknown example {source!r}; choose one of {', '.join(EXAMPLES)}")
        model = EXAMPLES[source](seed=seed)
        epochs = SCHEDULES[source]["epochs"]
        result = blkrew_prune(model, example_data(source, seed), ratio=ratio,
                              block_shape=block_shape,
                              kind=kind, lam=lam, epochs=epochs, retrain_epochs=epochs // 2,
                              seed=seed, progress=progress)
        masks = [layer.mask() for layer in prunable_layers(model)]
        return masked_artifact(model_layers(model), masks, "blkrew", params,
                               weight_bits=weight_bits,
                               provenance={"source": source, "accuracy": {
                                   "regularized": result["accuracy_regularized"],
                                   "pruned": result["accuracy"]}})
    masks = [bcr_mask(s.weight, ratio, block_shape) for s in source]
    return masked_artifact(source, masks, "blkrew", {**params, "one_shot": True},
                           weight_bits=weight_bits)
