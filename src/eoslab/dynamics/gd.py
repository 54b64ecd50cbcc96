"""Parameter-space gradient descent with diagnostics at every step."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from eoslab._precision import follows, like
from eoslab.errors import EoslabError
from eoslab.problem import Params, Problem
from eoslab.spectra.dense import hessian_matrix, ntk_matrix, top_eigvals
from eoslab.spectra.lanczos import lanczos
from eoslab.spectra.operators import hvp, ntk_vp

#: Keys of a trajectory; every array has the step index as its (first non-batch) axis.
#: Row t describes the iterate θ_t *before* the t-th update (t = 0 … steps−1).
TRAJECTORY_KEYS = {
    "loss": "L(θ_t)",
    "residual_norm": "‖z_t‖ (Euclidean norm of the residuals f(θ_t) − y)",
    "grad_norm": "‖∇L(θ_t)‖",
    "hessian_eigs": "(k,) top-k algebraic eigenvalues of ∇²L(θ_t), descending",
    "ntk_eigs": "(k,) top-k eigenvalues of the NTK J Jᵀ/norm (NaN-padded when k > N)",
    "eta_lambda_half": "η·λ_max(∇²L)/2: 1 is the edge of stability",
    "eta_ntk_half": "η·λ_max(NTK)/2",
    "diverged": "True from the first step whose loss or state is non-finite; other rows are NaN there",
}

#: A run that did not diverge ended at the edge of stability when its final η·λ_max/2 exceeds
#: this (below it: it converged under the edge). One convention for every model and report.
EOS_THRESHOLD = 0.9

SPECTRA = ("dense", "lanczos", "none")


def all_finite(tree) -> jax.Array:
    """True (a scalar array) when every inexact leaf of ``tree`` is finite; integer leaves are ignored."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def masked_scan(advance: Callable, state0, steps: int):
    """Iterate ``state, rec, check = advance(state)`` ``steps`` times, stacking ``rec``.

    ``rec`` describes the state *before* the update and ``check`` is a pytree (e.g. the
    loss) that must be finite. At the first step where ``check`` or the state holds a
    non-finite value the run is marked diverged: from there on every float in the record
    is NaN, ``diverged`` is True and the state is frozen, so an overflow at large η is a
    result, never an exception. Returns ``(final_state, records)``.
    """

    def body(carry, _):
        state, div = carry
        new, rec, check = advance(state)
        div = div | ~(all_finite(check) & all_finite(state))
        rec = jax.tree_util.tree_map(
            lambda x: jnp.where(div, jnp.nan, x) if jnp.issubdtype(x.dtype, jnp.inexact) else x, rec)
        rec["diverged"] = div
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(div, a, b), state, new)
        return (new, div), rec

    (state, _), recs = jax.lax.scan(body, (state0, jnp.array(False)), None, length=steps)
    return state, recs


def record(loss, residuals, grad_norm, hess_eigs, ntk_eigs, lr) -> dict:
    """The standard per-step record (shared by parameter- and output-space dynamics)."""
    return {
        "loss": loss,
        "residual_norm": jnp.linalg.norm(residuals.reshape(-1)),
        "grad_norm": grad_norm,
        "hessian_eigs": hess_eigs,
        "ntk_eigs": ntk_eigs,
        "eta_lambda_half": lr * hess_eigs[0] / 2,
        "eta_ntk_half": lr * ntk_eigs[0] / 2,
    }


def check_run_args(lr, steps: int, k: int, spectra: str) -> None:
    if isinstance(lr, (int, float)) and not (lr > 0 and lr < float("inf")):
        raise EoslabError(f"step size must be a finite positive number, got {lr!r}")
    if int(steps) != steps or steps <= 0:
        raise EoslabError(f"steps must be a positive integer, got {steps!r}")
    if int(k) != k or k <= 0:
        raise EoslabError(f"k (number of eigenvalues) must be a positive integer, got {k!r}")
    if spectra not in SPECTRA:
        raise EoslabError(f"unknown spectra method {spectra!r}; expected one of {SPECTRA}")


def _nan_eigs(k, dtype):
    return jnp.full((k,), jnp.nan, dtype)


def gd(problem: Problem, lr, steps: int, *, k: int = 2, spectra: str = "dense", momentum: float = 0.0,
       lanczos_iters: int = 20, record_params: bool = False, params0: Params | None = None):
    """Full-batch GD ``θ ← θ − η ∇L(θ)`` (heavy-ball if ``momentum`` > 0) for ``steps`` steps.

    Args:
      problem: the model, data and θ₀ (``params0`` overrides θ₀).
      lr: step size η (scalar; traced, so it can be ``vmap``-ped).
      steps: number of updates (static).
      k: number of top eigenvalues recorded for the Hessian and the NTK.
      spectra: ``"dense"`` (jax.hessian/jacobian + eigh, small P), ``"lanczos"``
        (matrix-free, ``lanczos_iters`` products per step, warm-started from the previous
        step's top eigenvector) or ``"none"``.
      record_params: also record θ_t (flattened, (steps, P)) under ``"params"``.

    Returns:
      ``(trajectory, final_params)`` with trajectory a dict of (steps, ...) arrays, keys
      :data:`TRAJECTORY_KEYS` (+ ``"params"``).
    """
    check_run_args(lr, steps, k, spectra)
    params0 = problem.params if params0 is None else params0
    with like(problem, params0):  # float64 problems compute in float64; float32 ones stay float32
        return _gd(problem, jnp.asarray(lr), params0, steps=steps, k=k, spectra=spectra, momentum=momentum,
                   lanczos_iters=lanczos_iters, record_params=record_params)


@functools.partial(jax.jit, static_argnames=("steps", "k", "spectra", "lanczos_iters", "record_params"))
def _gd(problem, lr, params0, *, steps, k, spectra, momentum, lanczos_iters, record_params):
    flat0, unravel = ravel_pytree(params0)
    dtype = flat0.dtype
    # Hyper-parameters take the parameters' dtype: a float64 step size (e.g. a batched
    # jnp.linspace under x64) must not promote a float32 model's iterates (scan carry type).
    lr, momentum = jnp.asarray(lr, dtype), jnp.asarray(momentum, dtype)
    loss_flat = lambda v: problem.loss_fn(unravel(v))
    n_out = problem.targets.size

    def spectra_of(v, warm):
        p = unravel(v)
        if spectra == "dense":
            return top_eigvals(hessian_matrix(problem, p), k), top_eigvals(ntk_matrix(problem, p), k), warm
        if spectra == "none":
            return _nan_eigs(k, dtype), _nan_eigs(k, dtype), warm
        hmv, _ = hvp(problem, p)
        nmv, _ = ntk_vp(problem, p)
        h = lanczos(hmv, warm[0], lanczos_iters, k)
        nt = lanczos(nmv, warm[1], lanczos_iters, k)
        pad = lambda x: jnp.concatenate([x, _nan_eigs(max(k - x.shape[0], 0), dtype)])
        return pad(h.values), pad(nt.values), (h.vectors[0], nt.vectors[0])

    def advance(state):
        v, vel, warm = state
        loss, g = jax.value_and_grad(loss_flat)(v)
        he, ne, warm = spectra_of(v, warm)
        rec = record(loss, problem.residuals(unravel(v)), jnp.linalg.norm(g), he, ne, lr)
        if record_params:
            rec["params"] = v
        vel = momentum * vel - lr * g
        return (v + vel, vel, warm), rec, loss

    key = jax.random.PRNGKey(0)
    warm0 = (jax.random.normal(key, flat0.shape, dtype),
             jax.random.normal(jax.random.fold_in(key, 1), (n_out,), dtype))
    (v, _, _), traj = masked_scan(advance, (flat0, jnp.zeros_like(flat0), warm0), steps)
    return traj, unravel(v)


def sweep(run: Callable, *, batched: dict, **fixed):
    """Run ``run(**batched, **fixed)`` for a batch of configurations in one ``vmap``.

    ``batched`` maps argument names to arrays/pytrees with a leading batch axis B (all
    the same B, zipped: build a grid with ``jnp.meshgrid`` first); ``fixed`` arguments are
    shared. Example: ``sweep(gd, batched={"lr": lrs, "params0": thetas}, problem=p, steps=500)``.
    Returns the runner's outputs with a leading axis B.
    """
    sizes = {name: jax.tree_util.tree_leaves(val)[0].shape[0] for name, val in batched.items()}
    if len(set(sizes.values())) > 1:
        raise EoslabError(f"batched arguments have different batch sizes: {sizes}")
    names = list(batched)

    def one(*vals):
        return run(**dict(zip(names, vals)), **fixed)

    with like(fixed.get("problem"), fixed.get("params0"), batched.get("problem"), batched.get("params0")):
        return jax.vmap(one)(*[batched[n] for n in names])


def first_true(flags: jax.Array) -> jax.Array:
    """Index of the first True along the last axis, or −1 when there is none."""
    idx = jnp.argmax(flags, axis=-1)
    return jnp.where(jnp.any(flags, axis=-1), idx, -1)


@follows("traj")
def summarize(traj: dict, tail: int = 100) -> dict:
    """Scalars of a (possibly batched) trajectory: ``diverged``, ``diverged_at`` (−1 if
    not), ``final_loss`` and ``final_eta_ntk_half`` (mean of the last ``tail`` finite rows:
    at EoS the iterates oscillate with period 2, so a single row is not the limit).
    Outside a trace the values are NumPy arrays, so that arithmetic on them keeps the
    trajectory's precision (float64 trajectories stay float64 in a float32 program)."""
    div = traj["diverged"]
    last = lambda x: jnp.nanmean(x[..., -tail:], axis=-1)
    out = {
        "diverged": div[..., -1],
        "diverged_at": first_true(div),
        "final_loss": last(traj["loss"]),
        "final_eta_ntk_half": last(traj["eta_ntk_half"]),
        "final_eta_lambda_half": last(traj["eta_lambda_half"]),
    }
    if any(isinstance(v, jax.core.Tracer) for v in out.values()):
        return out
    return {k: np.asarray(v) for k, v in out.items()}
