"""Structured conv pruning after Anwar, Hwang and Sung (ACM JETC 2017; reconstructed,
see ``docs/structured.md``).

Three granularities of a Conv2d weight ``K[F, C, kh, kw]``:

* ``feature_map``: an input channel goes for every filter, ``K[:, c] = 0`` (``kh·kw``
  GEMM columns vanish);
* ``kernel``: one ``(filter, channel)`` kernel, ``K[f, c] = 0`` (a ``1 × kh·kw`` tile);
* ``strided``: inside each kernel only the flattened positions ``o, o+s, o+2s, …``
  survive, with the offset ``o`` shared by every filter reading input channel ``c``
  (the "simple constraint": whole GEMM columns vanish, no index is needed).

Which units survive is chosen by a *selector*: ``magnitude`` (largest L1 norm),
``random``, or the ``particle`` filter, which scores candidate masks by their
misclassification rate on a validation batch (no retraining inside the search),
weights them by ``exp(−(mcr − min)/τ)``, resamples and mutates while keeping the keep
count. Layers are pruned one at a time, each followed by retraining.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["GRANULARITIES", "SELECTORS", "unit_mask", "unit_scores", "ParticleFilter",
           "select_units", "structured_prune", "structured_artifact"]

GRANULARITIES = ("feature_map", "kernel", "strided")
SELECTORS = ("particle", "magnitude", "random")


def _check(granularity):
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; choose one of "
                         f"{', '.join(GRANULARITIES)}")


def n_units(shape, granularity: str) -> int:
    """How many selectable units a ``(F, C, kh, kw)`` weight has."""
    _check(granularity)
    f, c = shape[:2]
    return {"feature_map": c, "kernel": f * c, "strided": c}[granularity]


def unit_mask(shape, granularity: str, choice: np.ndarray, stride: int = 2) -> np.ndarray:
    """The ``(F, C, kh, kw)`` keep-mask of a unit choice.

    ``choice`` is a boolean keep vector over the units for ``feature_map`` and
    ``kernel``, and an offset in ``[0, stride)`` per input channel for ``strided``.
    """
    _check(granularity)
    f, c, kh, kw = shape
    choice = np.asarray(choice)
    if granularity == "feature_map":
        return np.broadcast_to(choice.astype(bool)[None, :, None, None], shape).copy()
    if granularity == "kernel":
        return np.broadcast_to(choice.astype(bool).reshape(f, c)[:, :, None, None], shape).copy()
    positions = np.arange(kh * kw)
    keep = (positions[None, :] % stride) == (choice.astype(int)[:, None] % stride)   # (C, k²)
    return np.broadcast_to(keep.reshape(1, c, kh, kw), shape).copy()


def unit_scores(weight: np.ndarray, granularity: str, stride: int = 2) -> np.ndarray:
    """L1 norm per unit (``strided``: per channel and offset, shape ``(C, stride)``)."""
    _check(granularity)
    a = np.abs(weight)
    f, c, kh, kw = a.shape
    if granularity == "feature_map":
        return a.sum(axis=(0, 2, 3))
    if granularity == "kernel":
        return a.sum(axis=(2, 3)).reshape(-1)
    flat = a.sum(axis=0).reshape(c, kh * kw)
    return np.stack([flat[:, o::stride].sum(axis=1) for o in range(stride)], axis=1)


@dataclass
class ParticleFilter:
    """Search over unit choices, scored by misclassification rate (lower is better).

    Parameters
    ----------
    particles, rounds : int
        Population size and resample-mutate rounds.
    mutations : int
        Units changed per mutation (swaps of a kept and a pruned unit, or offset
        changes for ``strided``), so the keep count never changes.
    tau : float
        Temperature of the importance weights ``exp(−(mcr − min) / τ)``.
    """

    particles: int = 16
    rounds: int = 6
    mutations: int = 2
    tau: float = 0.02

    def search(self, init: list, score: Callable[[np.ndarray], float],
               mutate: Callable[[np.ndarray, np.random.Generator], np.ndarray],
               rng: np.random.Generator) -> tuple[np.ndarray, float, int]:
        """Returns the best choice, its score and the number of evaluations."""
        population = list(init)[:self.particles]
        evaluations = 0
        best, best_score = None, np.inf
        for _ in range(self.rounds):
            scores = np.array([score(p) for p in population])
            evaluations += len(population)
            i = int(np.argmin(scores))
            if scores[i] < best_score:
                best, best_score = population[i].copy(), float(scores[i])
            weights = np.exp(-(scores - scores.min()) / self.tau)
            weights /= weights.sum()
            picks = rng.choice(len(population), size=self.particles, p=weights)
            population = [mutate(population[j].copy(), rng) for j in picks]
            population[0] = best.copy()          # elitism: the best survives unmutated
        return best, best_score, evaluations


def _random_choice(n, keep, rng):
    v = np.zeros(n, dtype=bool)
    v[rng.choice(n, size=keep, replace=False)] = True
    return v


def select_units(weight: np.ndarray, granularity: str, keep_fraction: float, selector: str,
                 *, stride: int = 2, score: Callable[[np.ndarray], float] | None = None,
                 pf: ParticleFilter | None = None, rng: np.random.Generator | None = None):
    """Choose which units of a conv weight survive.

    ``keep_fraction`` applies to ``feature_map`` and ``kernel`` (``strided`` keeps about
    ``1/stride`` by construction). ``score(mask)`` (the misclassification rate with the
    ``(F, C, kh, kw)`` mask applied) is needed by the particle filter.

    Returns the choice (see :func:`unit_mask`).
    """
    _check(granularity)
    if selector not in SELECTORS:
        raise ValueError(f"unknown selector {selector!r}; choose one of {', '.join(SELECTORS)}")
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], not {keep_fraction}")
    rng = rng if rng is not None else np.random.default_rng(0)
    pf_ = pf or ParticleFilter()
    shape = weight.shape
    n = n_units(shape, granularity)
    scores = unit_scores(weight, granularity, stride)
    if granularity == "strided":
        magnitude = np.argmax(scores, axis=1)
        random = lambda: rng.integers(0, stride, size=n)         # noqa: E731

        def mutate(v, g):
            for i in g.choice(n, size=min(pf_.mutations, n), replace=False):
                v[i] = g.integers(0, stride)
            return v
    else:
        keep = max(1, int(round(keep_fraction * n)))
        magnitude = np.zeros(n, dtype=bool)
        magnitude[np.argsort(-scores, kind="stable")[:keep]] = True
        random = lambda: _random_choice(n, keep, rng)            # noqa: E731

        def mutate(v, g):
            for _ in range(pf_.mutations):
                on, off = np.nonzero(v)[0], np.nonzero(~v)[0]
                if len(on) == 0 or len(off) == 0:
                    break
                v[g.choice(on)], v[g.choice(off)] = False, True
            return v
    if selector == "magnitude":
        return magnitude
    if selector == "random":
        return random()
    if score is None:
        raise ValueError("the particle filter needs a score function")
    # the magnitude choice seeds one particle, random choices the rest
    init = [magnitude.copy()] + [random() for _ in range(pf_.particles - 1)]
    best, _, _ = pf_.search(init, lambda v: score(unit_mask(shape, granularity, v, stride)),
                            mutate, rng)
    return best


def structured_prune(model: torch.nn.Module, data, granularity: str, selector: str, *,
                     keep_fraction: float = 0.5, stride: int = 2, retrain_epochs: int = 5,
                     validation: int = 300, pf: ParticleFilter | None = None, seed: int = 0,
                     progress: bool = False, batch_size: int = 32) -> dict:
    """Prune every Conv2d of ``model`` at ``granularity``, layer by layer, each followed
    by ``retrain_epochs`` of masked retraining.

    The particle filter scores on ``validation`` samples held out from the training
    split (never the test split). Returns the pruned fraction of conv weights and the
    accuracy after each layer.
    """
    from .methods import prunable_layers
    from .train import Dataset, accuracy, train

    rng = np.random.default_rng(seed)
    order = torch.randperm(data.x_train.shape[0], generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:validation], order[validation:]
    x_val, y_val = data.x_train[val_idx], data.y_train[val_idx]
    fit = Dataset(data.x_train[train_idx], data.y_train[train_idx], data.x_test, data.y_test)
    convs = [layer for layer in prunable_layers(model)
             if isinstance(layer.module, torch.nn.Conv2d)]
    log = []
    for step, layer in enumerate(convs):
        shape = tuple(layer.module.weight.shape)
        w = layer.weight().reshape(shape)
        previous = layer.mask()
        if previous is None:                  # candidates are tried on the mask buffer
            previous = np.ones(shape, bool)
            layer.set_mask(previous.reshape(shape[0], -1))
        previous = previous.reshape(shape)

        def mcr(mask4d):
            layer.update_mask((mask4d & previous).reshape(shape[0], -1))
            return 1.0 - accuracy(model, x_val, y_val)

        choice = select_units(w, granularity, keep_fraction, selector, stride=stride,
                              score=mcr, pf=pf, rng=rng)
        mask = unit_mask(shape, granularity, choice, stride) & previous
        layer.update_mask(mask.reshape(shape[0], -1))
        acc_pruned = accuracy(model, data.x_test, data.y_test)
        acc = train(model, fit, epochs=retrain_epochs, lr=5e-4, seed=seed + step,
                    desc=f"{granularity} {layer.name}", progress=progress,
                    batch_size=batch_size)
        log.append({"layer": layer.name, "kept": float(mask.mean()),
                    "accuracy_pruned": acc_pruned, "accuracy": acc})
    kept = sum(int(l.mask().sum()) for l in convs)
    total = sum(l.mask().size for l in convs)
    return {"granularity": granularity, "selector": selector, "keep_fraction": keep_fraction,
            "stride": stride, "conv_pruned": 1 - kept / total, "accuracy": log[-1]["accuracy"],
            "layers": log}


def structured_artifact(source, *, granularity: str = "kernel", selector: str = "particle",
                        keep_fraction: float = 0.5, stride: int = 2, weight_bits: int = 8,
                        seed: int = 0, progress: bool = False):
    """Structured pruning of the convolutions of ``source``: a built-in example name
    (trained, then :func:`structured_prune`) or a list of ``(name, weight, bias, shape)``
    matrices (one-shot, ``magnitude`` or ``random`` selection only: the particle filter
    needs data). Other layers are exported unpruned. Columns that the feature-map or
    strided masks empty in every row are compacted away (``input_columns``).

    Raises
    ------
    ValueError
        ``source`` has no Conv2d weight, or the particle filter is asked for without data.
    """
    from .examples import EXAMPLES, SCHEDULES, example_data
    from .sources import masked_artifact, model_layers
    from .train import train

    params = {"granularity": granularity, "selector": selector,
              "keep_fraction": keep_fraction, "stride": stride}
    if isinstance(source, str):
        if source not in EXAMPLES:
            raise ValueError(f"unknown example {source!r}; choose one of {', '.join(EXAMPLES)}")
        data = example_data(source, seed)
        model = EXAMPLES[source](seed=seed)
        acc_dense = train(model, data, epochs=SCHEDULES[source]["epochs"], seed=seed,
                          progress=progress)
        if not any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
            raise ValueError(f"{source} has no Conv2d layer to prune structurally")
        result = structured_prune(model, data, granularity, selector,
                                  keep_fraction=keep_fraction, stride=stride, seed=seed,
                                  progress=progress)
        from .methods import prunable_layers
        masks = [layer.mask() for layer in prunable_layers(model)]
        return masked_artifact(model_layers(model), masks, "structured", params,
                               weight_bits=weight_bits, compact=True,
                               provenance={"source": source, "accuracy": {
                                   "dense": acc_dense, "pruned": result["accuracy"]},
                                   "conv_pruned": result["conv_pruned"]})
    if selector == "particle":
        raise ValueError("the particle filter needs data: use a built-in example, or "
                         "--selector magnitude or random")
    masks, rng = [], np.random.default_rng(seed)
    for w, shape in ((s.weight, s.shape) for s in source):
        if len(shape) != 4:
            masks.append(None)
            continue
        choice = select_units(w.reshape(shape), granularity, keep_fraction, selector,
                              stride=stride, rng=rng)
        masks.append(unit_mask(shape, granularity, choice, stride).reshape(shape[0], -1))
    if all(m is None for m in masks):
        raise ValueError("structured pruning needs Conv2d weights; the source has none")
    return masked_artifact(source, masks, "structured", {**params, "one_shot": True},
                           weight_bits=weight_bits, compact=True)
