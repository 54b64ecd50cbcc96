"""The central flow of gradient descent (Cohen, Damian, Talwalkar, Kolter & Lee, ICLR 2025).

At the edge of stability GD oscillates along the top Hessian eigenvectors while its *time
average* follows a smooth path. The central flow is that path (time t counted in GD steps):

    dw/dt = −η [∇L(w) + ½ ∇_w⟨∇²L(w), Σ(t)⟩],

with Σ ⪰ 0 the covariance of the oscillation, supported on the eigenspace of ∇²L(w) whose
eigenvalues sit at 2/η, and fixed by the requirement that the flow keep them there. With
U (k, P) an orthonormal basis of that eigenspace, A the matrix of X ↦ ∇_w⟨UᵀHU, X⟩
(:func:`eoslab.spectra.third_order.block_jacobian`), g = ∇L, q = Aᵀg, M = ½AᵀA, the rate
of change of UᵀHU along the flow is −η (q + MΣ), and Σ solves the semidefinite
complementarity problem (SDCP; Cohen et al. §3.3)

    Σ ⪰ 0,    q + MΣ ⪰ 0,    ⟨Σ, q + MΣ⟩ = 0,

i.e. no eigenvalue at the edge rises, and Σ acts only on those that would. It is the KKT
system of the convex problem  min_{Σ⪰0} ‖g + ½AΣ‖²,  so the central flow's velocity is the
smallest-norm −η(g + ½AΣ) that keeps the edge eigenvalues from rising. For one eigenvalue
(k = 1, A = ∇S) this is the closed form σ² = max(0, −2⟨∇L, ∇S⟩/‖∇S‖²).

Numerics (docs/central-flow.md): Euler substeps of dt = 1/substeps GD steps; the
eigenvectors come from the warm-started tracker (:func:`eoslab.spectra.tracking.track`);
the SDCP is solved in svec coordinates by accelerated projected gradient (FISTA with
adaptive restart) on the PSD cone restricted to the active eigenvalues, inside ``jit`` (no
host round trip); and an eigenvalue that the discrete steps push above 2/η is pulled back
by the Baumgarte term of the constraint, d/dt λ ≤ −(stiffness/dt)(λ − 2/η).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from eoslab import progress
from eoslab._precision import follows
from eoslab.errors import EoslabError, check_memory, check_positive, check_positive_int, check_representable
from eoslab.problem import Problem
from eoslab.spectra import tracking
from eoslab.spectra.operators import hvp
from eoslab.spectra.third_order import block_jacobian, smat, svec, svec_pairs
from eoslab.typing import Array, Bool, Float, Int, Params, Scalar

#: Keys of a central-flow trajectory (row t: the flow at GD time t, before step t's substeps).
CF_KEYS = {
    "loss": "L(w(t)) on the central flow",
    "avg_loss": "predicted time-averaged GD loss L(w) + tr Σ/η",
    "sharpness": "λ₁(∇²L(w(t)))",
    "eigs": "(k,) top-k tracked Hessian eigenvalues (NaN for slots not yet tracked)",
    "trace_sigma": "tr Σ (σ² when k = 1): predicted variance of GD's oscillation",
    "n_active": "number of eigenvalues at the edge (in the SDCP's support)",
    "grad_norm2": "‖∇L(w)‖²",
    "avg_grad_norm2": "predicted time-averaged ‖∇L‖² of GD: ‖∇L + ½AΣ‖² + (2/η)² tr Σ",
    "sdcp_residual": "KKT residual of the SDCP at the last substep (relative)",
    "products": "Hessian-vector products spent tracking during this GD step",
    "alpha": "α = −⟨∇L, ∇S⟩ (progressive sharpening rate of S along −∇L, per unit η)",
    "beta": "β = ‖∇S‖² (self-stabilization strength)",
}


# ---- the SDCP -----------------------------------------------------------------------------

def _psd_project(x, k, mask):
    """Projection of svec x onto {Σ ⪰ 0 supported on the coordinates where mask is True}."""
    X = smat(x, k) * (mask[:, None] & mask[None, :])
    lam, V = jnp.linalg.eigh(X)
    return svec((V * jnp.maximum(lam, 0.0)) @ V.T)


def _kkt_residual(x, M, q, k, mask):
    """Relative KKT residual of the SDCP: ‖x − Π(x − (Mx + q))‖ / scale."""
    r = M @ x + q
    pg = x - _psd_project(x - r, k, mask)
    scale = jnp.linalg.norm(q) + jnp.linalg.norm(M @ x) + 1e-300
    return jnp.linalg.norm(pg) / scale


def solve_sdcp(M: Float[Array, "m m"], q: Float[Array, " m"], k: int, mask: Bool[Array, " k"] | None = None, *,
               tol: float = 1e-12, max_iter: int = 5000, x0: Float[Array, " m"] | None = None
               ) -> tuple[Float[Array, " m"], Float[Array, ""], Int[Array, ""]]:
    """Solve Σ ⪰ 0, MΣ + q ⪰ 0, ⟨Σ, MΣ + q⟩ = 0 (Σ supported where ``mask``) in JAX.

    Args:
      M: (m, m) symmetric positive semi-definite, m = k(k+1)/2 (svec coordinates).
      q: (m,).
      k: size of the block (static).
      mask: (k,) bool, the coordinates Σ may use (default all).
      tol: stop at this relative KKT residual (see :func:`_kkt_residual`).
      max_iter: iteration cap (static bound of the ``while_loop``).
      x0: warm start (m,) (e.g. the previous substep's Σ).

    Returns:
      ``(x, residual, iterations)``: svec of Σ (m,), the relative KKT residual, the count.
    Jittable: FISTA with adaptive (function-value) restart on min ½xᵀMx + qᵀx over the cone.
    """
    dtype = q.dtype
    mask = jnp.ones((k,), bool) if mask is None else mask
    x0 = jnp.zeros_like(q) if x0 is None else _psd_project(x0, k, mask)
    Lip = jnp.maximum(jnp.linalg.eigvalsh(M)[-1], jnp.finfo(dtype).tiny)
    f = lambda x: 0.5 * x @ M @ x + q @ x

    def cond(c):
        x, y, t, it, res = c
        return (it < max_iter) & (res > tol)

    def body(c):
        x, y, t, it, _ = c
        xn = _psd_project(y - (M @ y + q) / Lip, k, mask)
        tn = 0.5 * (1 + jnp.sqrt(1 + 4 * t * t))
        restart = f(xn) > f(x)
        yn = jnp.where(restart, xn, xn + ((t - 1) / tn) * (xn - x))
        tn = jnp.where(restart, 1.0, tn)
        res = _kkt_residual(xn, M, q, k, mask)
        return xn, yn, tn, it + 1, res

    res0 = _kkt_residual(x0, M, q, k, mask)
    x, _, _, it, res = jax.lax.while_loop(cond, body, (x0, x0, jnp.ones((), dtype), jnp.zeros((), jnp.int32), res0))
    return x, res, it


def sigma_closed_form(grad: Float[Array, " P"], grad_S: Float[Array, " P"]) -> Float[Array, ""]:
    """k = 1: σ² = max(0, −2⟨∇L, ∇S⟩/‖∇S‖²)."""
    return jnp.maximum(0.0, -2.0 * (grad @ grad_S) / (grad_S @ grad_S))


def sdcp_data(A: Float[Array, "P m"], grad: Float[Array, " P"], values: Float[Array, " k"], lr: Scalar,
              stiffness_rate: Scalar) -> tuple[Float[Array, "m m"], Float[Array, " m"]]:
    """(M, q) of the SDCP for the block Jacobian A (P, m), ∇L (P,), the block's eigenvalues
    (k,) (Ritz values: UᵀHU = diag(values)), η, and the Baumgarte rate (per GD step)."""
    k = values.shape[0]
    M = 0.5 * A.T @ A
    excess = jnp.diag(values - 2.0 / lr)
    q = A.T @ grad - (stiffness_rate / lr) * svec(excess)
    return M, q


# ---- the flow -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Static settings of the central flow (see :func:`central_flow`)."""

    substeps: int = 4
    stiffness: float = 0.5
    edge_rtol: float = 1e-3
    track_tol: float = 1e-6
    sdcp_tol: float = 1e-10
    sdcp_iters: int = 3000


def _check_config(lr, steps, k, cfg: FlowConfig):
    check_positive("lr", lr)
    check_positive_int("steps", steps)
    check_positive_int("k", k)
    check_positive_int("substeps", cfg.substeps)
    if not 0.0 < cfg.stiffness <= 1.0:
        raise EoslabError(f"stiffness must lie in (0, 1], got {cfg.stiffness!r}")
    if not 0.0 <= cfg.edge_rtol < 0.5:
        raise EoslabError(f"edge_rtol must lie in [0, 0.5), got {cfg.edge_rtol!r}")


def cf_velocity(problem: Problem, unravel: Callable, w: Float[Array, " P"], U: Float[Array, "k P"],
                values: Float[Array, " k"], lr: Scalar, sigma0: Float[Array, " m"], cfg: FlowConfig
                ) -> tuple[Float[Array, " P"], Float[Array, " m"], dict[str, Array]]:
    """One evaluation of the central-flow field at w (flat (P,)) with tracked block U (k, P)
    and Ritz values (k,). Returns ``(d, sigma_svec, info)`` with dw/dt = −η d."""
    k = U.shape[0]
    loss = lambda v: problem.loss_fn(unravel(v))
    L, g = jax.value_and_grad(loss)(w)
    edge = 2.0 / lr
    mask = values >= edge * (1.0 - cfg.edge_rtol)
    A = block_jacobian(loss, w, U)
    rate = cfg.stiffness * cfg.substeps
    M, q = sdcp_data(A, g, values, lr, rate)
    if k == 1:
        gS = A[:, 0]
        x = jnp.where(mask[0], jnp.maximum(0.0, -q[0] / M[0, 0]), 0.0)[None]
        x = jnp.where(jnp.isfinite(x), x, 0.0)
        res = jnp.zeros((), g.dtype)
    else:
        # One active eigenvalue (the common case) has the closed form on its diagonal
        # coordinate; the iterative solver runs only when two or more are at the edge.
        ia, ib, _ = svec_pairs(k)
        diag = jnp.flatnonzero(ia == ib, size=k)
        i = jnp.argmax(mask)
        j = diag[i]
        single = jnp.zeros_like(q).at[j].set(jnp.where(mask[i], jnp.maximum(0.0, -q[j] / M[j, j]), 0.0))
        single = jnp.where(jnp.all(jnp.isfinite(single)), single, 0.0)
        x, res = jax.lax.cond(
            jnp.sum(mask) >= 2,
            lambda: solve_sdcp(M, q, k, mask, tol=cfg.sdcp_tol, max_iter=cfg.sdcp_iters, x0=sigma0)[:2],
            lambda: (single, _kkt_residual(single, M, q, k, mask)))
    d = g + 0.5 * A @ x
    gS = A[:, 0]                                # ∇(u₁ᵀHu₁): svec coordinate (0, 0) has weight 1
    info = {"loss": L, "grad_norm2": g @ g, "d_norm2": d @ d, "trace_sigma": jnp.trace(smat(x, k)),
            "n_active": jnp.sum(mask), "sdcp_residual": res, "alpha": -(gS @ g), "beta": gS @ gS}
    return d, x, info


def _cf_substep(problem, unravel, lr, cfg, carry):
    w, st, sig = carry
    mv, _ = hvp(problem, unravel(w))
    st, tr = tracking.track(mv, st, tol=cfg.track_tol)
    d, sig, info = cf_velocity(problem, unravel, w, tr.vectors, tr.values, lr, sig, cfg)
    w = w - (lr / cfg.substeps) * d
    info = dict(info, eigs=tr.values, products=tr.n_products, u=tr.vectors[0])
    return (w, st, sig), info


def _gf_substep(problem, unravel, lr, substeps, w):
    g = jax.grad(lambda v: problem.loss_fn(unravel(v)))(w)
    return w - (lr / substeps) * g


def _record_cf(info0, infos, lr):
    edge = 2.0 / lr
    tr = info0["trace_sigma"]
    return {"loss": info0["loss"], "avg_loss": info0["loss"] + tr / lr, "sharpness": info0["eigs"][0],
            "eigs": info0["eigs"], "trace_sigma": tr, "n_active": info0["n_active"],
            "grad_norm2": info0["grad_norm2"], "avg_grad_norm2": info0["d_norm2"] + edge ** 2 * tr,
            "sdcp_residual": info0["sdcp_residual"], "products": jnp.sum(infos["products"]),
            "alpha": info0["alpha"], "beta": info0["beta"]}


def _chunk_steps(problem, unravel, lr, state, *, cfg, length, with_gd, with_gf):
    """``length`` GD steps of all requested dynamics in one ``lax.scan``."""

    def one(state, _):
        cf, w_gd, w_gf, st_gd = state
        cf, infos = jax.lax.scan(lambda c, _: _cf_substep(problem, unravel, lr, cfg, c), cf, None,
                                 length=cfg.substeps)
        info0 = jax.tree_util.tree_map(lambda a: a[0], infos)
        rec = _record_cf(info0, infos, lr)
        w_cf_before = state[0][0]
        if with_gd:
            loss_fn = lambda v: problem.loss_fn(unravel(v))
            Lg, g = jax.value_and_grad(loss_fn)(w_gd)
            mv, _ = hvp(problem, unravel(w_gd))
            st_gd, trg = tracking.track(mv, st_gd, tol=1e-4)
            rec.update(gd_loss=Lg, gd_sharpness=trg.values[0], gd_grad_norm2=g @ g,
                       dist_gd_cf=jnp.linalg.norm(w_gd - w_cf_before),
                       gd_x=info0["u"] @ (w_gd - w_cf_before))
            w_gd = w_gd - lr * g
        if with_gf:
            rec.update(gf_loss=problem.loss_fn(unravel(w_gf)), dist_gf_cf=jnp.linalg.norm(w_gf - w_cf_before))
            if with_gd:
                rec["dist_gd_gf"] = jnp.linalg.norm(state[1] - w_gf)
            w_gf = jax.lax.fori_loop(0, cfg.substeps, lambda i, v: _gf_substep(problem, unravel, lr, cfg.substeps, v),
                                     w_gf)
        return (cf, w_gd, w_gf, st_gd), rec

    return jax.lax.scan(one, state, None, length=length)


_STATIC = ("unravel", "cfg", "length", "with_gd", "with_gf")
_chunk = jax.jit(_chunk_steps, static_argnames=_STATIC)
# XLA's backend optimisation level 0: for a small model about 40 % less compilation and
# about 3× slower steps, so the cheaper choice for runs of a few hundred steps.
_chunk_fast_compile = jax.jit(_chunk_steps, static_argnames=_STATIC,
                              compiler_options={"xla_backend_optimization_level": 0})


@dataclasses.dataclass(frozen=True)
class FlatUnravel:
    """A hashable unravel (flat (P,) -> params pytree): equal for equal structures, so runs on
    problems of the same shapes share one compiled chunk."""

    treedef: object
    shapes: tuple
    dtypes: tuple

    @classmethod
    def of(cls, params):
        leaves, treedef = jax.tree_util.tree_flatten(params)
        return cls(treedef, tuple(tuple(jnp.shape(x)) for x in leaves), tuple(jnp.result_type(x) for x in leaves))

    def __call__(self, flat):
        out, i = [], 0
        for shape, dt in zip(self.shapes, self.dtypes):
            size = int(np.prod(shape))
            out.append(flat[i:i + size].reshape(shape).astype(dt))
            i += size
        return jax.tree_util.tree_unflatten(self.treedef, out)


def _grow(st: tracking.TrackState, dim, key) -> tracking.TrackState:
    """The tracker with one more tracked eigenpair, warm-started from ``st``'s block."""
    new = tracking.track_init(dim, st.k + 1, key, st.vectors.dtype, block=min(dim, st.block + 1))
    b = min(st.block, new.block)
    return dataclasses.replace(new, vectors=new.vectors.at[:b].set(st.vectors[:b]), count=st.count)


@follows("problem", "params0")
def memory_bytes(num_params: int, steps: int, substeps: int, k_max: int) -> tuple[float, float]:
    """Bytes :func:`run` needs for ``steps`` GD steps of ``substeps`` substeps on ``num_params``
    parameters: ``(per_chunk, records)``. A chunk's scan stacks every substep's record (its
    scalars, k eigenvalues and the (P,) top eigenvector); the trajectory keeps about 32 + k_max
    float64 numbers per GD step. Both doubled for the copies XLA and the final stacking make."""
    per_chunk = 2 * 8.0 * substeps * (num_params + k_max + 16)
    records = 2 * 8.0 * steps * (32 + k_max)
    return per_chunk, records


def run(problem: Problem, lr: float, steps: int, *, k: int = 1, k_max: int = 4, substeps: int = 4,
        gd: bool = True, gf: bool = True, stiffness: float = 0.5, edge_rtol: float = 1e-3,
        track_tol: float = 1e-6, sdcp_tol: float = 1e-10, chunk: int = 50, seed: int = 0,
        params0: Params | None = None, start: int = 0, fast_compile: bool = False) -> dict:
    """Central flow of GD at step size ``lr`` for ``steps`` GD steps, with discrete GD and the
    gradient flow ("stable flow") from the same θ₀ side by side.

    Args:
      problem: any :class:`~eoslab.Problem` (θ₀ = ``params0`` or ``problem.params``).
      lr: η; the edge is 2/η.
      steps: GD steps (the flows run for the same time t = steps).
      k: eigenpairs tracked at the start; grown by one (up to ``k_max``) at a chunk boundary
        whenever the last tracked eigenvalue has reached the edge (``grown_at`` says when).
      substeps: Euler substeps of the flows per GD step.
      gd, gf: also run discrete GD (with its tracked sharpness) / gradient flow.
      stiffness: Baumgarte factor: an eigenvalue above the edge loses this fraction of its
        excess per substep. edge_rtol: an eigenvalue ≥ (2/η)(1 − edge_rtol) is at the edge.
      track_tol, sdcp_tol: relative accuracy of the tracked eigenvalues and of the SDCP.
      chunk: GD steps per jitted chunk (progress and tracked-set growth happen between chunks).
      start: run plain GD for this many steps first and start all three dynamics from its
        iterate (0: from θ₀). Before the edge GD at a large η already drifts from gradient flow
        by O(η) per step; that drift is the same for both flows, and starting late isolates what
        happens at the edge.
      fast_compile: compile the chunk with XLA's backend optimisation level 0 (less
        compilation, slower steps: for a small model the faster choice up to ~1,000 steps).

    Returns:
      a dict of (steps,) numpy arrays (keys :data:`CF_KEYS`, plus ``gd_loss``,
      ``gd_sharpness``, ``gd_grad_norm2``, ``gf_loss``, ``dist_gd_cf``, ``dist_gd_gf``,
      ``dist_gf_cf`` when GD/GF run), ``"w_cf"``/``"w_gd"``/``"w_gf"`` final flat parameters,
      ``"grown_at"`` (GD steps at which the tracked set grew), ``"entered_at"`` (steps at which
      the number of eigenvalues at the edge rose, with the new count), ``"seconds"``.
    """
    cfg = FlowConfig(substeps=int(substeps), stiffness=float(stiffness), edge_rtol=float(edge_rtol),
                     track_tol=float(track_tol), sdcp_tol=float(sdcp_tol))
    _check_config(lr, steps, k, cfg)
    k_max = check_positive_int("k_max", k_max)
    if k > k_max:  # the tracked set grows from k up to k_max: k > k_max asks for both
        raise EoslabError(f"k ({k}) must be ≤ k_max ({k_max})")
    chunk = check_positive_int("chunk", chunk)
    per_chunk, records = memory_bytes(problem.num_params, steps, cfg.substeps, k_max)
    check_memory(f"substeps {cfg.substeps:,}", per_chunk, "use fewer substeps")
    check_memory(f"steps {steps:,}", records, "use fewer steps")
    params = problem.params if params0 is None else params0
    check_representable("lr", lr, jax.tree_util.tree_leaves(params)[0].dtype)
    if int(start) != start or start < 0:
        raise EoslabError(f"start must be a non-negative integer, got {start!r}")
    if start > 0:
        from eoslab.dynamics.gd import gd as plain_gd

        _, params = plain_gd(problem, lr, int(start), k=1, spectra="none", params0=params)
    w0, _ = ravel_pytree(params)
    unravel = FlatUnravel.of(params)
    P = w0.size
    k = min(k, P)
    k_max = max(min(k_max, P), k)
    key = jax.random.PRNGKey(seed)
    st = tracking.track_init(P, k, key, w0.dtype, block=min(P, k + 1))
    st_gd = tracking.track_init(P, 1, jax.random.fold_in(key, 1), w0.dtype, block=min(P, 2))
    sig = jnp.zeros((k * (k + 1) // 2,), w0.dtype)
    state = ((w0, st, sig), w0, w0, st_gd)
    lr_arr = jnp.asarray(lr, w0.dtype)
    recs, grown, t0, done = [], [], time.perf_counter(), 0
    # Equal chunk lengths when a divisor of `steps` in [chunk/2, chunk] exists: one compilation.
    n = next((c for c in range(min(chunk, steps), max(1, chunk // 2) - 1, -1) if steps % c == 0), chunk)
    with progress.task("central flow", total=steps) as bar:
        while done < steps:
            keep = min(n, steps - done)
            state, rec = (_chunk_fast_compile if fast_compile else _chunk)(
                problem, unravel, lr_arr, state, cfg=cfg, length=keep, with_gd=gd, with_gf=gf)
            rec = jax.device_get(rec)
            recs.append(rec)
            done += keep
            bar.advance(keep, info=f"λ₁η/2 {float(rec['sharpness'][-1]) * lr / 2:.4f}, "
                                f"at edge {int(rec['n_active'][-1])}")
            (w, st, sig), w_gd, w_gf, st_gd = state
            last = rec["eigs"][-1]
            if st.k < k_max and np.isfinite(last[-1]) and last[-1] >= (2.0 / lr) * (1 - 10 * cfg.edge_rtol):
                st = _grow(st, P, jax.random.fold_in(key, 100 + st.k))
                m = st.k * (st.k + 1) // 2
                sig = jnp.zeros((m,), w0.dtype)
                state = ((w, st, sig), w_gd, w_gf, st_gd)
                grown.append(done)
    out = _concat(recs, k_max)
    (w, st, _), w_gd, w_gf, _ = state
    out["w_cf"] = np.asarray(w)
    if gd:
        out["w_gd"] = np.asarray(w_gd)
    if gf:
        out["w_gf"] = np.asarray(w_gf)
    out["grown_at"] = grown
    na = out["n_active"]
    rises = np.flatnonzero(np.diff(np.concatenate([[0], na])) > 0)
    out["entered_at"] = [(int(i), int(na[i])) for i in rises]
    out["seconds"] = time.perf_counter() - t0
    out["start"] = int(start)
    return out


def _concat(recs, k_max):
    """Stack chunks whose ``eigs`` widths differ (the tracked set grew): pad with NaN."""
    out = {}
    for key in recs[0]:
        parts = []
        for r in recs:
            a = np.asarray(r[key])
            if key == "eigs" and a.shape[1] < k_max:
                a = np.concatenate([a, np.full((a.shape[0], k_max - a.shape[1]), np.nan)], axis=1)
            parts.append(a)
        out[key] = np.concatenate(parts)
    if "eigs" in out:
        keep = np.any(np.isfinite(out["eigs"]), axis=0)
        out["eigs"] = out["eigs"][:, keep]
    return out


def self_stabilization(out: dict, lr: float, start: int | None = None) -> dict:
    """The self-stabilization prediction (Damian, Nichani & Lee, ICLR 2023, §4) along the flow.

    GD's displacement from the (constrained / central) trajectory is x along the top eigenvector
    u and y = S_GD − 2/η along ∇S. Expanding ∇L to second order around the flow gives the
    two-variable map, with α = −⟨∇L, ∇S⟩ and β = ‖∇S‖² evaluated on the flow at each step:

        x_{t+1} = −(1 + η y_t) x_t,      y_{t+1} = y_t + η (α_t − β_t x_t² / 2).

    Its fixed point x² = 2α/β is the central flow's σ² (k = 1); around it the map cycles (for
    constant α, β its continuous-time limit conserves a Lotka-Volterra-like quantity; the map
    itself can spiral slowly outwards), so it predicts GD's oscillation *period by period*, where
    the central flow predicts its average. Started from GD's measured
    (x, y) at row ``start`` (default: the first row at the edge). Returns ``{"x": (T,), "y": (T,),
    "start": int}`` (NaN before ``start``; the map's own overflow, when it runs away, becomes
    NaN); needs a :func:`run` with ``gd=True``."""
    na = np.asarray(out["n_active"])
    T = na.size
    if start is None:
        # The first row at the edge where GD has moved off the flow (at a common start x = 0,
        # a fixed point of the map).
        on = np.flatnonzero((na > 0) & (np.abs(np.asarray(out["gd_x"])) > 0))
        start = int(on[0]) if on.size else 0
    x, y = np.full(T, np.nan), np.full(T, np.nan)
    x[start] = out["gd_x"][start]
    y[start] = out["gd_sharpness"][start] - 2.0 / lr
    a, b = np.asarray(out["alpha"]), np.asarray(out["beta"])
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(start, T - 1):
            x[t + 1] = -(1 + lr * y[t]) * x[t]
            y[t + 1] = y[t] + lr * (a[t] - b[t] * x[t] ** 2 / 2)
    bad = ~(np.isfinite(x) & np.isfinite(y))
    x[bad], y[bad] = np.nan, np.nan
    return {"x": x, "y": y, "start": start}


def smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of ``window`` steps (shrinking at the ends). A direct sum (not a
    difference of cumulative sums), so values many orders below the early ones stay exact."""
    x = np.asarray(x, float)
    w = max(int(window), 1)
    lo = np.clip(np.arange(x.size) - w // 2, 0, x.size)
    hi = np.clip(np.arange(x.size) - w // 2 + w, 0, x.size)
    return np.array([x[a:b].mean() for a, b in zip(lo, hi)])


def _first_nonfinite(x) -> int:
    """Index of the first non-finite entry of ``x`` ((T,) array), −1 if all are finite."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(x)))
    return int(bad[0]) if bad.size else -1


def summarize(out: dict, lr: float, window: int = 20) -> dict:
    """Scalars of a :func:`run`: how close the central flow is to GD over the EoS phase.

    The EoS phase is the rows from the first one with an eigenvalue at the edge to the end.
    ``ratio_final`` = ‖w_GD − w_CF‖ / ‖w_GD − w_GF‖ at the last row (``ratio_max_late``: the
    maximum over the second half of the phase); ``avg_loss_rel_err`` = max over the phase,
    after ``window`` steps, of |predicted time-averaged loss / GD's ``window``-step centred
    moving average − 1| (``avg_loss_rel_err_median``: its median); ``cf_loss_max_rise`` =
    max of L(w_CF(t+1)) − L(w_CF(t)) relative to L(w_CF(0)) (≤ 0: non-increasing);
    ``edge_max_dev`` = max |S − 2/η|/(2/η) on the flow during the phase (after 5 rows);
    ``cf_diverged_at`` (and ``gd_diverged_at``, ``gf_diverged_at`` when GD / GF ran): the first
    row whose loss is not finite, −1 if none (a diverged dynamics is a result, and the scalars
    after that row are NaN)."""
    edge = 2.0 / lr
    na = np.asarray(out["n_active"])
    on = np.flatnonzero(na > 0)
    T = na.size
    s = {"steps": int(T), "lr": float(lr), "edge": edge, "onset": int(on[0]) if on.size else -1,
         "max_at_edge": int(na.max()), "final_cf_loss": float(out["loss"][-1]),
         "final_avg_loss": float(out["avg_loss"][-1]), "final_trace_sigma": float(out["trace_sigma"][-1]),
         "final_sharpness": float(out["sharpness"][-1]),
         "cf_loss_max_rise": float(np.max(np.diff(out["loss"])) / abs(out["loss"][0])) if T > 1 else 0.0,
         "products_per_step": float(np.mean(out["products"])), "seconds": float(out.get("seconds", np.nan)),
         "grown_at": list(out.get("grown_at", [])), "entered_at": list(out.get("entered_at", [])),
         "cf_diverged_at": _first_nonfinite(out["loss"])}
    if "gd_loss" in out:
        s["final_gd_loss"] = float(out["gd_loss"][-1])
        s["diverged"] = bool(not np.all(np.isfinite(out["gd_loss"])))
        s["gd_diverged_at"] = _first_nonfinite(out["gd_loss"])
    if "gf_loss" in out:
        s["final_gf_loss"] = float(out["gf_loss"][-1])
        s["gf_diverged_at"] = _first_nonfinite(out["gf_loss"])
    if on.size:
        a = on[0]
        s["edge_max_dev"] = float(np.max(np.abs(out["sharpness"][a + 5:] - edge)) / edge) if T > a + 5 else 0.0
        if "gd_loss" in out:
            sm = smooth(out["gd_loss"], window)
            b = min(a + window, T - 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.abs(out["avg_loss"][b:] / sm[b:] - 1)
            s["avg_loss_rel_err"] = float(np.max(rel))
            s["avg_loss_rel_err_median"] = float(np.median(rel))
            s["gd_sharpness_late_mean"] = float(np.mean(out["gd_sharpness"][(a + T) // 2:]))
        if "dist_gd_gf" in out:
            d_cf, d_gf = out["dist_gd_cf"], out["dist_gd_gf"]
            s["dist_gd_cf_final"] = float(d_cf[-1])
            s["dist_gd_gf_final"] = float(d_gf[-1])
            s["ratio_final"] = float(d_cf[-1] / d_gf[-1])
            late = slice((a + T) // 2, T)
            s["ratio_max_late"] = float(np.max(d_cf[late] / d_gf[late]))
    return s
