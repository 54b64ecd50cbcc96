"""Deep linear networks W(θ) = W_L ⋯ W_1 (Crăciun & Ghoshdastidar, arXiv 2402.13108).

Parameters θ = (W_1, …, W_L), W_i of shape (d_i, d_{i−1}) for widths (d_0, d_1, …, d_L); data X
(n, d_0) (one example per row), targets Y (n, d_L). Two losses, one parameter:

* ``"sum"``:       L = Σᵢ ‖yᵢ − W xᵢ‖²           (the paper's loss; Problem normaliser ½),
* ``"half_mean"``: L = (1/2n) Σᵢ ‖yᵢ − W xᵢ‖²    (normaliser n).

The scalar chain with X = Y = [[1]] and ``"half_mean"`` is L = ½(w_L ⋯ w_1 − 1)²; depth 2 gives
½(uv − 1)².
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp

from eoslab.errors import EoslabError, check_positive, check_positive_int
from eoslab.problem import Problem
from eoslab._precision import x64
from eoslab.typing import Array, ArrayLike, Float, PRNGKeyArray

LOSSES = ("half_mean", "sum")


@x64
def check_widths(widths: Iterable[int]) -> tuple[int, ...]:
    """(d_0, …, d_L) as a tuple of positive ints, L ≥ 1."""
    widths = tuple(widths)
    if len(widths) < 2:
        raise EoslabError(f"widths must list at least the input and output sizes, got {widths!r}")
    return tuple(check_positive_int("width", w) for w in widths)


@x64
def widths_for(depth: int, width: int, d_in: int | None = None, d_out: int | None = None) -> tuple[int, ...]:
    """Widths (d_in, width, …, width, d_out) of a depth-``depth`` network (d_in, d_out default
    to ``width``)."""
    depth, width = check_positive_int("depth", depth), check_positive_int("width", width)
    d_in = width if d_in is None else d_in
    d_out = width if d_out is None else d_out
    return check_widths((d_in,) + (width,) * (depth - 1) + (d_out,))


@x64
def product(params: tuple[Float[Array, "d_i d_prev"], ...]) -> Float[Array, "d_L d_0"]:
    """The end-to-end matrix W = W_L ⋯ W_1 (d_L, d_0) of θ = (W_1, …, W_L)."""
    W = params[0]
    for Wi in params[1:]:
        W = Wi @ W
    return W


@x64
def predict(params: tuple[Float[Array, "d_i d_prev"], ...], x: Float[Array, "n d_0"]) -> Float[Array, "n d_L"]:
    """Outputs (n, d_L) = X Wᵀ for inputs x (n, d_0)."""
    return x @ product(params).T


@x64
def normaliser(loss: str, n: int) -> float:
    if loss not in LOSSES:
        raise EoslabError(f"unknown linear-net loss {loss!r}; expected one of {LOSSES}")
    return 0.5 if loss == "sum" else float(n)


@x64
def init(key: PRNGKeyArray, widths: Iterable[int], scale: float = 1.0) -> tuple[Float[Array, "d_i d_prev"], ...]:
    """θ with i.i.d. N(0, scale²) entries, W_i (d_i, d_{i−1}); deterministic in ``key``."""
    widths = check_widths(widths)
    scale = check_positive("init scale", scale)
    keys = jax.random.split(key, len(widths) - 1)
    return tuple(scale * jax.random.normal(k, (widths[i + 1], widths[i]), jnp.float64)
                 for i, k in enumerate(keys))


@x64
def identity_data(d: int, target: float = 1.0) -> tuple[Float[Array, "d d"], Float[Array, "d d"]]:
    """Whitened data X = I_d (n = d examples) with targets Y = target·I_d (so W* = target·I).
    For d = 1 this is x = 1, y = target."""
    d = check_positive_int("dimension", d)
    eye = jnp.eye(d, dtype=jnp.float64)
    return eye, float(target) * eye


@x64
def problem(x: Float[ArrayLike, "n d_0"], y: Float[ArrayLike, "n d_L"],
            params0: tuple[Float[ArrayLike, "d_i d_prev"], ...], loss: str = "half_mean") -> Problem:
    """The network as a :class:`Problem`; x (n, d_0), y (n, d_L), θ₀ a tuple of matrices."""
    x, y = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise EoslabError(f"x must be (n, d_in) and y (n, d_out) with the same n; got {x.shape}, {y.shape}")
    params0 = tuple(jnp.asarray(w, jnp.float64) for w in params0)
    shapes = [w.shape for w in params0]
    widths = (x.shape[1],) + tuple(s[0] for s in shapes)
    if any(s != (widths[i + 1], widths[i]) for i, s in enumerate(shapes)) or widths[-1] != y.shape[1]:
        raise EoslabError(f"weight shapes {shapes} do not chain from d_in = {x.shape[1]} to d_out = {y.shape[1]}")
    return Problem.from_model(predict, params0, x, y, "mse", norm=normaliser(loss, x.shape[0]))


@x64
def scalar_problem(depth: int = 2, params0: tuple[Float[ArrayLike, "1 1"], ...] | None = None, target: float = 1.0) -> Problem:
    """L = ½(w_L ⋯ w_1 − target)² (widths all 1, x = 1, ``"half_mean"``); θ₀ defaults to 0.5 each."""
    depth = check_positive_int("depth", depth)
    if params0 is None:
        params0 = tuple(jnp.full((1, 1), 0.5) for _ in range(depth))
    x, y = identity_data(1, target)
    return problem(x, y, params0, "half_mean")


@x64
def identity_problem(key: PRNGKeyArray, depth: int, width: int, loss: str = "half_mean", target: float = 1.0) -> Problem:
    """Widths (width, …, width), whitened data X = I (n = width examples), targets Y = target·I,
    θ₀ = :func:`init` from ``key``. depth 2, width 1: L = ½(uv − target)²."""
    x, y = identity_data(width, target)
    widths = widths_for(depth, width)
    return problem(x, y, init(key, widths), loss)
