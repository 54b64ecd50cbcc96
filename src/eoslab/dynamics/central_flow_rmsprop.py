"""The central flow of RMSProp, one eigenvalue at the edge (Cohen et al., ICLR 2025, §5).

RMSProp (:func:`eoslab.dynamics.optim.rmsprop`): ν ← β₂ν + (1 − β₂)g², w ← w − η g/P with the
preconditioner P = √(ν + ε) (elementwise). Its edge is λ₁(P⁻¹H) = 2/η, the top eigenvalue of the
symmetric S̃ = λ₁(H̃), H̃ = P^{-1/2} H P^{-1/2}. With ũ its unit eigenvector, the oscillation is
along v = P^{-1/2}ũ (vᵀPv = 1) with variance σ², Σ = σ² vvᵀ, and averaging over it (time t in
steps) gives the flow of the pair (w, ν):

    dw/dt = −η P⁻¹ [∇L + ½σ² ∇_w(vᵀHv)],
    dν/dt = (1 − β₂) [(∇L)² + σ² (Hv)² − ν]       (E[g²] = (∇L)² + diag(HΣH) at leading order).

The sharpness moves through both: dS̃/dt = ∇_w(vᵀHv)·ẇ + ∂_νS̃·ν̇ with
∂S̃/∂ν_i = −½ S̃ ũ_i²/(ν_i + ε) (eigenvalue perturbation of H̃ under P^{-1/2} ↦ P^{-1/2} + dP^{-1/2}).
Both terms are affine in σ², dS̃/dt = a + bσ², and at the edge σ² = max(0, −a/b) keeps S̃ at 2/η
(b < 0: the self-stabilization ½σ²∇S plus the preconditioner's own reaction: σ²(Hv)² raises ν,
which lowers S̃ too). Frozen preconditioner (β₂ = 1) and ν + ε = 1 give P = I and exactly the
central flow of GD (:mod:`eoslab.dynamics.central_flow`). Numerics as there: Euler substeps, the
warm-started tracker (on v ↦ P^{-1/2}HP^{-1/2}v), a Baumgarte term holding the edge.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from eoslab import progress
from eoslab._precision import follows
from eoslab.dynamics import optim
from eoslab.dynamics.central_flow import FlatUnravel, FlowConfig  # one eigenvalue: the SDCP settings are unused
from eoslab.errors import EoslabError, check_positive, check_positive_int
from eoslab.problem import Problem
from eoslab.spectra import tracking
from eoslab.spectra.operators import hvp
from eoslab.spectra.third_order import sharpness_gradient
from eoslab.typing import Array, Float, Params, Scalar


def nu_sensitivity(value: Scalar, u: Float[Array, " P"], nu: Float[Array, " P"], eps: Scalar
                   ) -> Float[Array, " P"]:
    """∂S̃/∂ν (P,): the derivative of the simple eigenvalue ``value`` of P^{-1/2}HP^{-1/2}
    (unit eigenvector ``u``) in ν, P = √(ν + ε): −½ S̃ u_i² / (ν_i + ε)."""
    return -0.5 * value * u ** 2 / (nu + eps)


def rmsprop_velocity(problem: Problem, unravel: Callable, w: Float[Array, " P"], nu: Float[Array, " P"],
                     u: Float[Array, " P"], value: Scalar, lr: Scalar, beta2: Scalar, eps: Scalar,
                     cfg: FlowConfig) -> tuple[Float[Array, " P"], Float[Array, " P"], dict]:
    """(dw/dt, dν/dt, info) of the RMSProp central flow at (w, ν), with ``u``, ``value`` the top
    eigenpair of P^{-1/2}HP^{-1/2} (P = √(ν + ε))."""
    loss = lambda v: problem.loss_fn(unravel(v))
    L, g = jax.value_and_grad(loss)(w)
    P = jnp.sqrt(nu + eps)
    v = u / jnp.sqrt(P)
    _, gS = sharpness_gradient(loss, w, v)
    mv, _ = hvp(problem, unravel(w))
    Hv = mv(v)
    dnu = nu_sensitivity(value, u, nu, eps)
    edge = 2.0 / lr
    rate = cfg.stiffness * cfg.substeps
    a = -lr * gS @ (g / P) + (1 - beta2) * dnu @ (g ** 2 - nu) + rate * (value - edge)
    b = -0.5 * lr * gS @ (gS / P) + (1 - beta2) * dnu @ (Hv ** 2)
    active = value >= edge * (1.0 - cfg.edge_rtol)
    sigma2 = jnp.where(active & (b < 0), jnp.maximum(0.0, -a / jnp.where(b < 0, b, -1.0)), 0.0)
    d = g + 0.5 * sigma2 * gS
    dw = -lr * d / P
    dnu_dt = (1 - beta2) * (g ** 2 + sigma2 * Hv ** 2 - nu)
    return dw, dnu_dt, {"loss": L, "sigma2": sigma2, "n_active": active.astype(jnp.int32), "b": b}


def _pre_mv(problem, unravel, w, nu, eps):
    mv, _ = hvp(problem, unravel(w))
    s = (nu + eps) ** -0.25
    return lambda x: s * mv(s * x)


def _chunk_steps(problem, unravel, lr, beta2, eps, state, *, opt, cfg, length):
    loss = lambda v: problem.loss_fn(unravel(v))

    def sub(c, _):
        w, nu, st = c
        st, tr = tracking.track(_pre_mv(problem, unravel, w, nu, eps), st, tol=cfg.track_tol)
        dw, dn, info = rmsprop_velocity(problem, unravel, w, nu, tr.vectors[0], tr.values[0], lr, beta2, eps, cfg)
        h = 1.0 / cfg.substeps
        return (w + h * dw, nu + h * dn, st), dict(info, sharpness=tr.values[0])

    def sub_stable(c, _):
        w, nu = c
        g = jax.grad(loss)(w)
        h = 1.0 / cfg.substeps
        return (w - h * lr * g / jnp.sqrt(nu + eps), nu + h * (1 - beta2) * (g ** 2 - nu)), None

    def one(state, _):
        cf, sf, (w_d, s_d, st_d) = state
        w_before = cf[0]
        cf, infos = jax.lax.scan(sub, cf, None, length=cfg.substeps)
        rec = {k: v[0] for k, v in infos.items()}
        rec["avg_loss"] = rec["loss"] + rec["sigma2"] * rec["sharpness"] / 2    # L + ½⟨H, Σ⟩, vᵀHv = S̃
        L_d, g = jax.value_and_grad(loss)(w_d)
        upd, s_d = opt.update(g, s_d)
        st_d, tr_d = tracking.track(_pre_mv(problem, unravel, w_d, s_d.nu, eps), st_d, tol=1e-4)
        rec.update(opt_loss=L_d, opt_sharpness=tr_d.values[0], sf_loss=loss(sf[0]),
                   dist_opt_cf=jnp.linalg.norm(w_d - w_before), dist_opt_sf=jnp.linalg.norm(w_d - sf[0]))
        sf, _ = jax.lax.scan(sub_stable, sf, None, length=cfg.substeps)
        return (cf, sf, (w_d + upd, s_d, st_d)), rec

    return jax.lax.scan(one, state, None, length=length)


_chunk = jax.jit(_chunk_steps, static_argnames=("unravel", "opt", "cfg", "length"))


@follows("problem", "params0")
def run(problem: Problem, lr: float, steps: int, *, beta2: float = 0.99, eps: float = 1e-8,
        nu0: Float[Array, " P"] | None = None, substeps: int = 4, stiffness: float = 0.5,
        edge_rtol: float = 1e-3, track_tol: float = 1e-6, chunk: int = 50, seed: int = 0,
        params0: Params | None = None) -> dict:
    """The RMSProp central flow for ``steps`` steps, next to discrete RMSProp and the stable flow
    (the same ODE with σ² = 0), all from (θ₀, ν₀).

    Args:
      problem: any :class:`~eoslab.Problem`; θ₀ = ``params0`` or ``problem.params``.
      lr, beta2, eps: RMSProp's η, β₂ and ε (ε inside the root, as :func:`optim.rmsprop`).
      steps: optimizer steps (the flows run for the same time).
      nu0: ν at the start (P,) (flat, like ``ravel_pytree(θ₀)``); default ∇L(θ₀)², the state
        after one step from ν = 0 without its (1 − β₂) damping, so the run starts warm.
      substeps, stiffness, edge_rtol, track_tol, chunk, seed: as in
        :func:`eoslab.dynamics.central_flow.run`.

    Returns:
      dict of (steps,) arrays: ``loss``, ``avg_loss`` (L + ½σ²S̃), ``sharpness`` (λ₁(P⁻¹H) on the
      flow), ``sigma2``, ``n_active``, ``b``; discrete RMSProp ``opt_loss``, ``opt_sharpness``
      (λ₁(P_t⁻¹H) with the P of the step made); ``sf_loss``; ``dist_opt_cf``, ``dist_opt_sf``;
      final ``w_cf``, ``nu_cf``, ``w_opt``, ``seconds``.
    """
    check_positive("lr", lr)
    check_positive_int("steps", steps)
    check_positive("eps", eps)
    if not 0.0 < beta2 <= 1.0:
        raise EoslabError(f"beta2 must lie in (0, 1], got {beta2!r}")
    cfg = FlowConfig(check_positive_int("substeps", substeps), float(stiffness), float(edge_rtol),
                     float(track_tol))
    chunk = check_positive_int("chunk", chunk)
    params = problem.params if params0 is None else params0
    w0, _ = ravel_pytree(params)
    unravel = FlatUnravel.of(params)
    if nu0 is None:
        nu0 = jax.grad(lambda v: problem.loss_fn(unravel(v)))(w0) ** 2
    nu0 = jnp.asarray(nu0, w0.dtype)
    if nu0.shape != w0.shape:
        raise EoslabError(f"nu0 must have the parameters' flat shape {w0.shape}, got {nu0.shape}")
    P = w0.size
    key = jax.random.PRNGKey(seed)
    st = tracking.track_init(P, 1, key, w0.dtype, block=min(P, 2))
    # β₂ = 1 (a frozen preconditioner) is outside optim.rmsprop's [0, 1) but a valid state: the
    # numbers live in the state, the update reads them from there.
    opt = optim.rmsprop(lr, beta2 if beta2 < 1 else 0.0, eps)
    s_d = opt.init(w0)._replace(nu=nu0, beta2=jnp.asarray(beta2, w0.dtype))
    st_d = tracking.track_init(P, 1, jax.random.fold_in(key, 1), w0.dtype, block=min(P, 2))
    state = ((w0, nu0, st), (w0, nu0), (w0, s_d, st_d))
    args = [jnp.asarray(x, w0.dtype) for x in (lr, beta2, eps)]
    recs, done, t0 = [], 0, time.perf_counter()
    n = next((c for c in range(min(chunk, steps), max(1, chunk // 2) - 1, -1) if steps % c == 0), chunk)
    with progress.task("RMSProp central flow", total=steps) as bar:
        while done < steps:
            keep = min(n, steps - done)
            state, rec = _chunk(problem, unravel, *args, state, opt=opt, cfg=cfg, length=keep)
            recs.append(jax.device_get(rec))
            done += keep
            bar.advance(keep)
    out = {k: np.concatenate([np.asarray(r[k]) for r in recs]) for k in recs[0]}
    (w, nu, _), _, (w_d, _, _) = state
    out.update(w_cf=np.asarray(w), nu_cf=np.asarray(nu), w_opt=np.asarray(w_d), seconds=time.perf_counter() - t0)
    return out
