"""Evaluation data that ships with the installed packages (numpy and scikit-learn, no torch).

The pruning examples train on the same splits (:mod:`darbgen.pruning.examples`), so an
artifact's provenance names the split its accuracy was measured on.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DATASETS", "DIGITS_TEST_FRACTION", "DATA_KEYS", "digits_split", "test_split",
           "load_data"]

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


#: The arrays of a user's ``DATA.npz``: float inputs in the model's input shape, integer
#: labels.
DATA_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: Largest array a ``DATA.npz`` member may unpack to.
MAX_ARRAY_BYTES = 1 << 31


def load_data(path, input_shape: tuple = (), *, test_only: bool = False) -> dict:
    """The arrays of a user's ``DATA.npz`` (see :data:`DATA_KEYS`), checked.

    Each member is read through :func:`darbgen.format.read_npy` (no pickles; the
    header's size checked against the bytes before allocating), after its unpacked size
    is checked against :data:`MAX_ARRAY_BYTES`. With ``test_only`` only ``x_test`` and
    ``y_test`` are needed.

    Raises
    ------
    ValueError
        Not a zip of ``.npy`` files, a missing key, non-float inputs, non-integer or
        negative labels, lengths that differ, or inputs whose sample shape is not
        ``input_shape`` (when given); the message names the key.
    """
    import zipfile
    from pathlib import Path

    from .files import open_input
    from .format import read_npy

    path = Path(path)
    keys = DATA_KEYS[2:] if test_only else DATA_KEYS
    try:
        with zipfile.ZipFile(open_input(path, what="a .npz file")) as z:
            members = {info.filename.removesuffix(".npy"): info for info in z.infolist()}
            missing = [k for k in keys if k not in members]
            if missing:
                raise ValueError(f"{path}: has no {missing[0]!r} array (a DATA.npz holds "
                                 f"{', '.join(DATA_KEYS)})")
            arrays = {}
            for k in keys:
                if members[k].file_size > MAX_ARRAY_BYTES:
                    raise ValueError(f"{path}: {k!r} unpacks to {members[k].file_size} bytes, "
                                     f"more than {MAX_ARRAY_BYTES}")
                arrays[k] = read_npy(z.read(members[k]))
    except (zipfile.BadZipFile, FileNotFoundError, IsADirectoryError) as e:
        raise ValueError(f"{path}: not a .npz file ({e})") from None
    for split in ("train", "test"):
        if f"x_{split}" not in arrays:
            continue
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype.kind != "f":
            raise ValueError(f"{path}: 'x_{split}' must hold float inputs, not {x.dtype}")
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise ValueError(f"{path}: 'y_{split}' must be a 1-D array of integer labels, not "
                             f"{y.dtype} of shape {y.shape}")
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"{path}: 'x_{split}' has {len(x)} samples, 'y_{split}' {len(y)}")
        if (y < 0).any():
            raise ValueError(f"{path}: 'y_{split}' has a negative label {int(y.min())}")
        if not np.isfinite(x).all():
            raise ValueError(f"{path}: 'x_{split}' holds non-finite values")
        if input_shape and tuple(x.shape[1:]) != tuple(input_shape):
            raise ValueError(f"{path}: 'x_{split}' has samples of shape {tuple(x.shape[1:])}, "
                             f"the model takes {tuple(input_shape)}")
        arrays[f"x_{split}"] = x.astype(np.float32)
        arrays[f"y_{split}"] = y.astype(np.int64)
    return arrays
