"""A synthetic dataset on which small networks sharpen progressively into the edge of stability.

Inputs ``x ∈ R^d`` are Gaussian with a power-law covariance spectrum, like natural
images: eigenvalues ``∝ k^(−α)`` (k = 1 … d), scaled to total variance d (what
standardisation gives) and rotated by a random orthogonal matrix. Targets come from a
random teacher, a one-hidden-layer tanh network (``teacher_width`` units):

* regression (``classes=None``, the default): one output, the teacher's output
  standardised to mean 0 and std ``target_scale``;
* classification (``classes=c``): labels are the argmax of a c-output teacher, targets
  one-hot.

Why these choices (measured with a depth-2, width-256 tanh MLP, standard
parametrisation, full-batch GD at η = 0.02, i.e. 2/η = 100, n = 1000, d = 64): the
power-law spectrum gives the loss Hessian one dominant direction (the top input
principal component), so the top eigenvalue is well separated from the second (about
2:1) instead of forming a near-degenerate cluster as with isotropic inputs; and
progressive sharpening is driven by the residual scale (Theorem 2: λ̈/λ ∝ σ_z²), so
``target_scale`` sets how fast the sharpness rises. With the defaults the sharpness
starts near 30, rises past 2/η = 100 within the first ~1000 steps and then oscillates
around it (edge of stability) while the second eigenvalue stays near 50.
The data are deterministic in ``seed``. When d is a perfect square the rows are also
one-channel √d×√d images (``image_shape``), so the small CNN can be trained on them.
"""

from __future__ import annotations

import numpy as np

from eoslab.data.base import Dataset, one_hot
from eoslab.errors import EoslabError, check_memory, check_positive, check_positive_int


def synthetic(n: int = 1000, d: int = 64, *, classes: int | None = None, alpha: float = 1.0,
              target_scale: float = 4.0, teacher_width: int = 64, seed: int = 0,
              dtype="float32") -> Dataset:
    """``n`` examples of dimension ``d`` (see the module docstring).

    Args:
      n, d: number of examples and input dimension.
      classes: ``None`` for scalar regression targets (n, 1), or the number of classes
        (≥ 2) for one-hot classification targets (n, classes).
      alpha: power-law exponent of the input covariance spectrum (0: isotropic).
      target_scale: std of the regression targets.
      teacher_width: hidden units of the random teacher.
      seed: the data are a deterministic function of all the arguments.
    """
    n, d = check_positive_int("n", n), check_positive_int("d", d)
    check_positive_int("teacher_width", teacher_width)
    check_positive("target_scale", target_scale)
    if classes is not None and (int(classes) != classes or classes < 2):
        raise EoslabError(f"classes must be None (regression) or an integer ≥ 2, got {classes!r}")
    if classes is None and n < 2:  # one target has no spread to standardise (0/0: NaN targets)
        raise EoslabError(f"n must be ≥ 2 for synthetic regression targets (they are standardised to std "
                          f"target_scale over the examples), got {n}")
    if not np.isfinite(alpha) or alpha < 0:
        raise EoslabError(f"alpha must be a finite non-negative number, got {alpha!r}")
    c_out = 1 if classes is None else int(classes)
    # float64 while drawn: the inputs twice (draw, rotation), the teacher's hidden layer, the copies in dtype
    check_memory(f"n = {n:,} examples of dimension {d:,}", 8.0 * n * (3 * d + 2 * teacher_width + 2 * c_out),
                 "use fewer examples")
    structure = np.random.default_rng([seed, 1])  # the covariance and the teacher
    spectrum = np.arange(1, d + 1, dtype=np.float64) ** (-float(alpha))
    spectrum *= d / spectrum.sum()
    rotation, _ = np.linalg.qr(structure.standard_normal((d, d)))
    w1 = structure.standard_normal((d, teacher_width)) / np.sqrt(d)
    w2 = structure.standard_normal((teacher_width, c_out)) / np.sqrt(teacher_width)

    side = int(round(d ** 0.5))
    image = (1, side, side) if side * side == d else None  # lets the small CNN read square inputs
    x = (np.random.default_rng([seed, 2]).standard_normal((n, d)) * np.sqrt(spectrum)) @ rotation.T
    t = np.tanh(x @ w1) @ w2
    if classes is None:
        y = (t - t.mean()) / t.std() * float(target_scale)
        return Dataset(x.astype(dtype), y.astype(dtype), name=f"synthetic regression (n={n}, d={d})",
                       image_shape=image)
    labels = np.argmax(t, axis=1)
    return Dataset(x.astype(dtype), one_hot(labels, c_out, dtype), labels.astype(np.int64),
                   tuple(f"class {i}" for i in range(c_out)),
                   name=f"synthetic {c_out}-class (n={n}, d={d})", image_shape=image)
