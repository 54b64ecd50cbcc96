"""The central flow of RMSProp (Cohen et al., ICLR 2025, §5), one or several eigenvalues at the edge.

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

Several eigenvalues (k ≥ 2): Ũ (k, P) the top eigenvectors of H̃ (rows ũ_a), V (k, P) the rows
v_a = P^{-1/2}ũ_a, Σ = VᵀXV with X (k, k) ⪰ 0. The block ŨH̃Ũᵀ moves affinely in X, d/dt = −(q + MX) (:func:`sdcp_data`), and X solves
the same semidefinite complementarity problem as for GD, X ⪰ 0, q + MX ⪰ 0, ⟨X, q + MX⟩ = 0; at the
edge (equal eigenvalues) M is symmetric positive semi-definite, so it is the convex QP solved by
:func:`eoslab.dynamics.central_flow.solve_sdcp` (docs/central-flow.md §11).
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
from eoslab.dynamics import central_flow as cf
from eoslab.dynamics.central_flow import FlatUnravel, FlowConfig
from eoslab.errors import EoslabError, check_nonnegative_int, check_positive, check_positive_int
from eoslab.problem import Problem
from eoslab.spectra import tracking
from eoslab.spectra.operators import hvp
from eoslab.spectra.third_order import block_jacobian, smat, svec, svec_pairs
from eoslab.typing import Array, Float, Params, Scalar


def nu_sensitivity(value: Scalar, u: Float[Array, " P"], nu: Float[Array, " P"], eps: Scalar
                   ) -> Float[Array, " P"]:
    """∂S̃/∂ν (P,): the derivative of the simple eigenvalue ``value`` of P^{-1/2}HP^{-1/2}
    (unit eigenvector ``u``) in ν, P = √(ν + ε): −½ S̃ u_i² / (ν_i + ε)."""
    return -0.5 * value * u ** 2 / (nu + eps)


def sdcp_data(A: Float[Array, "P m"], Hv: Float[Array, "k P"], Ut: Float[Array, "k P"], values: Float[Array, " k"],
              g: Float[Array, " P"], nu: Float[Array, " P"], lr: Scalar, beta2: Scalar, eps: Scalar,
              rate: Scalar) -> tuple[Float[Array, "m m"], Float[Array, " m"], Float[Array, "P m"]]:
    """(M, q, E) of the RMSProp SDCP in svec coordinates (m = k(k+1)/2) for the block Ũ (k, P)
    of eigenvectors of H̃ = P^{-1/2}HP^{-1/2} (eigenvalues ``values``), V (k, P) the rows
    v_a = P^{-1/2}ũ_a.

    A (P, m) is the block Jacobian of X ↦ ∇_w⟨VHVᵀ, X⟩ (V fixed), Hv (k, P) the products Hv_a.
    With Σ = VᵀXV the block ŨH̃Ũᵀ moves at d/dt = −(q + MX) (per step) along
    ẇ = −ηP⁻¹(∇L + ½A X), ν̇ = (1 − β₂)(∇L² + E X − ν), where E (P, m) maps X to
    diag(HVᵀXVH) and C (P, m), ∂_ν⟨ŨH̃Ũᵀ, X⟩ = C X, has column (a, b)
    −¼(λ_a + λ_b) ũ_a ũ_b / (ν + ε) (× √2 off the diagonal):

        M = (η/2) AᵀP⁻¹A − (1 − β₂) CᵀE,     q = η AᵀP⁻¹∇L − (1 − β₂) Cᵀ(∇L² − ν) − rate·svec(Λ − 2/η).

    −CᵀE is symmetric positive semi-definite when the edge eigenvalues are equal (Hv_a = λ_a P^{1/2}ũ_a
    gives (−CᵀE)_{(ab),(cd)} ∝ ¼(λ_a + λ_b)λ_cλ_d Σ_i ũ_aũ_bũ_cũ_d/P_i), so at the edge M is
    symmetric PSD up to the spread of the edge eigenvalues, and is symmetrised: the SDCP is the
    convex QP of the GD flow (:func:`eoslab.dynamics.central_flow.solve_sdcp`). For k = 1,
    M = −b and q = −a of the one-eigenvalue closed form σ² = max(0, −a/b)."""
    k = Ut.shape[0]
    ia, ib, wts = svec_pairs(k)
    wts = wts.astype(g.dtype)
    Pinv = 1.0 / jnp.sqrt(nu + eps)
    C = (-0.25 * (values[ia] + values[ib])[:, None] * Ut[ia] * Ut[ib] / (nu + eps)[None, :] * wts[:, None]).T
    E = (Hv[ia] * Hv[ib] * wts[:, None]).T
    M = 0.5 * lr * A.T @ (Pinv[:, None] * A) - (1 - beta2) * C.T @ E
    M = 0.5 * (M + M.T)
    q = lr * A.T @ (Pinv * g) - (1 - beta2) * C.T @ (g ** 2 - nu) - rate * svec(jnp.diag(values - 2.0 / lr))
    return M, q, E


def rmsprop_velocity(problem: Problem, unravel: Callable, w: Float[Array, " P"], nu: Float[Array, " P"],
                     Ut: Float[Array, "k P"], values: Float[Array, " k"], lr: Scalar, beta2: Scalar, eps: Scalar,
                     cfg: FlowConfig, sigma0: Float[Array, " m"] | None = None
                     ) -> tuple[Float[Array, " P"], Float[Array, " P"], Float[Array, " m"], dict]:
    """(dw/dt, dν/dt, svec Σ, info) of the RMSProp central flow at (w, ν), with ``Ut`` (k, P),
    ``values`` (k,) the top eigenpairs of P^{-1/2}HP^{-1/2} (P = √(ν + ε)); ``sigma0`` warm-starts
    the SDCP (k ≥ 2). k = 1 is the closed form σ² = max(0, −a/b)."""
    k = Ut.shape[0]
    loss = lambda v: problem.loss_fn(unravel(v))
    L, g = jax.value_and_grad(loss)(w)
    P = jnp.sqrt(nu + eps)
    V = Ut / jnp.sqrt(P)[None, :]
    A = block_jacobian(loss, w, V)
    mv, _ = hvp(problem, unravel(w))
    Hv = jax.vmap(mv)(V)
    edge = 2.0 / lr
    rate = cfg.stiffness * cfg.substeps
    M, q, E = sdcp_data(A, Hv, Ut, values, g, nu, lr, beta2, eps, rate)
    mask = values >= edge * (1.0 - cfg.edge_rtol)
    if k == 1:
        b, a = -M[0, 0], -q[0]
        x = jnp.where(mask[0] & (b < 0), jnp.maximum(0.0, -a / jnp.where(b < 0, b, -1.0)), 0.0)[None]
        res = jnp.zeros((), g.dtype)
    else:
        sigma0 = jnp.zeros_like(q) if sigma0 is None else sigma0
        x, res = jax.lax.cond(
            jnp.any(mask),
            lambda: cf.solve_sdcp(M, q, k, mask, tol=cfg.sdcp_tol, max_iter=cfg.sdcp_iters, x0=sigma0)[:2],
            lambda: (jnp.zeros_like(q), jnp.zeros((), g.dtype)))
        x = jnp.where(jnp.all(jnp.isfinite(x)), x, 0.0)
    X = smat(x, k)
    d = g + 0.5 * A @ x
    dw = -lr * d / P
    dnu_dt = (1 - beta2) * (g ** 2 + E @ x - nu)
    info = {"loss": L, "sigma2": jnp.trace(X), "n_active": jnp.sum(mask).astype(jnp.int32),
            "b": -M[0, 0], "avg_loss": L + 0.5 * jnp.sum(values * jnp.diag(X)), "sdcp_residual": res}
    return dw, dnu_dt, x, info


def _pre_mv(problem, unravel, w, nu, eps):
    mv, _ = hvp(problem, unravel(w))
    s = (nu + eps) ** -0.25
    return lambda x: s * mv(s * x)


def _chunk_steps(problem, unravel, lr, beta2, eps, state, *, opt, cfg, length):
    loss = lambda v: problem.loss_fn(unravel(v))

    def sub(c, _):
        w, nu, st, sig = c
        st, tr = tracking.track(_pre_mv(problem, unravel, w, nu, eps), st, tol=cfg.track_tol)
        dw, dn, sig, info = rmsprop_velocity(problem, unravel, w, nu, tr.vectors, tr.values, lr, beta2, eps, cfg,
                                             sig)
        h = 1.0 / cfg.substeps
        return (w + h * dw, nu + h * dn, st, sig), dict(info, sharpness=tr.values[0], eigs=tr.values)

    def sub_stable(c, _):
        w, nu = c
        g = jax.grad(loss)(w)
        h = 1.0 / cfg.substeps
        return (w - h * lr * g / jnp.sqrt(nu + eps), nu + h * (1 - beta2) * (g ** 2 - nu)), None

    def one(state, _):
        cf, sf, (w_d, s_d, st_d) = state
        w_before = cf[0]
        cf, infos = jax.lax.scan(sub, cf, None, length=cfg.substeps)
        rec = {k: v[0] for k, v in infos.items()}                     # L + ½⟨H, Σ⟩ in "avg_loss"
        L_d, g = jax.value_and_grad(loss)(w_d)
        upd, s_d = opt.update(g, s_d)
        st_d, tr_d = tracking.track(_pre_mv(problem, unravel, w_d, s_d.nu, eps), st_d, tol=1e-4)
        rec.update(opt_loss=L_d, opt_sharpness=tr_d.values[0], opt_eigs=tr_d.values, sf_loss=loss(sf[0]),
                   dist_opt_cf=jnp.linalg.norm(w_d - w_before), dist_opt_sf=jnp.linalg.norm(w_d - sf[0]))
        sf, _ = jax.lax.scan(sub_stable, sf, None, length=cfg.substeps)
        return (cf, sf, (w_d + upd, s_d, st_d)), rec

    return jax.lax.scan(one, state, None, length=length)


_chunk = jax.jit(_chunk_steps, static_argnames=("unravel", "opt", "cfg", "length"))


def _plain_steps(problem, unravel, opt, w, s, *, length):
    """``length`` steps of discrete RMSProp from (w, state s)."""
    grad = jax.grad(lambda v: problem.loss_fn(unravel(v)))

    def one(c, _):
        w, s = c
        upd, s = opt.update(grad(w), s)
        return (w + upd, s), None

    return jax.lax.scan(one, (w, s), None, length=length)[0]


_plain = jax.jit(_plain_steps, static_argnames=("unravel", "opt", "length"))


@follows("problem", "params0")
def run(problem: Problem, lr: float, steps: int, *, beta2: float = 0.99, eps: float = 1e-8,
        nu0: Float[Array, " P"] | None = None, k: int = 1, substeps: int = 4, stiffness: float = 0.5,
        edge_rtol: float = 1e-3, track_tol: float = 1e-6, sdcp_tol: float = 1e-10, chunk: int = 50,
        seed: int = 0, params0: Params | None = None, start: int = 0) -> dict:
    """The RMSProp central flow for ``steps`` steps, next to discrete RMSProp and the stable flow
    (the same ODE with Σ = 0), all from (θ₀, ν₀) (or from RMSProp's state after ``start`` steps).

    Args:
      problem: any :class:`~eoslab.Problem`; θ₀ = ``params0`` or ``problem.params``.
      lr, beta2, eps: RMSProp's η, β₂ and ε (ε inside the root, as :func:`optim.rmsprop`).
      steps: optimizer steps (the flows run for the same time).
      nu0: ν at the start (P,) (flat, like ``ravel_pytree(θ₀)``); default ∇L(θ₀)², the state
        after one step from ν = 0 without its (1 − β₂) damping, so the run starts warm.
      k: eigenpairs of P^{-1/2}HP^{-1/2} tracked, on the flow and on discrete RMSProp; those at
        the edge share Σ through the SDCP (:func:`sdcp_data`); k = 1 is the closed form.
      substeps, stiffness, edge_rtol, track_tol, sdcp_tol, chunk, seed: as in
        :func:`eoslab.dynamics.central_flow.run`.
      start: run discrete RMSProp (from θ₀, ν₀) for this many steps first and start all three
        from its (θ, ν) (0: from θ₀, ν₀). A start above the edge is outside the flow's domain
        (RMSProp's first steps then catapult), so starting once RMSProp is at the edge isolates
        what happens there.

    Returns:
      dict of (steps,) arrays: ``loss``, ``avg_loss`` (L + ½⟨H, Σ⟩ = L + ½Σλ_aX_aa), ``sharpness``
      (λ₁(P⁻¹H) on the flow), ``eigs`` (steps, k), ``sigma2`` (tr X, the oscillation's variance in
      the coordinates Ũ; σ² for k = 1), ``n_active``, ``b`` (−M₀₀), ``sdcp_residual``; discrete
      RMSProp ``opt_loss``, ``opt_sharpness``, ``opt_eigs`` (steps, k) (of P_t⁻¹H with the P of the
      step made); ``sf_loss``; ``dist_opt_cf``, ``dist_opt_sf``; final ``w_cf``, ``nu_cf``,
      ``w_opt``, ``seconds``.
    """
    check_positive("lr", lr)
    check_positive_int("steps", steps)
    check_positive("eps", eps)
    if not 0.0 < beta2 <= 1.0:
        raise EoslabError(f"beta2 must lie in (0, 1], got {beta2!r}")
    cfg = FlowConfig(check_positive_int("substeps", substeps), float(stiffness), float(edge_rtol),
                     float(track_tol), float(check_positive("sdcp_tol", sdcp_tol)))
    k = check_positive_int("k", k)
    chunk = check_positive_int("chunk", chunk)
    start = check_nonnegative_int("start", start)      # before any work (ν₀ below is a gradient)
    params = problem.params if params0 is None else params0
    w0, _ = ravel_pytree(params)
    unravel = FlatUnravel.of(params)
    if nu0 is None:
        nu0 = jax.grad(lambda v: problem.loss_fn(unravel(v)))(w0) ** 2
    nu0 = jnp.asarray(nu0, w0.dtype)
    if nu0.shape != w0.shape:
        raise EoslabError(f"nu0 must have the parameters' flat shape {w0.shape}, got {nu0.shape}")
    P = w0.size
    k = min(k, P)
    key = jax.random.PRNGKey(seed)
    st = tracking.track_init(P, k, key, w0.dtype, block=min(P, k + 1))
    # β₂ = 1 (a frozen preconditioner) is outside optim.rmsprop's [0, 1) but a valid state: the
    # numbers live in the state, the update reads them from there.
    opt = optim.rmsprop(lr, beta2 if beta2 < 1 else 0.0, eps)
    s_d = opt.init(w0)._replace(nu=nu0, beta2=jnp.asarray(beta2, w0.dtype))
    if start > 0:
        w0, s_d = _plain(problem, unravel, opt, w0, s_d, length=start)
        nu0 = s_d.nu
    st_d = tracking.track_init(P, k, jax.random.fold_in(key, 1), w0.dtype, block=min(P, k + 1))
    state = ((w0, nu0, st, jnp.zeros((k * (k + 1) // 2,), w0.dtype)), (w0, nu0), (w0, s_d, st_d))
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
    (w, nu, _, _), _, (w_d, _, _) = state
    out.update(w_cf=np.asarray(w), nu_cf=np.asarray(nu), w_opt=np.asarray(w_d), seconds=time.perf_counter() - t0)
    return out
