"""Evaluation data that ships with the installed packages (numpy and scikit-learn, no torch).

The pruning examples train on the same splits (:mod:`darbgen.pruning.examples`), so an
artifact's provenance names the split its accuracy was measured on.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DATASETS", "DIGITS_TEST_FRACTION", "digits_split", "test_split"]

#: Fraction of the digits held out for testing.
DIGITS_TEST_FRACTION = 0.2


def digits_split(seed: int = 0):
    """scikit-learn's digits (pixels 0..16), stratified 80/20: xtr, xte, ytr, yte."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    return train_test_split(digits.data, digits.target, test_size=DIGITS_TEST_FRACTION,
                            random_state=seed, stratify=digits.target)


def _digits_test(seed: int):
    _, xte, _, yte = digits_split(seed)
    return xte / 16.0, yte


#: Name → ``(seed) -> (float inputs as the model saw them, labels)`` of the test split.
DATASETS = {"digits": _digits_test}


def test_split(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The float test inputs and labels of data set ``name``.

    Raises
    ------
    ValueError
        Unknown data set; the message lists the known ones.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    x, y = DATASETS[name](seed)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
