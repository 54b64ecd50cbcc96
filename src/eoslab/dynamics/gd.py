"""Parameter-space gradient descent with diagnostics at every step."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from eoslab._precision import follows, like

from eoslab.dynamics import optim
from eoslab.dynamics.optim import Optimizer
from eoslab.dynamics.stepper import all_finite, init_state, make_step, masked_scan, scan  # noqa: F401
from eoslab.errors import EoslabError
from eoslab.problem import Params, Problem
from eoslab.spectra.dense import hessian_matrix, ntk_matrix, top_eigvals
from eoslab.spectra.lanczos import fixed_start, lanczos
from eoslab.spectra.operators import hvp, ntk_vp
from eoslab.typing import Array, Bool, Float, Int, Scalar

#: Keys of a trajectory, shared by :func:`gd`, :func:`eoslab.dynamics.train.train` (which adds
#: the tracked spectra's residuals and products, see :data:`eoslab.dynamics.train.TRAIN_KEYS`)
#: and the output-space / high-dimensional steppers. Every array has the step index as its
#: (first non-batch) axis; row t describes the iterate θ_t *before* the t-th update.
TRAJECTORY_KEYS = {
    "loss": "L(θ_t)",
    "residual_norm": "‖z_t‖ (Euclidean norm of the residuals f(θ_t) − y)",
    "grad_norm": "‖∇L(θ_t)‖ (of the gradient the update used)",
    "hessian_eigs": "(k,) top-k algebraic eigenvalues of ∇²L(θ_t), descending",
    "ntk_eigs": "(k,) top-k eigenvalues of the NTK J Jᵀ/norm (NaN-padded when k > N)",
    "preconditioned_eigs": "(k,) top-k eigenvalues of P^{-1/2}∇²L P^{-1/2} (adaptive optimizers only)",
    "edge": "the optimizer's stability threshold for this update (2/η for GD, 2(1+β)/η heavy-ball, ...)",
    "edge_ratio": "λ₁ of the optimizer's stability operator (∇²L, or P^{-1/2}∇²L P^{-1/2}) / edge: 1 is its edge",
    "eta_lambda_half": "η·λ_max(∇²L)/2 (GD's normalisation, 1 is GD's edge; see edge_ratio otherwise)",
    "eta_ntk_half": "η·λ_max(NTK)/2 (GD's normalisation)",
    "diverged": "True from the first step whose loss or new state is non-finite; other rows are NaN there",
}

#: A run that did not diverge ended at the edge of stability when its final η·λ_max/2 exceeds
#: this (below it: it converged under the edge). One convention for every model and report.
EOS_THRESHOLD = 0.9

SPECTRA = ("dense", "lanczos", "none")


def record(loss: Float[Array, "*batch"], residuals: Float[Array, "..."], grad_norm: Float[Array, "*batch"],
           hess_eigs: Float[Array, "*batch k"], ntk_eigs: Float[Array, "*batch k"], lr: Scalar,
           edge: Scalar | None = None) -> dict[str, Array]:
    """The standard per-step record (shared by parameter- and output-space dynamics); ``edge``
    defaults to GD's 2/η."""
    lr = jnp.asarray(lr, jnp.result_type(loss))
    edge = 2.0 / lr if edge is None else edge
    return {
        "loss": loss,
        "residual_norm": jnp.linalg.norm(residuals.reshape(-1)),
        "grad_norm": grad_norm,
        "hessian_eigs": hess_eigs,
        "ntk_eigs": ntk_eigs,
        "edge": jnp.broadcast_to(edge, jnp.shape(loss)).astype(jnp.result_type(loss)),
        "edge_ratio": hess_eigs[..., 0] / edge,
        "eta_lambda_half": lr * hess_eigs[..., 0] / 2,
        "eta_ntk_half": lr * ntk_eigs[..., 0] / 2,
    }


def check_run_args(lr: Scalar, steps: int, k: int, spectra: str) -> None:
    if isinstance(lr, (int, float)) and not (lr > 0 and lr < float("inf")):
        raise EoslabError(f"step size must be a finite positive number, got {lr!r}")
    if steps is None or int(steps) != steps or steps <= 0:
        raise EoslabError(f"steps must be a positive integer, got {steps!r}")
    if int(k) != k or k <= 0:
        raise EoslabError(f"k (number of eigenvalues) must be a positive integer, got {k!r}")
    if spectra not in SPECTRA:
        raise EoslabError(f"unknown spectra method {spectra!r}; expected one of {SPECTRA}")


def _nan_eigs(k, dtype):
    return jnp.full((k,), jnp.nan, dtype)


def default_optimizer(lr: Scalar, momentum: Scalar = 0.0) -> Optimizer:
    """GD, or heavy-ball when ``momentum`` is non-zero (or traced)."""
    if isinstance(momentum, (int, float)) and momentum == 0:
        return optim.gd(lr)
    return optim.heavy_ball(lr, momentum)


def gd(problem: Problem, lr: Scalar | None = None, steps: int | None = None, *,
       optimizer: Optimizer | optax.GradientTransformation | None = None, k: int = 2, spectra: str = "dense",
       momentum: float = 0.0, lanczos_iters: int = 20, record_params: bool = False, params0: Params | None = None
       ) -> tuple[dict[str, Float[Array, "T ..."]], Params]:
    """Full-batch gradient descent ``θ ← θ − η ∇L(θ)`` (or any optimizer) for ``steps`` steps.

    Args:
      problem: the model, data and θ₀ (``params0`` overrides θ₀).
      lr: step size η (scalar; traced, so it can be ``vmap``-ped). With ``momentum`` β ≠ 0 the
        run is heavy-ball (:func:`eoslab.dynamics.optim.heavy_ball`).
      steps: number of updates (static).
      optimizer: instead of ``lr``/``momentum``: any :class:`~eoslab.dynamics.optim.Optimizer`
        or optax ``GradientTransformation`` (full batch).
      k: number of top eigenvalues recorded for the Hessian and the NTK (and, for adaptive
        optimizers with dense spectra, of P^{-1/2}∇²L P^{-1/2}).
      spectra: ``"dense"`` (jax.hessian/jacobian + eigh, small P), ``"lanczos"``
        (matrix-free, ``lanczos_iters`` products per step, warm-started from the previous
        step's top eigenvector; step 0 starts from the deterministic
        :func:`~eoslab.spectra.lanczos.fixed_start`, so no key is needed) or ``"none"``.
      record_params: also record θ_t (flattened, (steps, P)) under ``"params"``.

    Returns:
      ``(trajectory, final_params)`` with trajectory a dict of (steps, ...) arrays, keys
      :data:`TRAJECTORY_KEYS` (+ ``"params"``); ``edge`` is the optimizer's threshold.
    """
    if optimizer is None:
        if lr is None:
            raise EoslabError("gd needs a step size lr or an optimizer")
        check_run_args(lr, steps, k, spectra)
        opt = default_optimizer(lr, momentum)
    else:
        if lr is not None or (isinstance(momentum, (int, float)) and momentum != 0):
            raise EoslabError("give either lr/momentum or optimizer, not both")
        check_run_args(1.0, steps, k, spectra)
        opt = optim.as_optimizer(optimizer)
    params0 = problem.params if params0 is None else params0
    with like(problem, params0):  # float64 problems compute in float64; float32 ones stay float32
        # The state (η, β, ... in the parameters' dtype) is built outside the jitted run: one
        # compilation for all η.
        state = init_state(params0, opt, aux=_warm0(problem, params0, spectra))
        return _gd(problem, state, opt, steps=steps, k=k, spectra=spectra, lanczos_iters=lanczos_iters,
                   record_params=record_params)


def _warm0(problem, params0, spectra):
    if spectra != "lanczos":
        return ()
    flat0 = ravel_pytree(params0)[0]
    return fixed_start(flat0.size, flat0.dtype), fixed_start(problem.targets.size, flat0.dtype, 1)


def spectra_observer(problem: Problem, optimizer: Optimizer, *, k: int, spectra: str, lanczos_iters: int = 20,
                     record_params: bool = False) -> Callable:
    """The ``observe`` of :func:`gd`: the :data:`TRAJECTORY_KEYS` record of θ_t (dense, Lanczos or no spectra)."""

    def observe(ctx):
        p, warm = ctx.params, ctx.aux
        flat = ravel_pytree(p)[0]
        dtype = flat.dtype
        extra = {}
        if spectra == "dense":
            H = hessian_matrix(problem, p)
            he, ne = top_eigvals(H, k), top_eigvals(ntk_matrix(problem, p), k)
            if optimizer.quantity == "preconditioned":
                s = 1.0 / jnp.sqrt(ravel_pytree(optimizer.preconditioner(ctx.opt_state))[0])
                extra["preconditioned_eigs"] = top_eigvals(s[:, None] * H * s[None, :], k)
        elif spectra == "none":
            he, ne = _nan_eigs(k, dtype), _nan_eigs(k, dtype)
        else:
            hmv, _ = hvp(problem, p)
            nmv, _ = ntk_vp(problem, p)
            h = lanczos(hmv, warm[0], lanczos_iters, k)
            nt = lanczos(nmv, warm[1], lanczos_iters, k)
            pad = lambda x: jnp.concatenate([x, _nan_eigs(max(k - x.shape[0], 0), dtype)])
            he, ne, warm = pad(h.values), pad(nt.values), (h.vectors[0], nt.vectors[0])
        edge = jnp.asarray(optimizer.edge(ctx.opt_state), dtype)
        lr = getattr(ctx.opt_state, "lr", jnp.asarray(jnp.nan, dtype))
        rec = record(ctx.loss, problem.residuals(p), optax.tree.norm(ctx.grads), he, ne, lr, edge)
        if "preconditioned_eigs" in extra:
            rec["edge_ratio"] = extra["preconditioned_eigs"][0] / edge
        rec.update(extra)
        if record_params:
            rec["params"] = flat
        return warm, rec

    return observe


@functools.partial(jax.jit, static_argnames=("optimizer", "steps", "k", "spectra", "lanczos_iters", "record_params"))
def _gd(problem, state, optimizer, *, steps, k, spectra, lanczos_iters, record_params):
    observe = spectra_observer(problem, optimizer, k=k, spectra=spectra, lanczos_iters=lanczos_iters,
                               record_params=record_params)
    step = make_step(problem.loss_fn, optimizer, observe=observe, stochastic=False)
    state, traj = scan(step, state, steps)
    return traj, state.params


def sweep(run: Callable, *, batched: dict[str, Any], **fixed: Any) -> Any:
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


def first_true(flags: Bool[Array, "*batch T"]) -> Int[Array, "*batch"]:
    """Index of the first True along the last axis, or −1 when there is none."""
    idx = jnp.argmax(flags, axis=-1)
    return jnp.where(jnp.any(flags, axis=-1), idx, -1)


@follows("traj")
def summarize(traj: dict, tail: int = 100) -> dict:
    """Scalars of a (possibly batched) trajectory: ``diverged``, ``diverged_at`` (−1 if
    not), ``final_loss``, ``final_eta_ntk_half``, ``final_eta_lambda_half`` and
    ``final_edge_ratio`` (means of the last ``tail`` finite rows: at EoS the iterates
    oscillate with period 2, so a single row is not the limit) and ``steps_above_edge``
    (rows whose λ₁ exceeds the optimizer's own edge, ``edge_ratio > 1``).
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
        "final_edge_ratio": last(traj["edge_ratio"]),
        "steps_above_edge": jnp.sum(traj["edge_ratio"] > 1, axis=-1),
    }
    if any(isinstance(v, jax.core.Tracer) for v in out.values()):
        return out
    return {k: np.asarray(v) for k, v in out.items()}
