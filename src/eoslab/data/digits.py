"""scikit-learn's bundled ``digits`` data: 1,797 grey 8×8 images of hand-written digits, 10 classes.

A small real-image dataset that needs no download (the file ships inside scikit-learn,
:func:`sklearn.datasets.load_digits`; the UCI "Optical Recognition of Handwritten Digits" test
set). Pixels are integers 0…16. scikit-learn is the optional extra ``eoslab[digits]``.
"""

from __future__ import annotations

import numpy as np

from eoslab.data.base import Dataset, one_hot, standardize
from eoslab.errors import EoslabError

IMAGE_SHAPE = (1, 8, 8)
TOTAL = 1797


def _raw() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's arrays: (1797, 64) float pixels 0…16 and (1797,) int labels."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise EoslabError("the digits dataset needs scikit-learn: pip install 'eoslab[digits]'") from None
    b = sklearn_digits()
    return np.asarray(b.data, np.float64), np.asarray(b.target, np.int64)


def _class_indices(classes) -> list[int]:
    out = []
    for c in classes:
        if isinstance(c, str) and not c.strip().isdigit():
            raise EoslabError(f"digits classes are the digits 0..9, got {c!r}")
        i = int(c)
        if not 0 <= i <= 9:
            raise EoslabError(f"digits class must be in 0..9, got {c!r}")
        out.append(i)
    if len(set(out)) != len(out) or not out:
        raise EoslabError(f"classes must be distinct and non-empty, got {list(classes)!r}")
    return out


def load_digits(n: int | None = None, classes=None, standardization: str = "channel",
                dtype="float32") -> Dataset:
    """The digits as a :class:`Dataset`: the first ``n`` examples (of the kept classes), in
    scikit-learn's order (the classes are interleaved, so any prefix holds all of them).

    Args:
      n: number of examples (default: all 1,797).
      classes: a subset of digits (0–9); labels are renumbered 0…len(classes)−1 in the
        order given, and targets have that many columns.
      standardization: ``"channel"`` (default: the one grey channel, mean 0 and std 1 over all
        pixels of the returned examples, as CIFAR-10's per-channel statistics), ``"feature"``
        (per pixel; the always-blank border pixels stay 0) or ``"none"`` (pixels scaled to [0, 1]).

    Returns:
      a Dataset with x (n, 64) float rows (row-major 8×8 images), y (n, c) one-hot (the targets
      of MSE, as Cohen et al., and of cross-entropy), labels (n,), image_shape (1, 8, 8).
    """
    if n is not None and (int(n) != n or n <= 0):
        raise EoslabError(f"n must be a positive integer, got {n!r}")
    keep = list(range(10)) if classes is None else _class_indices(classes)
    x, labels = _raw()
    remap = np.full(10, -1)
    remap[keep] = np.arange(len(keep))
    mask = remap[labels] >= 0
    x, labels = x[mask], remap[labels[mask]]
    if n is not None:
        if n > len(labels):
            raise EoslabError(f"asked for n={n} examples but digits holds only {len(labels)}"
                              + ("" if classes is None else f" of classes {list(classes)}"))
        x, labels = x[:n], labels[:n]
    x, _ = standardize(x / 16.0, standardization, channels=1)
    return Dataset(x.astype(dtype), one_hot(labels, len(keep), dtype), labels,
                   tuple(str(i) for i in keep), name=f"digits (n={len(labels)}, {len(keep)} classes)",
                   image_shape=IMAGE_SHAPE)
