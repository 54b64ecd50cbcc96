"""Dense matrices and their top eigenvalues (small P only)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from eoslab._precision import follows
from eoslab.problem import Params, Problem
from eoslab.typing import Array, Float


def top_eigvals(M: Float[Array, "n n"], k: int) -> Float[Array, " k"]:
    """The k largest *algebraic* eigenvalues of the symmetric matrix ``M`` (n, n), descending.

    Padded with NaN when k > n. 1×1 and 2×2 matrices use the closed form (it is exact,
    and much cheaper than ``eigh`` inside a ``vmap`` over 10⁵ trajectories).
    """
    n = M.shape[-1]
    if n == 1:
        ev = M[..., 0, :]
    elif n == 2:
        a, b, d = M[..., 0, 0], 0.5 * (M[..., 0, 1] + M[..., 1, 0]), M[..., 1, 1]
        mid, rad = 0.5 * (a + d), jnp.hypot(0.5 * (a - d), b)
        ev = jnp.stack([mid + rad, mid - rad], axis=-1)
    else:
        ev = jnp.linalg.eigvalsh(M)[..., ::-1]
    if k <= n:
        return ev[..., :k]
    pad = jnp.full(ev.shape[:-1] + (k - n,), jnp.nan, ev.dtype)
    return jnp.concatenate([ev, pad], axis=-1)


@follows("problem", "params")
def hessian_matrix(problem: Problem, params: Params | None = None) -> Float[Array, "P P"]:
    """The loss Hessian ∇²L(θ) as a dense (P, P) matrix (flattened parameters)."""
    flat, unravel = ravel_pytree(problem.params if params is None else params)
    return jax.hessian(lambda v: problem.loss_fn(unravel(v)))(flat)


@follows("problem", "params")
def jacobian_matrix(problem: Problem, params: Params | None = None) -> Float[Array, "N P"]:
    """J = ∂f/∂θ as a dense (N, P) matrix, N = number of scalar outputs (flattened)."""
    flat, unravel = ravel_pytree(problem.params if params is None else params)
    return jax.jacobian(lambda v: problem.predict(unravel(v)).reshape(-1))(flat)


@follows("problem", "params")
def ntk_matrix(problem: Problem, params: Params | None = None) -> Float[Array, "N N"]:
    """The NTK in the loss normalisation, ``K = J Jᵀ / norm`` (N, N), for MSE.

    With this scaling, linearised GD on the residuals is ``z' = (I − ηK) z``, so
    ``ηλ_max(K) = 2`` is the edge of stability, and K's non-zero eigenvalues equal those
    of the Gauss-Newton matrix ``JᵀJ / norm``. For cross-entropy ``K = J Jᵀ / n``.
    """
    J = jacobian_matrix(problem, params)
    return J @ J.T / problem.normaliser


@follows("problem", "params")
def gauss_newton_matrix(problem: Problem, params: Params | None = None) -> Float[Array, "P P"]:
    """The Gauss-Newton matrix ``Jᵀ (∂²L/∂f²) J`` (P, P)."""
    params = problem.params if params is None else params
    J = jacobian_matrix(problem, params)
    M = problem.output_hessian_weights(problem.predict(params))
    return J.T @ M @ J
