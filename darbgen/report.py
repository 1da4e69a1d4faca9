"""What a user looks at after pruning: a layer's mask and block sizes as a picture
(``darbgen inspect --plot``), per-class accuracy and confusion matrices
(``darbgen eval --report``).

numpy, and matplotlib for the picture (imported on use).
"""

from __future__ import annotations

import json

import numpy as np

from .format import SparseLayer, atomic_write

__all__ = ["class_report", "write_report", "plot_layer"]


def class_report(labels, predictions: dict, classes: int) -> dict:
    """Per-class accuracy and the confusion matrix of each set of predictions.

    Parameters
    ----------
    labels : array of int, shape (n,)
    predictions : dict
        Name (``"int"``, ``"hw"``) → predicted classes, shape (n,).
    classes : int

    Returns
    -------
    dict
        ``classes``, ``samples`` (per class), and per name ``class_accuracy_<name>`` (per
        class; ``None`` for a class without samples) and ``confusion_<name>`` (rows: true
        class, columns: predicted).
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=classes)[:classes]
    out = {"classes": classes, "samples": counts.tolist()}
    for name, pred in predictions.items():
        pred = np.asarray(pred, dtype=np.int64)
        confusion = np.zeros((classes, classes), dtype=np.int64)
        np.add.at(confusion, (labels, pred), 1)
        out[f"class_accuracy_{name}"] = [
            None if counts[c] == 0 else float(confusion[c, c] / counts[c])
            for c in range(classes)]
        out[f"confusion_{name}"] = confusion.tolist()
    return out


def write_report(path, report: dict) -> None:
    """Write ``report`` as JSON, atomically."""
    text = json.dumps(report).encode()
    atomic_write(path, lambda f: f.write(text))


def plot_layer(layer: SparseLayer, path) -> None:
    """Draw ``layer``'s mask (kept weights dark) beside the histogram of its rows'
    block sizes, to ``path`` (PNG).

    Raises
    ------
    ValueError
        matplotlib is not installed (it comes with ``pip install darbgen[dev]``).
    """
    try:
        import matplotlib
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'darbgen[dev]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, counts = np.unique(layer.block_sizes, return_counts=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5),
                                      gridspec_kw={"width_ratios": [3, 1]})
    left.imshow(~layer.mask(), cmap="gray", aspect="auto", interpolation="nearest")
    left.set_title(f"{layer.name}: {layer.rows}×{layer.cols}, {layer.nnz} kept "
                   f"({layer.pruning_ratio:.2f}x), {layer.method}")
    left.set_xlabel("column")
    left.set_ylabel("row")
    right.bar([str(s) for s in sizes], counts, color="0.3")
    right.set_title("rows per block size")
    right.set_xlabel("block size")
    right.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
