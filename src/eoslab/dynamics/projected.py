"""Projected gradient descent onto a box, θ ← Π_C(θ − η∇L(θ)), C = {lower ≤ θ ≤ upper}.

The Euclidean projection onto a box is a coordinate-wise clip, so Π_C is exact, cheap and
non-expansive; bounds may be ±inf (an unbounded side). Inside C the iteration is plain GD, so a
box containing the whole GD trajectory reproduces :func:`eoslab.dynamics.gd` exactly. The
records and divergence masking are those of :func:`~eoslab.dynamics.gd` (the same stepper, same keys).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from eoslab.dynamics import optim
from eoslab.dynamics.gd import check_run_args, spectra_observer
from eoslab.dynamics.stepper import init_state, make_step, scan
from eoslab._precision import follows
from eoslab.errors import EoslabError, runtime_check
from eoslab.problem import Params, Problem
from eoslab.typing import Array, ArrayLike, Float, Scalar


def project_box(theta: jax.Array, lower: jax.Array, upper: jax.Array) -> jax.Array:
    """Π_C(θ) = clip(θ, lower, upper), all (P,)."""
    return jnp.clip(theta, lower, upper)


@follows("problem", "params0")
def projected_gd(problem: Problem, lr: Scalar, steps: int, lower: Float[ArrayLike, "*P"], upper: Float[ArrayLike, "*P"],
                 *, k: int = 2, spectra: str = "dense", record_params: bool = False, params0: Params | None = None
                 ) -> tuple[dict[str, Float[Array, "T ..."]], Params]:
    """Projected GD for ``steps`` steps with dense spectra (small P).

    Args:
      problem: model, data and θ₀ (``params0`` overrides θ₀). θ₀ is projected first.
      lr: step size η (traced: ``vmap``-able).
      lower, upper: bounds (P,) on the flattened parameters (±inf allowed), lower ≤ upper.
      k: number of top Hessian/NTK eigenvalues recorded.
      spectra: ``"dense"`` (jax.hessian/jacobian + eigh: small P and few outputs) or ``"none"``
        (NaN eigenvalues; e.g. for many data points, where the N×N NTK is too large).
      record_params: also record θ_t (steps, P) under ``"params"``.

    Returns ``(trajectory, final_params)`` as :func:`eoslab.dynamics.gd`, plus the key
    ``"projected"`` (steps,) bool: the projection was active at that update.
    """
    check_run_args(lr, steps, k, spectra)
    if spectra == "lanczos":
        raise EoslabError("projected_gd supports spectra='dense' or 'none'")
    params0 = problem.params if params0 is None else params0
    flat0, _ = ravel_pytree(params0)
    lower = jnp.broadcast_to(jnp.asarray(lower, flat0.dtype), flat0.shape)
    upper = jnp.broadcast_to(jnp.asarray(upper, flat0.dtype), flat0.shape)
    runtime_check(~jnp.any(lower > upper), "projection box is empty: lower > upper somewhere",
                  lambda: f"lower {lower}, upper {upper}")
    return _projected_gd(problem, jnp.asarray(lr), params0, lower, upper, steps=steps, k=k,
                         spectra=spectra, record_params=record_params)


@functools.partial(jax.jit, static_argnames=("steps", "k", "spectra", "record_params"))
def _projected_gd(problem, lr, params0, lower, upper, *, steps, k, spectra, record_params):
    flat0, unravel = ravel_pytree(params0)
    opt = optim.gd(jnp.asarray(lr, flat0.dtype))
    observe = spectra_observer(problem, opt, k=k, spectra=spectra, record_params=record_params)
    project = lambda p: unravel(project_box(ravel_pytree(p)[0], lower, upper))
    step = make_step(problem.loss_fn, opt, observe=observe, project=project, stochastic=False)
    state, traj = scan(step, init_state(project(params0), opt), steps)
    return traj, state.params
