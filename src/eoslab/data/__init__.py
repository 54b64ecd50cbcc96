"""Datasets as plain arrays: inputs, targets (one-hot for classification), labels.

* :func:`synthetic`: the default data for tests and the quick path (no files needed);
  chosen so that a 2-hidden-layer tanh network shows progressive sharpening into the
  edge of stability at η = 0.02 (see :mod:`eoslab.data.synthetic`).
* :func:`load_cifar10`: CIFAR-10 from its standard python-pickle batches at a path you give.
* :func:`load_digits`: scikit-learn's bundled 8×8 digits (extra ``eoslab[digits]``).
* :func:`load`: any of them, by name (what the CLI uses).
"""

from eoslab.data.base import Dataset, one_hot, standardize
from eoslab.data.cifar10 import load_cifar10
from eoslab.data.digits import load_digits
from eoslab.data.synthetic import synthetic

__all__ = ["Dataset", "one_hot", "standardize", "synthetic", "load_cifar10", "load_digits", "load", "NAMES"]

NAMES = ("synthetic", "cifar10", "digits")


def load(name: str, *, n: int | None = None, data_dir=None, classes=None, seed: int = 0,
         dtype="float32", **kw) -> Dataset:
    """The dataset ``name`` (``"synthetic"``, ``"cifar10"`` or ``"digits"``), first ``n`` examples.

    ``data_dir`` is required for CIFAR-10 (the folder holding ``data_batch_1`` …);
    ``classes`` selects a class subset (CIFAR-10: indices or names; digits: 0–9); ``seed`` only
    affects the synthetic data. Extra keywords go to the loader.
    """
    from eoslab.errors import EoslabError

    if name == "synthetic":
        if classes is not None:
            kw.setdefault("classes", len(classes) if not isinstance(classes, int) else classes)
        return synthetic(n=1000 if n is None else n, seed=seed, dtype=dtype, **kw)
    if name == "cifar10":
        if data_dir is None:
            raise EoslabError("CIFAR-10 needs --data-dir: the folder with data_batch_1..5, test_batch, "
                              "batches.meta (python-pickle version; eoslab does not download it)")
        return load_cifar10(data_dir, n=n, classes=classes, dtype=dtype, **kw)
    if name == "digits":
        return load_digits(n=n, classes=classes, dtype=dtype, **kw)
    raise EoslabError(f"unknown dataset {name!r}; expected one of {NAMES}")
