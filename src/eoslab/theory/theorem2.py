"""Theorem 2: the top NTK eigenvalue of a random second-order model sharpens at initialisation.

Setting (see ``docs/theorem2.md`` for the derivation). ``z`` (D,), ``J`` (D, P) and the
curvature tensor ``Q`` (D, P, P) are independent, with i.i.d. entries of variance ``σ_z²``,
``σ_J²`` and ``σ_q²`` (each ``Q_α = σ_q (A + Aᵀ)/√2`` is a GOE matrix: off-diagonal variance
``σ_q²``). ``λ`` is the top eigenvalue of ``K = J Jᵀ`` (unnormalised) with unit eigenvector
``u`` and ``v = Jᵀu``.

**Which time.** Dots are derivatives along the gradient flow ``dθ/dt = −∇L`` of the loss
``L = ‖z‖² / (2n)``. With ``g = Jᵀz/n`` and the loss Hessian ``H = (JᵀJ + Q(z))/n``::

    ż = −J g,    J̇ = −Q(g, ·),    ġ = −H g,    J̈ = Q(Hg, ·).

**Exact derivatives** (eigenvalue perturbation theory, λ simple)::

    λ̇ = uᵀK̇u = −2 vᵀQ(u) g
    λ̈ = uᵀK̈u + 2 Σ_{j≥2} (uᵀK̇u_j)² / (λ − λ_j)
       = 2 vᵀQ(u) Hg + 2 ‖Q(u) g‖² + 2 Σ_{j≥2} c_j² / (λ − λ_j),   c = −Uᵀ(J Q(u)g + w),

with ``Q(c) = Σ_α c_α Q_α`` (P, P) and ``w_α = vᵀQ_α g`` (D,). Only four contractions of Q
enter: ``Q(u)g``, ``Q(u)v``, ``Q(z)g`` and ``w``.

**Exact conditional expectation** (over Q and z, given J; sum over all D eigenvalues of K,
zeros included)::

    E[λ̈ | J] = (2 σ_q² σ_z² / n²) · F(spec K),
    F = (P+1)(λ + tr K) + Σ_{j≥2} [(λ + λ_j) tr K + λ_j² + λ²] / (λ − λ_j),     E[λ̇ | J] = 0.

As D, P → ∞ at fixed D/P, ``F / λ → D·P``, so ``E[λ̈]/E[λ] → 2 D P σ_q² σ_z² / n²``.
The theorem's identity ``E[λ̈]/E[λ] = σ_z²`` therefore holds for ``n = √(2DP)·σ_q``: that is
this module's default (:func:`theorem_norm`). The package's own loss ``‖z‖²/(2D)`` is the
same flow in the time ``t_D = τ·D/√(2DP)``.

**Sampling without Q.** Q is independent of (z, J) and orthogonally invariant, so the four
contractions are sampled exactly from two GOE matrices (Q along ``u`` and along the part of
``z`` orthogonal to ``u``) and one Gaussian vector: O(P²) numbers per sample instead of D·P².
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from eoslab import progress
from eoslab.errors import EoslabError, check_memory, check_positive, check_positive_int, scale
from eoslab.errors import check as check_rule
from eoslab.models.second_order import goe
from eoslab._precision import x64


class Moments(NamedTuple):
    """Per-sample values: λ, λ̇, λ̈ (each (samples,)) and E[λ̈ | J] (the Rao-Blackwellised
    value, same shape), in the time of the loss ``‖z‖²/(2·norm)``."""

    lam: jax.Array
    lam_dot: jax.Array
    lam_ddot: jax.Array
    cond_lam_ddot: jax.Array


@x64
def theorem_norm(D: int, P: int, sigma_q: float = 1.0) -> float:
    """The loss normaliser ``n = √(2DP)·σ_q`` under which the asymptotic ratio is σ_z²."""
    return math.sqrt(2.0 * D * P) * sigma_q


@x64
def asymptotic_ratio(D: int, P: int, sigma_z: float, sigma_q: float = 1.0, norm: float | None = None) -> float:
    """The D, P → ∞ limit of E[λ̈]/E[λ] at fixed D/P: ``2 D P σ_q² σ_z² / n²`` (σ_z² for the default n)."""
    n = theorem_norm(D, P, sigma_q) if norm is None else norm
    return 2.0 * D * P * sigma_q**2 * sigma_z**2 / n**2


def _spectrum(J):
    """Spectrum of K = J Jᵀ: all D eigenvalues, descending (the D − P zeros included when
    D > P), and the eigenvectors of the r = min(D, P) largest as columns (D, r). Works on the
    smaller Gram matrix, so the cost is O(min(D, P)³)."""
    D, P = J.shape
    if D <= P:
        evals, U = jnp.linalg.eigh(J @ J.T)
        return evals[::-1], U[:, ::-1]
    evals, V = jnp.linalg.eigh(J.T @ J)
    evals, V = evals[::-1], V[:, ::-1]
    U = (J @ V) / jnp.sqrt(jnp.maximum(evals, jnp.finfo(evals.dtype).tiny))
    return jnp.concatenate([evals, jnp.zeros(D - P, evals.dtype)]), U


@x64
def conditional_expectation(evals: jax.Array, P: int, sigma_z: float, sigma_q: float, norm: float) -> jax.Array:
    """E[λ̈ | J] from the full spectrum ``evals`` (D,) of K = J Jᵀ, descending (zeros included)."""
    lam, rest = evals[0], evals[1:]
    tr = jnp.sum(evals)
    F = (P + 1) * (lam + tr) + jnp.sum(((lam + rest) * tr + rest**2 + lam**2) / (lam - rest))
    return 2.0 * sigma_q**2 * sigma_z**2 / norm**2 * F


def _from_contractions(z, J, evals, U, Qu_g, Qu_v, Qz_g, w, norm):
    """(λ, λ̇, λ̈) from the spectrum of K and the four contractions of Q (see module doc)."""
    lam, u = evals[0], U[:, 0]
    v = J.T @ u
    g = J.T @ z / norm
    lam_dot = -2.0 * (v @ Qu_g)
    Hg = (J.T @ (J @ g) + Qz_g) / norm
    c = -(J @ Qu_g + w)  # (D,): c_j = uᵀK̇u_j = u_jᵀc
    cu = U.T @ c
    r = U.shape[1]
    # Directions of the null space of K (when D > P) all have λ_j = 0.
    null = (c @ c - cu @ cu) / lam
    gap_sum = jnp.sum(cu[1:] ** 2 / (lam - evals[1:r])) + null
    lam_ddot = 2.0 * (Qu_v @ Hg) + 2.0 * (Qu_g @ Qu_g) + 2.0 * gap_sum
    return lam, lam_dot, lam_ddot


@x64
def derivatives(z: jax.Array, J: jax.Array, Q: jax.Array, norm: float):
    """Exact ``(λ, λ̇, λ̈)`` of the top eigenvalue of ``J Jᵀ`` at the state (z (D,), J (D, P)) of a
    model with curvature ``Q`` (D, P, P), along the gradient flow of ``‖z‖²/(2·norm)``."""
    evals, U = _spectrum(J)
    u = U[:, 0]
    g = J.T @ z / norm
    Qu = jnp.einsum("a,apq->pq", u, Q)
    Qg = jnp.einsum("apq,q->ap", Q, g)  # (D, P): rows Q_α g
    w = Qg @ (J.T @ u)
    return _from_contractions(z, J, evals, U, Qu @ g, Qu @ (J.T @ u), z @ Qg, w, norm)


def _sample(key, D: int, P: int, sigma_z, sigma_j, sigma_q, norm, dtype):
    """One exact draw of (λ, λ̇, λ̈, E[λ̈|J]) at initialisation without materialising Q."""
    kj, key = jax.random.split(key)
    J = sigma_j * jax.random.normal(kj, (D, P), dtype)
    return sample_given_jacobian(key, J, sigma_z, sigma_q, norm)


@x64
def sample_given_jacobian(key, J: jax.Array, sigma_z: float, sigma_q: float, norm: float):
    """One exact draw of (λ, λ̇, λ̈, E[λ̈|J]) over z and Q for a fixed Jacobian J (D, P)."""
    D, P = J.shape
    dtype = J.dtype
    kz, k1, k2, kx = jax.random.split(key, 4)
    z = sigma_z * jax.random.normal(kz, (D,), dtype)
    evals, U = _spectrum(J)
    u = U[:, 0]
    v, g = J.T @ u, J.T @ z / norm
    # Orthonormal data-space frame (u, e2, rest) with z ∈ span(u, e2): rotated Q_b are again
    # i.i.d. GOE, Q(u) = Q̃₁ and Q(z) = (u·z) Q̃₁ + ‖z⊥‖ Q̃₂.
    zu = u @ z
    zp = z - zu * u
    nz = jnp.linalg.norm(zp)
    e2 = zp / jnp.where(nz > 0, nz, 1.0)
    Q1, Q2 = goe(k1, P, sigma_q, dtype=dtype), goe(k2, P, sigma_q, dtype=dtype)
    Q1g, Q2g = Q1 @ g, Q2 @ g
    # w_α = vᵀQ_α g: exact along u and e2; along the other D−2 directions the v,g-contractions
    # of independent GOE matrices are i.i.d. N(0, σ_q²(‖v‖²‖g‖² + (v·g)²)).
    sig_w = sigma_q * jnp.sqrt((v @ v) * (g @ g) + (v @ g) ** 2)
    xi = jax.random.normal(kx, (D,), dtype)
    xi = xi - u * (u @ xi) - e2 * (e2 @ xi)
    w = u * (v @ Q1g) + e2 * (v @ Q2g) + sig_w * xi
    lam, lam_dot, lam_ddot = _from_contractions(z, J, evals, U, Q1g, Q1 @ v, zu * Q1g + nz * Q2g, w, norm)
    return lam, lam_dot, lam_ddot, conditional_expectation(evals, P, sigma_z, sigma_q, norm)


@x64
def memory_bytes(D: int, P: int, chunk: int = 1) -> float:
    """Estimated peak memory (bytes) of :func:`sample_moments`: per draw in a chunk, J (D, P),
    two GOE matrices (P, P), the Gram matrix and its eigenvectors (min(D, P)²), float64, with
    a factor 3 for XLA's temporaries."""
    r = min(D, P)
    return 3.0 * 8 * chunk * (D * P + 2.0 * P * P + 2.0 * r * r + 4.0 * (D + P))


def _check(D, P, samples, chunk):
    for name, val in (("D", D), ("P", P), ("samples", samples), ("chunk", chunk)):
        check_positive_int(name, val)
    if D < 2:
        raise EoslabError(f"D must be at least 2 (λ̈ involves the gap to the second eigenvalue), got {D}")
    if samples < 2:
        raise EoslabError(f"samples must be at least 2 (a standard error needs two draws), got {samples}")
    check_memory(f"D = {D:,}, P = {P:,}", memory_bytes(D, P, min(chunk, samples)))
    check_memory(f"samples = {samples:,}", samples_bytes(samples))


def samples_bytes(samples: int) -> float:
    """Bytes the draws' keys and their four (samples,) moments take (with the chunks' copy)."""
    return 96.0 * samples


@x64
def sample_moments(key, D: int, P: int, sigma_z: float = 1.0, sigma_j: float = 1.0, sigma_q: float = 1.0,
                   samples: int = 500, norm: float | None = None, chunk: int = 1,
                   dtype=jnp.float64) -> Moments:
    """Monte Carlo draws over random initialisations (Gaussian ensembles).

    ``samples`` independent draws, ``vmap``-ped in chunks of ``chunk`` inside one
    ``lax.map`` (memory O(chunk·P²)). The default ``chunk=1`` is deliberate: on CPU a
    ``vmap``-ped ``eigh`` (the dominant cost) was measured 3× slower than a sequential map. ``norm`` defaults to :func:`theorem_norm`.
    Deterministic in ``key``.
    """
    _check(D, P, samples, chunk)
    for name, val in (("sigma_z", sigma_z), ("sigma_j", sigma_j), ("sigma_q", sigma_q)):
        check_positive(name, val)
        check_rule(name, val, scale)
    n = theorem_norm(D, P, sigma_q) if norm is None else check_positive("norm", norm)
    chunk = min(chunk, samples)
    nchunks = -(-samples // chunk)
    keys = jax.random.split(key, nchunks * chunk).reshape(nchunks, chunk, -1)
    kw = dict(D=D, P=P, sigma_z=float(sigma_z), sigma_j=float(sigma_j), sigma_q=float(sigma_q), norm=float(n),
              dtype=dtype)
    # With a progress listener, the same draws are computed in ~20 blocks (each draw depends
    # only on its key, so the numbers do not change) and reported after each block.
    block = nchunks if not progress.active() else max(1, -(-nchunks // 20))
    parts = []
    with progress.task(f"Theorem 2 samples (D={D}, P={P})", samples, "samples") as bar:
        for i in range(0, nchunks, block):
            parts.append(_run(keys[i:i + block], **kw))
            bar.update(min(samples, (i + block) * chunk))
    out = [jnp.concatenate([p[j] for p in parts]) if len(parts) > 1 else parts[0][j] for j in range(4)]
    return Moments(*(x.reshape(-1)[:samples] for x in out))


@functools.partial(jax.jit, static_argnames=("D", "P", "sigma_z", "sigma_j", "sigma_q", "norm", "dtype"))
def _run(keys, *, D, P, sigma_z, sigma_j, sigma_q, norm, dtype):
    one = lambda k: _sample(k, D, P, sigma_z, sigma_j, sigma_q, norm, dtype)
    return jax.lax.map(jax.vmap(one), keys)


def _stats(x):
    n = x.shape[0]
    return jnp.mean(x), jnp.std(x, ddof=1) / jnp.sqrt(n)


@x64
def ratio_with_stderr(num: jax.Array, den: jax.Array):
    """``mean(num)/mean(den)`` and its delta-method standard error from paired samples."""
    n = num.shape[0]
    mn, md = jnp.mean(num), jnp.mean(den)
    r = mn / md
    # Var(r) ≈ Var(num − r·den) / (n · md²): the delta method for a ratio of means.
    se = jnp.std(num - r * den, ddof=1) / (jnp.sqrt(n) * jnp.abs(md))
    return float(r), float(se)


@x64
def summarize(m: Moments, D: int, P: int, sigma_z: float, sigma_q: float = 1.0,
              norm: float | None = None) -> dict:
    """Means, standard errors and ratios of a :class:`Moments` batch.

    Keys: ``mean_lambda``, ``mean_lambda_dot``, ``mean_lambda_ddot`` (and ``*_stderr``),
    ``ratio`` = mean(λ̈)/mean(λ) with ``ratio_stderr`` (delta method), ``predicted_ratio``
    (the theorem's asymptotic value), ``finite_size_ratio`` = mean(E[λ̈|J])/mean(λ) with its
    stderr (the exact finite-D, P expectation, estimated over J only), and
    ``residual``/``residual_stderr`` = ratio − finite_size_ratio over the same draws (a
    control-variate comparison: its error is only the Q, z part of the noise).
    """
    out = {}
    for key, x in (("lambda", m.lam), ("lambda_dot", m.lam_dot), ("lambda_ddot", m.lam_ddot)):
        mu, se = _stats(x)
        out[f"mean_{key}"], out[f"mean_{key}_stderr"] = float(mu), float(se)
    out["ratio"], out["ratio_stderr"] = ratio_with_stderr(m.lam_ddot, m.lam)
    out["predicted_ratio"] = asymptotic_ratio(D, P, sigma_z, sigma_q, norm)
    out["finite_size_ratio"], out["finite_size_ratio_stderr"] = ratio_with_stderr(m.cond_lam_ddot, m.lam)
    out["residual"], out["residual_stderr"] = ratio_with_stderr(m.lam_ddot - m.cond_lam_ddot, m.lam)
    out["samples"] = int(m.lam.shape[0])
    return out


@x64
def check(key, D: int, P: int, sigma_z: float = 1.0, sigma_j: float = 1.0, sigma_q: float = 1.0,
          samples: int = 500, norm: float | None = None, chunk: int = 1) -> dict:
    """Monte Carlo check of Theorem 2: :func:`sample_moments` then :func:`summarize`."""
    m = sample_moments(key, D, P, sigma_z, sigma_j, sigma_q, samples, norm, chunk)
    return summarize(m, D, P, sigma_z, sigma_q, norm)


@x64
def scaling_table(key, sizes, ratios, sigma_zs, samples: int = 400, chunk: int = 1) -> list[dict]:
    """E[λ̈]/E[λ] over a grid: for each D/P in ``ratios``, each D in ``sizes`` (P = D/ratio)
    and each σ_z in ``sigma_zs``; one row per point with D, P, sigma_z and :func:`summarize`."""
    rows = []
    for r in ratios:
        check_positive("D/P ratio", r)
    for D in sizes:
        check_positive_int("size D", D)
    for sz in sigma_zs:
        check_positive("sigma_z", sz)
        check_rule("sigma_z", sz, scale)
    if not (len(ratios) and len(sizes) and len(sigma_zs)):
        raise EoslabError("scaling_table needs at least one size, one ratio and one sigma_z")
    for r in ratios:
        for D in sizes:
            _check(int(D), max(int(round(D / r)), 1), samples, chunk)
    with progress.task("Theorem 2 scaling grid", len(ratios) * len(sizes) * len(sigma_zs), "points") as bar:
        for i, r in enumerate(ratios):
            for j, D in enumerate(sizes):
                P = max(int(round(D / r)), 1)
                for k, sz in enumerate(sigma_zs):
                    sub = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, i), j), k)
                    row = check(sub, int(D), P, float(sz), samples=samples, chunk=chunk)
                    rows.append({"D": int(D), "P": P, "D_over_P": float(r), "sigma_z": float(sz), **row})
                    bar.advance(1)
    return rows
