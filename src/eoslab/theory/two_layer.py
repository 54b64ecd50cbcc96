"""Theory for the minimalist two-layer network (:mod:`eoslab.models.two_layer`).

Everything is written for the loss L = ½ rᵀΣr, r = αβ − w*, w* = e₂, with any SPD Σ (2, 2):
Σ = diag(λ₁, λ₂) for the population loss, XᵀX/n for the empirical one.

* **Minimisers**: β = w*/α, α ≠ 0 (a curve, two branches ±). With Σ = diag(λ₁, λ₂) their Hessian
  eigenvalues are {0, λ₁α², λ₂(α² + α⁻²)}: the sharp direction is the irrelevant weight β₁.
* **Conserved quantity of gradient flow** (balancedness): d/dt (α² − ‖β‖²) = −2α βᵀΣr + 2α βᵀΣr = 0.
  Gradient flow converges (from every θ off the stable manifold of the saddle line
  {α = 0, βᵀΣw* = 0}) to the minimiser with the same c = α² − ‖β‖², i.e.
  α∞² = a(c) = (c + √(c² + 4‖w*‖²)) / 2,  β∞ = w*/α∞  (up to the symmetry (α, β) → −(α, β),
  which changes neither f nor the Hessian spectrum). So the **GFS sharpness** is a closed form:
  S_GFS(θ) = λ_max(∇²L(√a, w*/√a)), = max(λ₁a, λ₂(a + 1/a)) = max(λ₁a, λ₂√(c² + 4)) for diagonal Σ.
* Under GD, c_{t+1} = c_t + η²(g_α² − ‖g_β‖²) exactly (the O(η) term cancels by the same identity),
  so GD moves the GFS point only at second order in η.
* **Stable set** (Damian et al.): {θ : S(θ) ≤ 2/η, ∇L(θ)·u(θ) = 0}, u the top Hessian eigenvector.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from eoslab.dynamics.gd import gd
from eoslab.dynamics.projected import projected_gd
from eoslab.errors import EoslabError, check_positive, check_positive_int
from eoslab.models import two_layer as model
from eoslab.models.two_layer import W_STAR, grad, hessian, sharpness
from eoslab._precision import x64


@x64
def balance(theta: jax.Array) -> jax.Array:
    """c = α² − ‖β‖² (...,) for θ (..., 3): conserved by gradient flow."""
    return theta[..., 0] ** 2 - jnp.sum(theta[..., 1:] ** 2, axis=-1)


@x64
def gfs_point(theta: jax.Array) -> jax.Array:
    """The limit of gradient flow from θ (3,), in closed form (branch with α∞ of the sign of α).

    Uses only the conserved c = α² − ‖β‖²: α∞² = (c + √(c² + 4‖w*‖²))/2, β∞ = w*/α∞.
    When c ≤ 0 the flow may cross α = 0, so the branch (sign) is then not fixed by c; the
    sharpness and the function f are the same on both branches.
    """
    c = balance(theta)
    w2 = W_STAR @ W_STAR
    a = 0.5 * (c + jnp.sqrt(c * c + 4.0 * w2))
    alpha = jnp.where(theta[0] < 0, -1.0, 1.0) * jnp.sqrt(a)
    return jnp.concatenate([alpha[None], W_STAR / alpha])


@x64
def gfs_sharpness(theta: jax.Array, sigma: jax.Array) -> jax.Array:
    """S_GFS(θ): sharpness of the gradient-flow solution from θ (exact, no ODE integration)."""
    return sharpness(gfs_point(theta), sigma)


@x64
def minimiser_eigs(alpha, lam1: float, lam2: float) -> jax.Array:
    """Hessian eigenvalues (3,) of the population loss at the minimiser (α, 0, 1/α), descending
    when λ₁α² ≥ λ₂(α² + α⁻²): {λ₁α², λ₂(α² + α⁻²), 0}."""
    a = alpha * alpha
    return jnp.stack([lam1 * a, lam2 * (a + 1.0 / a), jnp.zeros_like(a)])


@x64
def stable_minimisers(lam1: float, lam2: float, lr: float) -> tuple[float, float] | None:
    """The interval of α² for which the population minimiser (α, 0, 1/α) is linearly stable,
    S ≤ 2/η, i.e. λ₁α² ≤ 2/η and λ₂(α² + α⁻²) ≤ 2/η; ``None`` if empty."""
    edge = 2.0 / lr
    hi = edge / lam1
    q = edge / lam2                     # a + 1/a ≤ q  ⇔  a ∈ [(q − √(q²−4))/2, (q + √(q²−4))/2]
    if q < 2.0:
        return None
    lo2, hi2 = 0.5 * (q - np.sqrt(q * q - 4.0)), 0.5 * (q + np.sqrt(q * q - 4.0))
    lo, hi = lo2, min(hi, hi2)
    return (float(lo), float(hi)) if lo <= hi else None


@x64
def gradient_flow(theta0, sigma, t_max: float, rtol: float = 1e-11, atol: float = 1e-13):
    """Integrate dθ/dt = −∇L(θ) to ``t_max`` with SciPy's adaptive DOP853 (an independent
    reference for :func:`gfs_point`; NumPy/SciPy at the edge). Returns θ(t_max) (3,)."""
    from scipy.integrate import solve_ivp

    sig = np.asarray(sigma)
    g = jax.jit(lambda th: grad(th, jnp.asarray(sig)))
    sol = solve_ivp(lambda t, th: -np.asarray(g(jnp.asarray(th))), (0.0, t_max),
                    np.asarray(theta0, dtype=np.float64), method="DOP853", rtol=rtol, atol=atol)
    return sol.y[:, -1]


# ---- stable set --------------------------------------------------------------------------
def _constraints(theta, sigma, lr):
    """(h, s): h = ∇L·u (u the top Hessian eigenvector) and s = S − 2/η."""
    w, v = jnp.linalg.eigh(hessian(theta, sigma))
    u = v[:, -1]
    return jnp.stack([grad(theta, sigma) @ u, w[-1] - 2.0 / lr])


@x64
@functools.partial(jax.jit, static_argnames="iters")
def distance_to_stable_set(theta: jax.Array, sigma: jax.Array, lr, iters: int = 30) -> jax.Array:
    """Distance from θ to the stable set {S ≤ 2/η, ∇L·u = 0}, by a minimum-norm Gauss–Newton
    projection: θ ← θ − J_c⁺ c over the active constraints c = (h, (S − 2/η)₊).

    Each step is the exact nearest point of the linearised set, so the result is the distance to
    first order in it (exact when the constraints are affine near θ). Returns ‖θ* − θ‖, or NaN if
    the projection did not reach the set (|h| and (S − 2/η)₊ ≤ 1e-10·(1 + S)).
    """

    def step(p, _):
        c = _constraints(p, sigma, lr)
        J = jax.jacfwd(_constraints)(p, sigma, lr)
        active = jnp.array([1.0, 0.0]) + jnp.array([0.0, 1.0]) * (c[1] > 0)
        c, J = c * active, J * active[:, None]
        return p - jnp.linalg.pinv(J, rtol=1e-12) @ c, None

    p, _ = jax.lax.scan(step, theta, None, length=iters)
    c = _constraints(p, sigma, lr)
    ok = (jnp.abs(c[0]) <= 1e-10 * (1 + jnp.abs(c[1]))) & (c[1] <= 1e-10 * (2.0 / lr))
    return jnp.where(ok, jnp.linalg.norm(p - theta), jnp.nan)


# ---- per-step diagnostics and phases -----------------------------------------------------
@x64
@jax.jit
def diagnostics(params: jax.Array, sigma: jax.Array, lr) -> dict:
    """Per-step diagnostics of a recorded trajectory ``params`` (T, 3) (NaN rows allowed).

    Returns a dict of (T,) arrays: ``sharpness`` (exact), ``gfs_sharpness``, ``balance`` (c),
    ``grad_dot_u`` (∇L·u), ``stable_set_distance``.
    """
    one = lambda th: {
        "sharpness": sharpness(th, sigma),
        "gfs_sharpness": gfs_sharpness(th, sigma),
        "balance": balance(th),
        "grad_dot_u": _constraints(th, sigma, lr)[0],
        "stable_set_distance": distance_to_stable_set(th, sigma, lr),
    }
    return jax.vmap(one)(params)


@x64
def phases(sharpness_t, loss_t, gfs_t, lr: float, gfs_rtol: float = 1e-10) -> dict:
    """Detect the three phases of a GD run from its per-step sharpness S_t, loss L_t and GFS sharpness.

    Definitions (η = ``lr``, edge 2/η); the two boundaries use different signals, so the claim
    about the sharpness after EoS is not true by construction:
      * progressive sharpening: steps [0, eos_start), eos_start = first t with S_t > 2/η
        (−1 if the edge is never crossed: no EoS phase);
      * EoS with self-stabilisation: [eos_start, convergence_start);
      * convergence: [convergence_start, T), convergence_start = 1 + the last t with L_{t+1} > L_t
        (from there on the loss decreases monotonically); −1 if the loss still rises at the end.

    Measured: ``delta_eos`` = max ηS_t − 2 over the EoS phase (the overshoot); ``delta_after`` =
    max ηS_t − 2 over the convergence phase (the claim S ≤ (2 + δ)/η after EoS, δ small);
    GFS monotonicity violations: steps t with S_GFS(θ_{t+1}) > S_GFS(θ_t)(1 + ``gfs_rtol``),
    counted per phase (the first 20 steps listed).
    """
    S = np.asarray(sharpness_t, dtype=np.float64)
    L = np.asarray(loss_t, dtype=np.float64)
    G = np.asarray(gfs_t, dtype=np.float64)
    T, edge = S.size, 2.0 / lr
    above = np.flatnonzero(S > edge)
    eos_start = int(above[0]) if above.size else -1
    rises = np.flatnonzero(np.diff(L) > 0)
    conv_start = int(rises[-1]) + 1 if rises.size else 0
    if conv_start >= T - 1:
        conv_start = -1
    ps_end = eos_start if eos_start >= 0 else (conv_start if conv_start >= 0 else T)
    inc = np.diff(G)
    viol = np.flatnonzero(inc > gfs_rtol * np.abs(G[:-1]))

    def in_phase(t):
        if conv_start >= 0 and t >= conv_start:
            return "convergence"
        return "eos" if 0 <= eos_start <= t else "ps"

    phase_of = [in_phase(t) for t in viol]
    eos_slice = S[eos_start:max(eos_start, conv_start if conv_start >= 0 else T)] if eos_start >= 0 else S[:0]
    after = S[conv_start:] if conv_start >= 0 else S[:0]
    finite = np.isfinite(L)
    return {
        "edge": edge,
        "eos_start": eos_start,
        "convergence_start": conv_start,
        "sharpness_initial": float(S[0]),
        "sharpness_at_ps_end": float(S[ps_end - 1]) if ps_end > 0 else float(S[0]),
        "ps_fraction_increasing": float(np.mean(np.diff(S[:ps_end]) > 0)) if ps_end > 1 else float("nan"),
        "delta_eos": float(lr * eos_slice.max() - 2.0) if eos_slice.size else float("nan"),
        "delta_after": float(lr * after.max() - 2.0) if after.size else float("nan"),
        "final_sharpness": float(S[-1]),
        "final_eta_sharpness": float(lr * S[-1]),
        "final_loss": float(L[finite][-1]) if finite.any() else float("nan"),
        "final_gfs_sharpness": float(G[-1]),
        "gfs_violations": int(viol.size),
        "gfs_violations_by_phase": {p: phase_of.count(p) for p in ("ps", "eos", "convergence")},
        "gfs_violation_steps": [int(t) for t in viol[:20]],
        "gfs_max_increase": float(inc.max(initial=0.0)),
        "gfs_max_relative_increase": float(np.max(inc / np.abs(G[:-1]), initial=0.0)),
    }


# ---- GD with the diagnostics above ----------------------------------------------------------
@x64
def simulate_two_layer(lam1: float = 1.0, lam2: float = 0.01, lr: float = 4.0, steps: int = 1500,
                       theta0=model.THETA0, samples: int = 0, seed: int = 0,
                       lower=None, upper=None) -> dict:
    """GD (or projected GD onto the box [lower, upper] when either is given) on the two-layer model.

    ``samples = 0``: population loss; ``samples = n > 0``: empirical loss on n samples drawn with
    ``seed``. Returns ``{"trajectory": {key: (steps, ...) array}, "phases": dict, "config": dict}``;
    the trajectory has GD's keys plus ``params`` (steps, 3) and the per-step diagnostics of
    :func:`diagnostics` (the exact sharpness among them: P = 3, closed-form
    Hessian, so GD itself records no spectra; the NTK of an empirical problem would be n×n).
    """
    lr = check_positive("lr", lr)
    steps = check_positive_int("steps", steps)
    if samples < 0 or int(samples) != samples:
        raise EoslabError(f"samples must be 0 (population) or a positive integer, got {samples!r}")
    if samples:
        problem = model.empirical_problem(jax.random.PRNGKey(seed), lam1, lam2, int(samples), theta0)
    else:
        problem = model.population_problem(lam1, lam2, theta0)
    projected = lower is not None or upper is not None
    if projected:
        lo = -np.inf if lower is None else lower
        hi = np.inf if upper is None else upper
        traj, _ = projected_gd(problem, lr, steps, lo, hi, spectra="none", record_params=True)
    else:
        traj, _ = gd(problem, lr, steps, spectra="none", record_params=True)
    sigma = model.problem_covariance(problem)
    diag = diagnostics(traj["params"], sigma, lr)
    traj = {**{k: np.asarray(v) for k, v in traj.items()}, **{k: np.asarray(v) for k, v in diag.items()}}
    ph = phases(traj["sharpness"], traj["loss"], traj["gfs_sharpness"], lr)
    ph["diverged"] = bool(traj["diverged"][-1])
    ph["max_stable_set_distance_after_eos"] = _nanmax(traj["stable_set_distance"][max(ph["convergence_start"], 0):]) \
        if ph["convergence_start"] >= 0 else float("nan")
    ph["final_stable_set_distance"] = float(traj["stable_set_distance"][-1])
    ph["balance_identity_error"] = balance_identity_error(traj["params"], sigma, lr)
    config = dict(lam1=lam1, lam2=lam2, lr=lr, steps=steps, theta0=[float(t) for t in np.asarray(theta0)],
                  samples=int(samples), seed=seed, projected=projected,
                  lower=None if lower is None else np.broadcast_to(lower, (3,)).tolist(),
                  upper=None if upper is None else np.broadcast_to(upper, (3,)).tolist())
    return {"trajectory": traj, "phases": ph, "config": config, "sigma": np.asarray(sigma)}


def _nanmax(x) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmax(x)) if np.isfinite(x).any() else float("nan")


@x64
def balance_identity_error(params, sigma, lr) -> float:
    """max_t |c_{t+1} − c_t − η²(g_α² − ‖g_β‖²)| / (1 + |c_t|): GD moves the conserved quantity of
    gradient flow only at O(η²), by exactly this amount (plain GD only; NaN rows skipped)."""
    p = jnp.asarray(params)
    c = balance(p)
    g = jax.vmap(lambda th: grad(th, jnp.asarray(sigma)))(p)
    # η² in the arrays' float64: a diverging η (1e300) gives inf, not Python's OverflowError
    pred = jnp.square(jnp.asarray(lr, p.dtype)) * (g[:, 0] ** 2 - jnp.sum(g[:, 1:] ** 2, axis=1))
    err = jnp.abs(c[1:] - c[:-1] - pred[:-1]) / (1 + jnp.abs(c[:-1]))
    return _nanmax(err)
