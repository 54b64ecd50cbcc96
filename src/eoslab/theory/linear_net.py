"""Sharpness of the global minimisers of deep linear networks, and the step-size threshold.

Setting: :mod:`eoslab.models.linear_net`, loss L = Σᵢ‖yᵢ − W xᵢ‖² / (2·norm), W = W_L⋯W_1,
no bottleneck (every width ≥ rank W*). Derivations (docs/companions.md):

* The global minimisers are M = {θ : W(θ) = W*}, W* = YᵀX(XᵀX)⁻¹ (least squares). On M the
  residual term of the Hessian vanishes (it is ⟨R X, ∂²W⟩ and the normal equations give RᵀX = 0),
  so ∇²L = Gauss–Newton: the quadratic form is tr(δW Σ δWᵀ), Σ = XᵀX/norm, δW = Σᵢ A_i δW_i B_i
  (A_i = W_L⋯W_{i+1}, B_i = W_{i−1}⋯W_1).
* Scalar chain (all widths 1), any data: Σ = s, W* = p*. At w ∈ M the Hessian is s g gᵀ with
  g_i = p*/w_i, so λ_max = s p*² Σᵢ w_i⁻². By AM–GM under Πw_i = p*,
  **inf_M λ_max = s·L·|p*|^{2 − 2/L}**, attained at the balanced |w_i| = |p*|^{1/L}.
  ½(uv − 1)²: s = 1, L = 2, p* = 1 → inf λ_max = 2, threshold η = 1.
* Whitened matrix case (Σ = s·I): the balanced minimiser W_i = U_{i+1} Σ*^{1/L} U_iᵀ has
  λ_max = s·L·σ₁(W*)^{2−2/L} (all L layer perturbations along the top singular pair add up
  coherently); we use it as the infimum and check it against the numerical minimisation
  (:func:`inf_sharpness_numerical`) in the tests.
* Threshold: GD can converge (from a set of positive measure) only to minima with λ_max ≤ 2/η,
  so for η > η* = 2 / inf_M λ_max the convergent initialisations have measure zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from eoslab import progress
from eoslab.dynamics.convergence import convergence_sweep
from eoslab.errors import EoslabError, check_positive_int
from eoslab.models import linear_net
from eoslab.problem import Problem
from eoslab.spectra.dense import hessian_matrix
from eoslab._precision import x64
from eoslab.typing import PRNGKeyArray


@x64
def least_squares_target(x, y) -> jax.Array:
    """W* = Yᵀ X (XᵀX)⁻¹ (d_out, d_in) for x (n, d_in), y (n, d_out)."""
    return jnp.linalg.solve(x.T @ x, x.T @ y).T


@x64
def minimum_loss(problem: Problem) -> float:
    """L at the global minimisers (0 when the data are realisable)."""
    W = least_squares_target(problem.data, problem.targets)
    return float(problem.loss_from_outputs(problem.data @ W.T))


@x64
def input_covariance(problem: Problem) -> jax.Array:
    """Σ = XᵀX / norm (d_in, d_in): the loss is ½ tr((W − W*) Σ (W − W*)ᵀ) + const."""
    return problem.data.T @ problem.data / problem.normaliser


def _widths(problem: Problem) -> tuple[int, ...]:
    return (problem.data.shape[1],) + tuple(w.shape[0] for w in problem.params)


@x64
def inf_sharpness_closed_form(problem: Problem) -> float | None:
    """inf over the global minimisers of λ_max(∇²L) = s·L·σ₁(W*)^{2−2/L} when Σ = s·I (whitened
    inputs, always true for d_in = 1) and no layer is narrower than rank W*; else ``None``."""
    sigma = input_covariance(problem)
    s = float(sigma[0, 0])
    if not np.allclose(np.asarray(sigma), s * np.eye(sigma.shape[0]), rtol=1e-10, atol=1e-12 * abs(s)):
        return None
    W = least_squares_target(problem.data, problem.targets)
    sv = np.linalg.svd(np.asarray(W), compute_uv=False)
    rank = int(np.sum(sv > 1e-12 * max(sv[0], 1e-300)))
    depth = len(problem.params)
    if min(_widths(problem)) < rank or rank == 0:
        return None
    return s * depth * float(sv[0]) ** (2.0 - 2.0 / depth)


@x64
def balanced_minimiser(problem: Problem) -> tuple[jax.Array, ...]:
    """A balanced global minimiser W_i = U_{i+1} S^{1/L} U_iᵀ (U_{L+1} = U, U_1 = V of W* = U S Vᵀ),
    hidden widths ≥ rank W*; the extra hidden units are zero."""
    W = np.asarray(least_squares_target(problem.data, problem.targets))
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    r, depth, widths = S.size, len(problem.params), _widths(problem)
    root = np.diag(S ** (1.0 / depth))
    frames = [Vt.T] + [np.eye(w, r) for w in widths[1:-1]] + [U]   # (d_i, r) orthonormal columns
    return tuple(jnp.asarray(frames[i + 1] @ root @ frames[i].T) for i in range(depth))


def _chart(problem: Problem, W_star, free):
    """θ(free) = (W_1, …, W_{L−1}, W* B⁺), B = W_{L−1}⋯W_1: a point of M whenever B has full
    column rank (needs every hidden width ≥ d_in). ``free`` is the flat (W_1, …, W_{L−1})."""
    mats, i = [], 0
    for w in problem.params[:-1]:
        mats.append(free[i:i + w.size].reshape(w.shape))
        i += w.size
    return tuple(mats) + (W_star @ jnp.linalg.pinv(linear_net.product(mats)),)


@jax.jit
def _soft_max_eig(problem: Problem, W_star, free, tau):
    """(τ·log Σ exp(λ_i/τ), its gradient in ``free``, λ_max) of the Hessian at θ(free)."""
    def soft(f):
        lam = jnp.linalg.eigvalsh(hessian_matrix(problem, _chart(problem, W_star, f)))
        return tau * jax.nn.logsumexp(lam / tau), lam[-1]

    (val, top), g = jax.value_and_grad(soft, has_aux=True)(free)
    return val, g, top


@x64
def sharpness(problem: Problem, params) -> jax.Array:
    """λ_max(∇²L(θ)) (dense, small P)."""
    return jnp.linalg.eigvalsh(hessian_matrix(problem, params))[-1]


@x64
def inf_sharpness_numerical(problem: Problem, key, restarts: int = 4, temperatures=(1e-2, 1e-4)):
    """Minimise λ_max(∇²L) over the manifold of global minimisers numerically.

    Parametrises M by the chart of :func:`_chart` (free W_1 … W_{L−1}) and minimises the smooth
    soft-max τ·log Σ exp(λ_i/τ) of the Hessian eigenvalues with L-BFGS (SciPy, at the edge) for
    decreasing τ (relative to the current λ_max), from ``restarts`` random points drawn from the
    PRNG ``key``. Returns
    ``(value, params)``: the smallest true λ_max found (an upper bound on the infimum) and where.
    """
    from scipy.optimize import minimize

    widths = _widths(problem)
    if any(w < widths[0] for w in widths[1:-1]):
        raise EoslabError("the numerical infimum needs every hidden width ≥ d_in (chart of the minimisers)")
    W_star = least_squares_target(problem.data, problem.targets)
    if len(problem.params) == 1:
        return float(sharpness(problem, (W_star,))), (W_star,)
    n = sum(w.size for w in problem.params[:-1])
    best, best_f = np.inf, None
    for k in jax.random.split(key, restarts):
        f = np.asarray(jax.random.normal(k, (n,), jnp.float64))
        for t in temperatures:
            tau = t * float(_soft_max_eig(problem, W_star, jnp.asarray(f), 1.0)[2])
            fun = lambda z: tuple(np.asarray(a, np.float64) for a in _soft_max_eig(problem, W_star, jnp.asarray(z), tau)[:2])
            f = minimize(fun, f, jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
        val = float(_soft_max_eig(problem, W_star, jnp.asarray(f), 1.0)[2])
        if np.isfinite(val) and val < best:
            best, best_f = val, f
    return best, _chart(problem, W_star, jnp.asarray(best_f))


@x64
def inf_sharpness(problem: Problem, key: PRNGKeyArray | None = None) -> tuple[float, str]:
    """``(inf_M λ_max, method)``: the closed form when it applies, else the numerical minimum
    (which needs the PRNG ``key`` of its restarts)."""
    closed = inf_sharpness_closed_form(problem)
    if closed is not None:
        return closed, "closed_form"
    if key is None:
        raise EoslabError("no closed form for this network's inf λ_max: the numerical minimum needs a PRNG key")
    return inf_sharpness_numerical(problem, key)[0], "numerical"


@x64
def threshold(inf_lambda: float) -> float:
    """η* = 2 / inf_M λ_max: beyond it GD converges from a null set of initialisations only."""
    return 2.0 / inf_lambda


@x64
def gd_map_det(problem: Problem, params, lr) -> jax.Array:
    """det(I − η∇²L(θ)): the Jacobian determinant of the GD map θ ↦ θ − η∇L(θ)."""
    H = hessian_matrix(problem, params)
    return jnp.linalg.det(jnp.eye(H.shape[0]) - lr * H)


@x64
def threshold_comparison(problem, lrs, inits: int = 1000, steps: int = 2000, init_scale: float = 0.5,
                           seed: int = 0, grad_tol: float = 1e-6, sharpness_rtol: float = 1e-3,
                           track_det: bool = True) -> dict:
    """The convergence fraction over a grid of step sizes, next to the threshold 2 / inf_M λ_max.

    ``inits`` initialisations with i.i.d. N(0, init_scale²) weights (one ``vmap`` over lrs × inits),
    drawn from ``seed``; when inf λ_max has no closed form, the restarts of its numerical
    minimum use ``fold_in(PRNGKey(seed), 1)`` (the threshold is a property of the problem:
    the restarts only have to find the minimum).
    Returns a JSON-ready dict (see docs/companions.md for the keys).
    """
    lrs = np.asarray(lrs, np.float64)
    inits = check_positive_int("inits", inits)
    widths = (problem.data.shape[1],) + tuple(w.shape[0] for w in problem.params)
    root = jax.random.PRNGKey(seed)
    keys = jax.random.split(root, inits)
    batch = jax.vmap(lambda k: linear_net.init(k, widths, init_scale))(keys)
    inf_lam, method = inf_sharpness(problem, jax.random.fold_in(root, 1))
    thr = threshold(inf_lam)
    kw = dict(grad_tol=grad_tol, loss_min=minimum_loss(problem), track_det=track_det)
    if not progress.active() or lrs.size == 1:
        out = convergence_sweep(problem, lrs, batch, steps, **kw)
    else:  # one step size at a time (one compilation), so that progress moves
        parts = []
        with progress.task(f"linear net, {inits:,} inits × {steps:,} steps", lrs.size, "step sizes") as bar:
            for i in range(lrs.size):
                parts.append(convergence_sweep(problem, lrs[i:i + 1], batch, steps, **kw))
                bar.advance(1)
        out = {k: (np.concatenate([np.asarray(q[k]) for q in parts]) if np.ndim(parts[0][k]) else parts[0][k])
               for k in parts[0]}
    conv = np.asarray(out["converged"])
    ratio = np.where(conv, lrs[:, None] * np.asarray(out["final_sharpness"]) / 2, np.nan)
    with np.errstate(all="ignore"):
        max_ratio = [float(np.nanmax(r)) if np.isfinite(r).any() else None for r in ratio]
    frac = conv.mean(axis=1)
    beyond = lrs > thr
    det = np.asarray(out["min_abs_det"])
    return {
        "model": "linear_net", "widths": list(widths), "depth": len(widths) - 1,
        "loss": "sum" if problem.normaliser == 0.5 else "half_mean",
        "inits": inits, "steps": int(out["steps"]), "init_scale": init_scale, "seed": seed,
        "grad_tol": grad_tol,
        "inf_sharpness": inf_lam, "threshold": thr, "threshold_method": method,
        "lr": lrs.tolist(),
        "converged_fraction": frac.tolist(),
        "at_minimum_fraction": np.asarray(out["at_minimum"]).mean(axis=1).tolist(),
        "diverged_fraction": np.asarray(out["diverged"]).mean(axis=1).tolist(),
        "max_final_sharpness_ratio": max_ratio,
        "min_abs_det": [float(np.nanmin(d)) if np.isfinite(d).any() else None for d in det],
        "min_abs_det_overall": float(np.nanmin(det)) if np.isfinite(det).any() else None,
        "max_fraction_beyond_threshold": float(frac[beyond].max()) if beyond.any() else None,
        "sharpness_bound_holds": bool(all(r is None or r <= 1 + sharpness_rtol for r in max_ratio)),
        "sharpness_rtol": sharpness_rtol,
    }
