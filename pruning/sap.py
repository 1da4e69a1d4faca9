"""The SAP iteration driver (Diao et al., ICLR 2023) with its LT and one-shot baselines.

Each iteration rewinds to the *same* initial weights (lottery-ticket style: a fresh
model from the same seed), trains with the current mask fixed, logs accuracy, PQ
Index and Gini, then prunes the ``c`` smallest surviving weights of every group of
the chosen scope (``neuron``: each row; ``layer``: each matrix; ``global``: all):

* ``sap``: ``c`` from :func:`~darbgen.pruning.pqi.sap_prune_count`;
* ``lt``: ``c = ⌊rate · d⌋`` by current magnitude (lottery ticket, LT(0.2));
* ``os``: ``c = ⌊rate · d⌋`` by the magnitudes of the first, dense model (one-shot, OS(0.2)).

Differences from the authors' code, all documented in ``docs/sap.md``: Adam instead of
SGD with a cosine schedule, the last (not the best-on-test) checkpoint is pruned, and
exactly ``c`` weights are pruned (the code prunes ``|w| <`` the ``c``-th magnitude,
which can prune fewer on ties).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .masks import DEFAULT_BLOCK_SIZES, bmwm_mask, darb_block_sizes
from .methods import prunable_layers
from .pqi import gini_index, pq_index, sap_prune_count
from .train import Dataset, accuracy, train

__all__ = ["SCOPES", "Criterion", "sap", "lottery_ticket", "one_shot", "IterativeResult",
           "iterative_prune", "sap_darb_masks"]

SCOPES = ("neuron", "layer", "global")


@dataclass(frozen=True)
class Criterion:
    """How many surviving weights of a group to prune, and by which magnitudes."""

    name: str
    count: Callable[[np.ndarray, np.ndarray], int]   # (weights, mask) of a group -> c
    dense_scores: bool = False                        # rank by the first dense model


def sap(p: float = 0.5, q: float = 1.0, eta_r: float = 0.0, gamma: float = 1.0,
        beta: float = 0.9) -> Criterion:
    """SAP(p, q): prune ``c`` from the PQ Index bound of each group."""
    sap_prune_count([1.0], p=p, q=q, eta_r=eta_r, gamma=gamma, beta=beta)   # validate
    return Criterion(f"sap({p:g},{q:g})", lambda w, m: sap_prune_count(
        w, m, p=p, q=q, eta_r=eta_r, gamma=gamma, beta=beta).prune)


def _rate(rate):
    if not 0 < rate < 1:
        raise ValueError(f"prune rate must be between 0 and 1, not {rate}")
    return lambda w, m: int(np.floor(rate * int(np.count_nonzero(m))))


def lottery_ticket(rate: float = 0.2) -> Criterion:
    """LT(rate): a fixed fraction of the survivors, by current magnitude."""
    return Criterion(f"lt({rate:g})", _rate(rate))


def one_shot(rate: float = 0.2) -> Criterion:
    """OS(rate): a fixed fraction of the survivors, by the first dense model's magnitude."""
    return Criterion(f"os({rate:g})", _rate(rate), dense_scores=True)


@dataclass
class IterativeResult:
    """The per-iteration log, the final masks and the model trained with them."""

    log: list
    masks: list
    model: torch.nn.Module
    criterion: str
    scope: str
    extra: dict = field(default_factory=dict)


def _groups(masks, scope):
    """Index sets of each scope group: (layer, row slice) pairs."""
    if scope == "global":
        return [[(i, slice(None)) for i in range(len(masks))]]
    if scope == "layer":
        return [[(i, slice(None))] for i in range(len(masks))]
    return [[(i, r)] for i, m in enumerate(masks) for r in range(m.shape[0])]


def _prune(weights, scores, masks, criterion, scope):
    new = [m.copy() for m in masks]
    for group in _groups(masks, scope):
        w = np.concatenate([np.atleast_2d(weights[i][s]).ravel() for i, s in group])
        m = np.concatenate([np.atleast_2d(masks[i][s]).ravel() for i, s in group])
        sc = np.concatenate([np.atleast_2d(scores[i][s]).ravel() for i, s in group])
        c = criterion.count(w, m)
        if c <= 0:
            continue
        alive = np.nonzero(m)[0]
        drop = alive[np.argsort(sc[alive], kind="stable")[:c]]
        flat = m.copy()
        flat[drop] = False
        start = 0
        for i, s in group:
            part = np.atleast_2d(new[i][s])
            new[i][s] = flat[start:start + part.size].reshape(new[i][s].shape)
            start += part.size
    return new


def _model_with_masks(model_fn, masks):
    model = model_fn()
    layers = list(prunable_layers(model))
    for layer, mask in zip(layers, masks):
        layer.set_mask(mask)
    return model, layers


def _figures(layers, masks):
    weights = [layer.weight() for layer in layers]
    allw = np.concatenate([w.ravel() for w in weights])
    allm = np.concatenate([m.ravel() for m in masks])
    return {"pqi_0.5_1": pq_index(allw, 0.5, 1, allm), "pqi_1_2": pq_index(allw, 1, 2, allm),
            "gini": gini_index(allw, allm)}


def iterative_prune(model_fn: Callable[[], torch.nn.Module], data: Dataset, criterion: Criterion,
                    *, scope: str = "neuron", iterations: int = 10, epochs: int = 20,
                    seed: int = 0, progress: bool = False,
                    batch_size: int = 32) -> IterativeResult:
    """Run ``iterations`` prune-rewind-train rounds; see the module docstring.

    Parameters
    ----------
    model_fn : callable
        Returns the model at its initial weights, the same every call (seeded).

    Returns
    -------
    IterativeResult
        ``log`` has one row per iteration: ``iteration``, ``remaining`` (fraction),
        ``accuracy`` (retrained), ``accuracy_pruned`` (those weights under the next
        mask, before retraining), ``pqi_0.5_1``, ``pqi_1_2``, ``gini``.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    first = model_fn()
    masks = [np.ones(layer.weight().shape, dtype=bool) for layer in prunable_layers(first)]
    dense_scores = None
    log = []
    for t in range(iterations + 1):
        model, layers = _model_with_masks(model_fn, masks)
        acc = train(model, data, epochs=epochs, seed=seed + t, desc=f"{criterion.name} {t}",
                    progress=progress, batch_size=batch_size)
        weights = [layer.weight() for layer in layers]
        if dense_scores is None:
            dense_scores = [np.abs(w) for w in weights]
        row = {"iteration": t, "remaining": float(sum(m.sum() for m in masks)
                                                  / sum(m.size for m in masks)),
               "accuracy": acc, **_figures(layers, masks)}
        if t == iterations:
            row["accuracy_pruned"] = None
            log.append(row)
            break
        scores = dense_scores if criterion.dense_scores else [np.abs(w) for w in weights]
        masks = _prune(weights, scores, masks, criterion, scope)
        for layer, mask in zip(layers, masks):
            layer.set_mask(mask)
        row["accuracy_pruned"] = accuracy(model, data.x_test, data.y_test)
        log.append(row)
    return IterativeResult(log, masks, model, criterion.name, scope)


def sap_darb_masks(weights, masks, block_sizes=DEFAULT_BLOCK_SIZES, keep: int = 1):
    """SAP-driven DARB: each row's SAP budget (its surviving count) chooses its DARB block
    size, then per-row BMWM on ``weights``.

    Returns a list of ``(mask, row_block_sizes)``, one per layer.
    """
    out = []
    for w, m in zip(weights, masks):
        counts = m.sum(axis=1)
        ratio = m.size / max(int(counts.sum()), 1)
        sizes = darb_block_sizes(w, ratio, block_sizes, keep, counts=counts)
        out.append((bmwm_mask(w, sizes, keep), sizes))
    return out


def sap_oneshot_masks(weights, criterion: Criterion, scope: str = "neuron"):
    """One pruning step on trained weights without data: each group loses its ``c``
    smallest weights (what one SAP iteration does before rewinding)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    return _prune(weights, [np.abs(w) for w in weights],
                  [np.ones(w.shape, dtype=bool) for w in weights], criterion, scope)


def sap_artifact(source_layers, masks, params: dict, *, row_block_sizes=None,
                 weight_bits: int = 8, provenance: dict | None = None):
    """Export SAP's result: its masks in the CSR layout (method ``sap``), or, given each
    layer's per-row DARB block sizes (from :func:`sap_darb_masks`), as SAP-driven DARB
    (method ``sap-darb``). ``source_layers`` are ``(name, weight, bias, shape)`` tuples.
    """
    from .sources import masked_artifact

    return masked_artifact(source_layers, masks, "sap" if row_block_sizes is None else "sap-darb",
                           params, row_block_sizes=row_block_sizes, weight_bits=weight_bits,
                           provenance=provenance)


def finetune_sap_darb(model: torch.nn.Module, masks, data: Dataset, block_sizes=DEFAULT_BLOCK_SIZES,
                      *, epochs: int = 10, seed: int = 0) -> dict:
    """Turn a SAP-pruned model into SAP-driven DARB in place and fine-tune it.

    Returns ``{"row_block_sizes": [...per layer...], "accuracy_before": ...,
    "accuracy": ...}`` (accuracy right after the mask change, and after fine-tuning).
    """
    layers = list(prunable_layers(model))
    pairs = sap_darb_masks([layer.weight() for layer in layers], masks, block_sizes)
    for layer, (mask, _) in zip(layers, pairs):
        layer.set_mask(mask)
    before = accuracy(model, data.x_test, data.y_test)
    after = train(model, data, epochs=epochs, lr=5e-4, seed=seed, progress=False)
    return {"row_block_sizes": [sizes for _, sizes in pairs], "accuracy_before": before,
            "accuracy": after}


def run_sap_example(name: str, criterion: Criterion, *, scope: str = "neuron",
                    iterations: int = 10, epochs: int = 10, block_sizes=None,
                    weight_bits: int = 8, seed: int = 0, progress: bool = False):
    """SAP on a built-in example, exported as SAP (CSR layout) or, with ``block_sizes``,
    as fine-tuned SAP-driven DARB. Returns the artifact."""
    from .examples import EXAMPLES, example_data

    data = example_data(name, seed)
    result = iterative_prune(lambda: EXAMPLES[name](seed=seed), data, criterion, scope=scope,
                             iterations=iterations, epochs=epochs, seed=seed, progress=progress)
    acc = {"dense": result.log[0]["accuracy"], "sap": result.log[-1]["accuracy"]}
    sizes = None
    if block_sizes is not None:
        darb = finetune_sap_darb(result.model, result.masks, data, block_sizes, epochs=epochs,
                                 seed=seed)
        sizes, acc["pruned"] = darb["row_block_sizes"], darb["accuracy"]
    from .sources import model_layers

    masks = [layer.mask() for layer in prunable_layers(result.model)]
    params = {"criterion": criterion.name, "scope": scope, "iterations": iterations}
    return sap_artifact(model_layers(result.model), masks, params,
                        row_block_sizes=sizes, weight_bits=weight_bits,
                        provenance={"source": name, "accuracy": acc, "schedule": result.log})
