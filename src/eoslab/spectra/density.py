"""Trace and spectral density of a symmetric operator (Hessian, Gauss-Newton, NTK), matrix-free.

Trace. Hutchinson's estimator with Rademacher probes z: ``tr A ≈ (1/m) Σ zᵀAz``, standard error
the sample standard deviation over √m. Hutch++ (Meyer, Musco, Musco & Woodruff, "Hutch++: optimal
stochastic trace estimation", SOSA 2021, Algorithm 1) spends a third of its m products on a sketch
``Q = orth(A S)`` whose trace is taken exactly, ``tr(QᵀAQ)`` (a third more), and the last third on
Hutchinson's estimator of the deflated rest ``(I − QQᵀ) A (I − QQᵀ)``; for operators with a few
large eigenvalues (a network's Hessian) its variance is far smaller. Its standard error is that of
the deflated Hutchinson part (the sketch part is exact given Q).

Spectral density. Stochastic Lanczos quadrature (Ubaru, Chen & Saad, SIMAX 2017; as PyHessian's
``density``, Yao et al. 2020, §3.3): for each Rademacher probe v, m Lanczos steps from v/‖v‖ with
full reorthogonalisation give the tridiagonal T_m; its eigenvalues θ_j are the *nodes* and the
squared first components τ_j² of its eigenvectors the *weights* of a Gauss quadrature with
``Σ_j τ_j² p(θ_j) = vᵀ p(A) v / ‖v‖²`` exactly for every polynomial p of degree ≤ 2m − 1. The
average over probes of ``Σ_j τ_j² δ(x − θ_j)`` estimates the spectral density normalised to one
(multiply by n for eigenvalue counts); :func:`density_on_grid` smooths it with a Gaussian.

All estimators take ``matvec: (n,) -> (n,)`` and batch the probes with ``vmap``; the problem-level
:func:`trace` and :func:`density` pick the operator of a :class:`~eoslab.Problem` by name.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from eoslab._precision import follows
from eoslab.errors import EoslabError, check_positive_int
from eoslab.problem import Params, Problem
from eoslab.spectra.lanczos import orthogonalize
from eoslab.spectra.operators import OPERATORS, operator
from eoslab.typing import Array, DTypeLike, Float, Matvec, PRNGKeyArray


class TraceEstimate(NamedTuple):
    """A stochastic trace estimate: ``value``, its ``stderr`` and the products spent (int)."""
    value: jax.Array
    stderr: jax.Array
    n_products: int


class SpectralDensity(NamedTuple):
    """Stochastic Lanczos quadrature: ``nodes`` and ``weights`` (probes, steps); each probe's
    weights sum to 1. The density estimate is the mean over probes of Σ_j w_j δ(x − node_j)."""
    nodes: jax.Array
    weights: jax.Array


def rademacher(key: PRNGKeyArray, shape: tuple[int, ...], dtype: DTypeLike = jnp.float64) -> Float[Array, "..."]:
    """±1 entries with equal probability (the probes of every estimator here)."""
    return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0).astype(dtype)


def _check_key(key):
    if key is None:
        raise EoslabError("an explicit PRNG key is needed (key=jax.random.PRNGKey(seed))")


def hutchinson(matvec: Matvec, dim: int, key: PRNGKeyArray, num_probes: int = 100,
               dtype: DTypeLike = jnp.float64) -> TraceEstimate:
    """Hutchinson's estimate of ``tr A`` from ``num_probes`` Rademacher probes (products)."""
    _check_key(key)
    m = check_positive_int("num_probes", num_probes)
    if m < 2:
        raise EoslabError("num_probes must be ≥ 2 for a standard error")
    Z = rademacher(key, (m, dim), dtype)
    q = jnp.sum(Z * jax.vmap(matvec)(Z), axis=1)
    return TraceEstimate(jnp.mean(q), jnp.std(q, ddof=1) / jnp.sqrt(m), m)


def hutchpp(matvec: Matvec, dim: int, key: PRNGKeyArray, num_products: int = 99,
            dtype: DTypeLike = jnp.float64) -> TraceEstimate:
    """Hutch++ estimate of ``tr A`` from ``num_products`` products (a multiple of 3 is used:
    ``s = num_products // 3`` sketch vectors, s products for the sketch's trace, s probes)."""
    _check_key(key)
    s = check_positive_int("num_products", num_products) // 3
    if s < 2:
        raise EoslabError("num_products must be ≥ 6 for Hutch++ with a standard error")
    s = min(s, dim)
    k1, k2 = jax.random.split(key)
    S = rademacher(k1, (s, dim), dtype)
    Q = jnp.linalg.qr(jax.vmap(matvec)(S).T)[0].T            # (s, n) orthonormal rows
    exact = jnp.sum(Q * jax.vmap(matvec)(Q))
    G = rademacher(k2, (s, dim), dtype)
    G = G - (G @ Q.T) @ Q                                      # (I − QQᵀ) g
    q = jnp.sum(G * jax.vmap(matvec)(G), axis=1)
    return TraceEstimate(exact + jnp.mean(q), jnp.std(q, ddof=1) / jnp.sqrt(s), 3 * s)


def lanczos_tridiagonal(matvec: Matvec, v0: Float[Array, " n"], num_steps: int
                        ) -> tuple[Float[Array, " m"], Float[Array, " m-1"]]:
    """``(alpha (m,), beta (m − 1,))`` of m Lanczos steps from v0/‖v0‖ (full reorthogonalisation).

    At a breakdown (an invariant subspace was found) β is set to 0 and the iteration goes on
    from a vector orthogonal to the Krylov space, which leaves the quadrature of v0 exact
    (the later block has zero first components); past the dimension the rows are zero."""
    n = v0.shape[0]
    m = int(num_steps)
    dtype = v0.dtype
    tiny = 100 * jnp.finfo(dtype).eps
    V = jnp.zeros((m, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))

    def body(i, carry):
        V, alpha, beta = carry
        w = matvec(V[i])
        a = V[i] @ w
        w = orthogonalize(w, V)
        b = jnp.linalg.norm(w)
        broke = b <= tiny * (jnp.abs(a) + 1.0)
        alt = orthogonalize(jnp.sin(jnp.arange(n, dtype=dtype) * (1.0 + i) + 0.5), V)
        na = jnp.linalg.norm(alt)
        nxt = jnp.where(broke, alt / jnp.where(na > tiny, na, 1.0) * (na > tiny), w / jnp.where(broke, 1.0, b))
        V = jnp.where(i + 1 < m, V.at[jnp.minimum(i + 1, m - 1)].set(nxt), V)
        return V, alpha.at[i].set(a), beta.at[i].set(jnp.where(broke, 0.0, b))

    _, alpha, beta = jax.lax.fori_loop(0, m, body, (V, jnp.zeros(m, dtype), jnp.zeros(m, dtype)))
    return alpha, beta[:m - 1]


def slq(matvec: Matvec, dim: int, key: PRNGKeyArray, num_probes: int = 4, num_steps: int = 32,
        dtype: DTypeLike = jnp.float64) -> SpectralDensity:
    """Stochastic Lanczos quadrature: ``num_probes`` Rademacher probes, ``num_steps`` Lanczos
    steps each (``num_probes · num_steps`` products, batched over the probes)."""
    _check_key(key)
    nv = check_positive_int("num_probes", num_probes)
    m = check_positive_int("num_steps", num_steps)
    Z = rademacher(key, (nv, dim), dtype)
    alpha, beta = jax.vmap(lambda z: lanczos_tridiagonal(matvec, z, m))(Z)
    T = jax.vmap(lambda a, b: jnp.diag(a) + jnp.diag(b, 1) + jnp.diag(b, -1))(alpha, beta)
    theta, S = jnp.linalg.eigh(T)
    return SpectralDensity(theta, S[:, 0, :] ** 2)


def quadrature_moments(density: SpectralDensity, order: int) -> jax.Array:
    """(probes, order + 1): ``Σ_j w_j θ_j^p`` for p = 0 … order, each probe's estimate of
    ``tr(A^p)/n`` (exact ``vᵀA^pv/‖v‖²`` for p ≤ 2·steps − 1)."""
    p = jnp.arange(order + 1)
    return jnp.sum(density.weights[..., None] * density.nodes[..., None] ** p, axis=1)


def density_on_grid(density: SpectralDensity, grid: Float[Array, " G"], sigma: float) -> Float[Array, " G"]:
    """The density estimate smoothed by a Gaussian of width ``sigma`` on ``grid`` (G,):
    integrates to ≈ 1 over a grid covering the spectrum."""
    x = jnp.asarray(grid)[:, None]
    nodes, w = density.nodes.reshape(-1), density.weights.reshape(-1) / density.nodes.shape[0]
    g = jnp.exp(-0.5 * ((x - nodes[None, :]) / sigma) ** 2) / (sigma * jnp.sqrt(2 * jnp.pi))
    return g @ w


# ---- the operators of a Problem ------------------------------------------------------------

def _op(problem, params, which):
    if which not in OPERATORS:
        raise EoslabError(f"unknown operator {which!r}; expected one of {OPERATORS}")
    mv, dim = operator(problem, params, which)
    dtype = ravel_pytree(params)[0].dtype
    return mv, dim, dtype


@follows("problem", "params")
@functools.partial(jax.jit, static_argnames=("which", "num_products", "method"))
def trace(problem: Problem, params: Params, which: str = "hessian", *, key: PRNGKeyArray, num_products: int = 99,
          method: str = "hutch++") -> TraceEstimate:
    """Trace of the operator ``which`` (see :data:`~eoslab.spectra.operators.OPERATORS`) of
    ``problem`` at ``params``: ``method`` ``"hutch++"`` (default) or ``"hutchinson"`` (jitted;
    ``which``, ``num_products`` and ``method`` are static)."""
    mv, dim, dtype = _op(problem, params, which)
    if method == "hutch++":
        return hutchpp(mv, dim, key, num_products, dtype)
    if method == "hutchinson":
        return hutchinson(mv, dim, key, num_products, dtype)
    raise EoslabError(f"unknown trace method {method!r}; expected 'hutch++' or 'hutchinson'")


@follows("problem", "params")
@functools.partial(jax.jit, static_argnames=("which", "num_probes", "num_steps"))
def density(problem: Problem, params: Params, which: str = "hessian", *, key: PRNGKeyArray, num_probes: int = 4,
            num_steps: int = 32) -> SpectralDensity:
    """Stochastic Lanczos quadrature of the operator ``which`` of ``problem`` at ``params``."""
    mv, dim, dtype = _op(problem, params, which)
    return slq(mv, dim, key, num_probes, min(num_steps, dim), dtype)
