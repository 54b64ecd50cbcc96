"""Does GD converge to a critical point? A grid of step sizes × many initialisations, one ``vmap``.

For each step size η_k and initial point θ₀⁽ᵇ⁾ GD runs ``steps`` steps (in chunks of ``chunk`` steps
of the one stepper, :mod:`eoslab.dynamics.stepper`, so an overflow is a recorded divergence, and only
one row per chunk is stored). A run **converged to a critical point** iff

    it never produced a non-finite value  and  ‖∇L(θ_N)‖ ≤ grad_tol      (N = ``steps``).

It **converged to a global minimum** if moreover L(θ_N) ≤ loss_min + loss_tol (when ``loss_min`` is
given). Along every run the determinant of the Jacobian of the GD map, det(I − η∇²L(θ_t)), is
tracked at every step (its smallest |·|), when ``track_det`` is set.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from eoslab.dynamics import optim
from eoslab.dynamics.gd import gd
from eoslab.dynamics.stepper import init_state, make_step, scan
from eoslab.errors import EoslabError, check_positive, check_positive_int
from eoslab.models import linear_net
from eoslab.problem import Problem
from eoslab._precision import x64
from eoslab.typing import ArrayLike, Float, PyTree


@x64
def convergence_sweep(problem: Problem, lrs: Float[ArrayLike, " L"], inits: PyTree, steps: int, *, grad_tol: float = 1e-6,
                      loss_min: float | None = None, loss_tol: float = 1e-8, chunk: int = 100,
                      track_det: bool = True) -> dict:
    """GD from every initialisation in ``inits`` at every step size in ``lrs``.

    Args:
      problem: the model and data (``problem.params`` gives the parameter structure).
      lrs: step sizes (K,), all > 0.
      inits: initial parameters, a pytree like ``problem.params`` with a leading batch axis B.
      steps: N, the number of GD steps (rounded up to a multiple of ``chunk``).
      grad_tol, loss_min, loss_tol: the convergence criteria (module docstring).
      track_det: record min_t |det(I − η∇²L(θ_t))| (a dense P×P Hessian per step: small P only).

    Returns a dict of arrays with leading axes (K, B): ``converged``, ``at_minimum``, ``diverged``,
    ``final_loss``, ``final_grad_norm``, ``final_sharpness`` (λ_max(∇²L(θ_N)), NaN if diverged),
    ``min_abs_det`` (NaN if not tracked), and ``loss_chunks``/``grad_norm_chunks`` (K, B, N/chunk):
    the values at the end of each chunk.
    """
    lrs = jnp.atleast_1d(jnp.asarray(lrs, jnp.float64))
    if lrs.ndim != 1 or not bool(jnp.all(jnp.isfinite(lrs) & (lrs > 0))):
        raise EoslabError(f"step sizes must be a 1-D list of finite positive numbers, got {lrs}")
    steps, chunk = check_positive_int("steps", steps), check_positive_int("chunk", min(chunk, steps))
    check_positive("grad_tol", grad_tol)
    n_chunks = -(-steps // chunk)
    out = _sweep(problem, lrs, inits, n_chunks=n_chunks, chunk=chunk, track_det=track_det)
    converged = ~out["diverged"] & (out["final_grad_norm"] <= grad_tol)
    at_min = converged & ((out["final_loss"] <= loss_min + loss_tol) if loss_min is not None
                          else jnp.ones_like(converged))
    out.update(converged=converged, at_minimum=at_min, steps=n_chunks * chunk)
    return out


@functools.partial(jax.jit, static_argnames=("n_chunks", "chunk", "track_det"))
def _sweep(problem, lrs, inits, *, n_chunks, chunk, track_det):
    _, unravel = ravel_pytree(problem.params)
    loss_flat = lambda v: problem.loss_fn(unravel(v))
    hess = jax.hessian(loss_flat)

    def one(lr, params0):
        v0, _ = ravel_pytree(params0)
        eye = jnp.eye(v0.size, dtype=v0.dtype)
        opt = optim.gd(lr)

        def observe(ctx):  # min_t log|det(I − η∇²L(θ_t))|, the GD map's Jacobian
            logdet = jnp.linalg.slogdet(eye - lr * hess(ravel_pytree(ctx.params)[0]))[1]
            return jnp.fmin(ctx.aux, logdet), {}

        step = make_step(loss_flat, opt, observe=observe if track_det else None, stochastic=False)

        def chunk_end(state, _):
            state, _ = scan(step, state, chunk, records=False)
            loss, g = jax.value_and_grad(loss_flat)(state.params)
            nan = jnp.array(jnp.nan, v0.dtype)
            rec = {"loss": jnp.where(state.diverged, nan, loss),
                   "grad_norm": jnp.where(state.diverged, nan, jnp.linalg.norm(g))}
            return state, rec

        state0 = init_state(v0, opt, aux=jnp.array(jnp.finfo(v0.dtype).max, v0.dtype))
        state, rec = jax.lax.scan(chunk_end, state0, None, length=n_chunks)
        v, diverged = state.params, state.diverged
        loss, g = jax.value_and_grad(loss_flat)(v)
        top = jnp.linalg.eigvalsh(hess(v))[-1]
        nan = jnp.array(jnp.nan, v.dtype)
        return {
            "diverged": diverged,
            "final_loss": jnp.where(diverged, nan, loss),
            "final_grad_norm": jnp.where(diverged, jnp.inf, jnp.linalg.norm(g)),
            "final_sharpness": jnp.where(diverged, nan, top),
            "min_abs_det": jnp.exp(state.aux) if track_det else nan,
            "loss_chunks": rec["loss"],
            "grad_norm_chunks": rec["grad_norm"],
        }

    return jax.vmap(lambda lr: jax.vmap(lambda p: one(lr, p))(inits))(lrs)


@x64
def uv_paths(problem: Problem, lrs: Float[ArrayLike, " L"], n_paths: int = 8, steps: int = 200,
             init_scale: float = 1.0, seed: int = 0) -> Float[np.ndarray, "L n_paths steps 2"]:
    """GD paths θ_t = (u, v) of a depth-2 scalar chain, (len(lrs), n_paths, steps, 2), from
    N(0, init_scale²) initialisations (one vmap over lrs × paths)."""
    if problem.num_params != 2:
        raise EoslabError("(u, v) paths need the depth-2 scalar chain (2 parameters)")
    inits = jax.vmap(lambda k: linear_net.init(k, (1, 1, 1), init_scale))(
        jax.random.split(jax.random.PRNGKey(seed), n_paths))
    run = lambda lr, p0: gd(problem, lr, steps, spectra="none", record_params=True, params0=p0)[0]["params"]
    return np.asarray(jax.vmap(lambda lr: jax.vmap(lambda p0: run(lr, p0))(inits))(jnp.asarray(lrs, jnp.float64)))


@x64
def path_lrs(lrs: Float[ArrayLike, " L"], threshold: float) -> Float[np.ndarray, " m"]:
    """Three step sizes of a grid for the (u, v) figure: the smallest, the largest below the
    threshold and the smallest above it (when they exist)."""
    lrs = np.asarray(lrs)
    below, above = lrs[lrs < threshold], lrs[lrs > threshold]
    picks = [lrs.min()] + ([below.max()] if below.size else []) + ([above.min()] if above.size else [])
    return np.unique(np.asarray(picks))
