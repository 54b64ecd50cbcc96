"""The :class:`Dataset` container and the preprocessing shared by all datasets."""

from __future__ import annotations

import dataclasses

import numpy as np

from eoslab.errors import EoslabError

STANDARDIZE = ("channel", "feature", "none")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A supervised dataset as NumPy arrays.

    Attributes:
      x: inputs (n, d) (images are flat rows, channel-first: CIFAR-10's layout).
      y: targets (n, c): one-hot rows for classification, real values for regression.
      labels: (n,) int class indices, or ``None`` for regression.
      label_names: names of the classes (classification), else ``()``.
      name: a short description (for plots and summaries).
      image_shape: (C, H, W) when the rows are images, else ``None``.
    """

    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray | None = None
    label_names: tuple[str, ...] = ()
    name: str = ""
    image_shape: tuple[int, int, int] | None = None

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def in_dim(self) -> int:
        return int(np.prod(self.x.shape[1:]))

    @property
    def out_dim(self) -> int:
        return self.y.shape[1]

    @property
    def is_classification(self) -> bool:
        return self.labels is not None

    def take(self, idx) -> "Dataset":
        """The examples ``idx`` (any NumPy index)."""
        return dataclasses.replace(self, x=self.x[idx], y=self.y[idx],
                                   labels=None if self.labels is None else self.labels[idx])


def one_hot(labels, num_classes: int, dtype="float32") -> np.ndarray:
    """(n,) integer labels in [0, num_classes) → (n, num_classes) one-hot rows (MSE targets,
    as in Cohen et al.: 1 for the true class, 0 elsewhere)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise EoslabError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    return np.eye(num_classes, dtype=dtype)[labels]


def standardize(x: np.ndarray, mode: str = "channel", channels: int = 3, stats=None):
    """Standardise inputs; returns ``(x_std, (mean, std))`` (pass ``stats`` to reuse the
    training set's statistics on a test set).

    ``mode``: ``"channel"``: subtract each colour channel's mean and divide by its std,
    over all pixels and examples (Cohen et al.'s preprocessing; rows are channel-first
    images with ``channels`` channels); ``"feature"``: per input coordinate; ``"none"``.
    """
    if mode not in STANDARDIZE:
        raise EoslabError(f"unknown standardisation {mode!r}; expected one of {STANDARDIZE}")
    x = np.asarray(x, dtype=np.float64)
    if mode == "none":
        return x, (np.zeros(1), np.ones(1))
    if mode == "channel":
        if x.shape[1] % channels:
            raise EoslabError(f"{x.shape[1]} features cannot be split into {channels} channels")
        xc = x.reshape(x.shape[0], channels, -1)
        if stats is None:
            stats = (xc.mean(axis=(0, 2)), xc.std(axis=(0, 2)))
        mean, std = stats
        out = (xc - mean[None, :, None]) / np.where(std > 0, std, 1.0)[None, :, None]
        return out.reshape(x.shape), stats
    if stats is None:
        stats = (x.mean(axis=0), x.std(axis=0))
    mean, std = stats
    return (x - mean) / np.where(std > 0, std, 1.0), stats
