"""CIFAR-10 from its standard python-pickle batches (no download: give the folder).

The "CIFAR-10 python version" (https://www.cs.toronto.edu/~kriz/cifar.html) unpacks to
``cifar-10-batches-py/`` with ``data_batch_1`` … ``data_batch_5`` (training, 10,000 images
each), ``test_batch`` and ``batches.meta``. Each batch is a pickled dict with
``b'data'``: uint8 array (N, 3072), one row per 32×32 image, channel-first (1024 red,
1024 green, then 1024 blue values, each row-major), and ``b'labels'``: a list of N ints in
0…9. ``batches.meta`` holds ``b'label_names'``.

Files are read with a restricted unpickler that only rebuilds NumPy arrays, lists, dicts
and strings, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from eoslab.data.base import Dataset, one_hot, standardize
from eoslab.errors import EoslabError

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
IMAGE_SHAPE = (3, 32, 32)
_ROW = 3 * 32 * 32

# What a CIFAR-10 pickle may reference: NumPy's array reconstruction (and, in protocol-2
# pickles written by Python 3, the codec that turns bytes back into bytes), nothing else.
_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → ``(data uint8 (N, 3072), labels int64 (N,))``; EoslabError if the
    file is missing or not a CIFAR-10 batch."""
    path = Path(path)
    if not path.is_file():
        raise EoslabError(f"CIFAR-10 file not found: {path}")
    try:
        with open(path, "rb") as fh:
            d = _SafeUnpickler(fh, encoding="bytes").load()
    except Exception as e:  # any unpickling failure means a corrupt or foreign file
        raise EoslabError(f"corrupt CIFAR-10 file {path}: cannot unpickle ({e})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        keys = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise EoslabError(f"corrupt CIFAR-10 file {path}: expected a dict with b'data' and b'labels', got {keys}")
    data, labels = np.asarray(d[b"data"]), np.asarray(d[b"labels"])
    if data.ndim != 2 or data.shape[1] != _ROW or data.dtype != np.uint8:
        raise EoslabError(f"corrupt CIFAR-10 file {path}: b'data' must be uint8 of shape (N, {_ROW}), "
                          f"got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise EoslabError(f"corrupt CIFAR-10 file {path}: b'labels' must be {data.shape[0]} integers, "
                          f"got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise EoslabError(f"corrupt CIFAR-10 file {path}: labels outside 0..9")
    return data, labels.astype(np.int64)


def read_label_names(folder: str | Path) -> tuple[str, ...]:
    """The 10 class names from ``batches.meta`` (generic names if the file is absent)."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return tuple(f"class {i}" for i in range(10))
    try:
        with open(path, "rb") as fh:
            meta = _SafeUnpickler(fh, encoding="bytes").load()
        names = tuple(s.decode() if isinstance(s, bytes) else str(s) for s in meta[b"label_names"])
    except Exception as e:
        raise EoslabError(f"corrupt CIFAR-10 file {path}: {e}") from None
    if len(names) != 10:
        raise EoslabError(f"corrupt CIFAR-10 file {path}: expected 10 label names, got {len(names)}")
    return names


def _class_indices(classes, names) -> list[int]:
    out = []
    for c in classes:
        if isinstance(c, str) and not c.isdigit():
            if c not in names:
                raise EoslabError(f"unknown CIFAR-10 class {c!r}; classes are {', '.join(names)}")
            out.append(names.index(c))
        else:
            i = int(c)
            if not 0 <= i < 10:
                raise EoslabError(f"CIFAR-10 class index must be in 0..9, got {c!r}")
            out.append(i)
    if len(set(out)) != len(out) or not out:
        raise EoslabError(f"classes must be distinct and non-empty, got {list(classes)!r}")
    return out


def load_cifar10(folder: str | Path, n: int | None = None, classes=None, split: str = "train",
                 standardization: str = "channel", dtype="float32") -> Dataset:
    """CIFAR-10 as a :class:`Dataset`: the first ``n`` examples (of the kept classes).

    Args:
      folder: the directory with ``data_batch_1..5``, ``test_batch``, ``batches.meta``.
      n: number of examples (default: all); files are read only as far as needed.
      classes: a subset of classes (indices 0–9 or names such as ``"cat"``); labels are
        renumbered 0…len(classes)−1 in the order given, and targets have that many columns.
      split: ``"train"`` (the five data batches, in order) or ``"test"``.
      standardization: ``"channel"`` (default, as Cohen et al.: per colour channel, with
        statistics of the returned examples), ``"feature"`` (per pixel) or ``"none"``
        (pixel values scaled to [0, 1]).

    Returns:
      a Dataset with x (n, 3072) channel-first float rows, y (n, c) one-hot (use them for
      MSE or cross-entropy), labels (n,), image_shape (3, 32, 32).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EoslabError(f"CIFAR-10 folder not found: {folder}")
    if split not in ("train", "test"):
        raise EoslabError(f"split must be 'train' or 'test', got {split!r}")
    if n is not None and (int(n) != n or n <= 0):
        raise EoslabError(f"n must be a positive integer, got {n!r}")
    names = read_label_names(folder)
    keep = list(range(10)) if classes is None else _class_indices(classes, names)
    remap = np.full(10, -1)
    remap[keep] = np.arange(len(keep))

    xs, ys, have = [], [], 0
    for fname in (TRAIN_FILES if split == "train" else (TEST_FILE,)):
        data, labels = read_batch(folder / fname)
        mask = remap[labels] >= 0
        xs.append(data[mask])
        ys.append(remap[labels[mask]])
        have += int(mask.sum())
        if n is not None and have >= n:
            break
    x, labels = np.concatenate(xs), np.concatenate(ys)
    if n is not None:
        if have < n:
            raise EoslabError(f"asked for n={n} examples but the {split} files hold only {have}"
                              + ("" if classes is None else f" of classes {list(classes)}"))
        x, labels = x[:n], labels[:n]
    x = x.astype(np.float64) / 255.0
    x, _ = standardize(x, standardization, channels=3)
    return Dataset(x.astype(dtype), one_hot(labels, len(keep), dtype), labels,
                   tuple(names[i] for i in keep), name=f"CIFAR-10 {split} (n={len(labels)}, {len(keep)} classes)",
                   image_shape=IMAGE_SHAPE)
