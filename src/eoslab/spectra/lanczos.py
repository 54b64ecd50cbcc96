"""Lanczos with full reorthogonalisation, jittable (fixed number of iterations).

Returns the largest *algebraic* Ritz values, their Ritz vectors and the residual norms
``‖A v − θ v‖ = |β_m s_{m,i}|``, which bound the distance from each Ritz value to the
spectrum of A (for symmetric A).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from eoslab.typing import Array, DTypeLike, Float, Matvec


def orthogonalize(w: Float[Array, " n"], V: Float[Array, "m n"]) -> Float[Array, " n"]:
    """``w`` (n,) minus its projection on the rows of ``V`` (m, n), assumed orthonormal or zero:
    two passes of classical Gram-Schmidt ("twice is enough" in floating point)."""
    w = w - (V @ w) @ V        # (c @ V, not Vᵀ @ c: no transposed copy of V)
    return w - (V @ w) @ V


def fixed_start(n: int, dtype: DTypeLike = jnp.float64, i: int = 0) -> Float[Array, " n"]:
    """A deterministic unit vector of Rⁿ: ``sin((1 + i)·j + 1/2)``, j = 0 … n−1, normalised.

    The start of a Lanczos run that has no better guess (the first step of a warm-started
    trajectory) and the restart after a breakdown: no randomness, so a run needs no key and
    is the same every time. No entry is zero (π is irrational), so it is orthogonal to no
    coordinate axis; like any fixed vector it is orthogonal to the eigenvectors of only a
    null set of operators. ``i`` selects one of a family of such vectors."""
    v = jnp.sin((1.0 + i) * jnp.arange(n, dtype=dtype) + 0.5)
    return v / jnp.linalg.norm(v)


class LanczosResult(NamedTuple):
    values: Float[Array, " k"]      # largest Ritz values, descending
    vectors: Float[Array, "k n"]    # unit Ritz vectors
    residuals: Float[Array, " k"]   # ‖A v − θ v‖


def lanczos(matvec: Matvec, v0: Float[Array, " n"], num_iters: int, k: int = 1) -> LanczosResult:
    """Top-k eigenpairs of the symmetric operator ``matvec`` on R^n, ``num_iters`` products.

    Args:
      matvec: ``(n,) -> (n,)``, symmetric.
      v0: start vector (n,) (e.g. the previous step's top eigenvector: a warm start).
      num_iters: number of matvecs m (capped at n; with m = n the result is exact).
      k: number of eigenpairs (≤ m).

    After an (exact) invariant subspace is found the run restarts from :func:`fixed_start`
    orthogonalised against the Krylov space (deterministic: no key); the start vector ``v0``
    is the caller's.
    """
    n = v0.shape[0]
    m = min(int(num_iters), n)
    k = min(int(k), m)
    dtype = v0.dtype
    tiny = jnp.finfo(dtype).eps * 100

    v = v0 / jnp.linalg.norm(v0)
    V = jnp.zeros((m, n), dtype).at[0].set(v)
    alpha = jnp.zeros(m, dtype)
    beta = jnp.zeros(m, dtype)  # beta[i] couples i and i+1

    def body(i, carry):
        V, alpha, beta = carry
        vi = V[i]
        w = matvec(vi)
        a = vi @ w
        w = orthogonalize(w, V)
        b = jnp.linalg.norm(w)
        # Breakdown: an invariant subspace was found; restart from a fixed vector made
        # orthogonal to it and decouple the tridiagonal matrix there (β = 0), which stays exact.
        r = orthogonalize(fixed_start(n, dtype, i + 1), V)
        broke = b <= tiny * (jnp.abs(a) + 1.0)
        nxt = jnp.where(broke, r / jnp.linalg.norm(r), w / jnp.where(broke, 1.0, b))
        b = jnp.where(broke, 0.0, b)
        V = jnp.where(i + 1 < m, V.at[jnp.minimum(i + 1, m - 1)].set(nxt), V)
        return V, alpha.at[i].set(a), beta.at[i].set(b)

    V, alpha, beta = jax.lax.fori_loop(0, m, body, (V, alpha, beta))
    T = jnp.diag(alpha) + jnp.diag(beta[: m - 1], 1) + jnp.diag(beta[: m - 1], -1)
    theta, S = jnp.linalg.eigh(T)
    theta, S = theta[::-1][:k], S[:, ::-1][:, :k]
    vecs = S.T @ V
    res = jnp.abs(beta[m - 1] * S[m - 1, :])
    return LanczosResult(theta, vecs, res)
