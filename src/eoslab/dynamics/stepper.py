"""The one stepper: a pure step function of an explicit state, and one divergence-masking scan.

Every parameter-space dynamics in eoslab (:func:`~eoslab.dynamics.gd`, :func:`~eoslab.dynamics.train.train`,
projected GD, the convergence sweeps, the experiment kinds) is

    state = init_state(params, optimizer, aux=..., key=...)
    step  = make_step(loss_fn, optimizer, observe=..., project=..., batch_loss=...)
    state, records = scan(step, state, length)        # or several chunks of it

* ``step(state) -> (state', record)`` is pure: no host round trip, no Python state; every
  number it needs (η, β, moments, tracker vectors, PRNG key, step index) is in ``state``, so
  ``jax.vmap(step)`` over a batch of states (e.g. made by ``jax.vmap(lambda lr: init_state(p,
  heavy_ball(lr, 0.9)))(lrs)``) advances a batch of runs, and ``jax.vmap(lambda s: scan(step, s,
  n))`` runs them.
* ``record`` describes θ_t *before* the update: ``loss`` (of the gradient used: the mini-batch
  loss when ``batch_loss`` is given), ``grad_norm`` (‖g_t‖), ``edge`` (the optimizer's
  threshold for this update, :meth:`eoslab.dynamics.optim.Optimizer.edge`) and whatever
  ``observe`` adds.
* :func:`scan` masks divergence: at the first step whose loss, new parameters or new optimizer
  state hold a non-finite value the run is flagged, that row and all later rows have NaN floats
  and ``diverged`` True, and the state is frozen at the last finite iterate.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from eoslab.dynamics.optim import Optimizer, as_optimizer
from eoslab.errors import EoslabError
from eoslab.spectra.operators import flatten, tree_rows
from eoslab.typing import Array, Bool, Int, Params, PRNGKeyArray, PyTree


class StepState(NamedTuple):
    """The whole state of a run (a pytree; batch it with ``vmap``).

    params: the parameters θ_t (the user's pytree and dtype).
    opt_state: the optimizer's state (its hyperparameters included, for the built-ins).
    aux: the diagnostics' state (e.g. the tracker states of :mod:`eoslab.spectra.tracking`); ``()`` if none.
    key: PRNG key, split once per step when the step is stochastic; ``None`` for a run that
      draws nothing.
    t: int32, index of the next update (rows are numbered by it).
    diverged: bool, the run has produced a non-finite value.
    """

    params: Any
    opt_state: Any
    aux: Any
    key: jax.Array | None
    t: jax.Array
    diverged: jax.Array


class Context(NamedTuple):
    """What an ``observe`` function sees at step t (all traced arrays / pytrees).

    params θ_t; loss and grads the value and gradient the update used; updates the
    optimizer's update u_t (θ_{t+1} = θ_t + u_t, before any projection); new_params θ_{t+1};
    opt_state the optimizer state after the update (so ``optimizer.edge(opt_state)`` and
    ``optimizer.preconditioner(opt_state)`` describe this update); aux the diagnostics'
    state; t the step index; key a PRNG key for this step's diagnostics (independent of the
    mini-batch's; ``None`` in a deterministic step); hvps the Hessian-vector products ∇²L(θ_t)·v
    of the vectors ``tangents(aux)`` asked for by :func:`make_step` ((m, P) in the
    ``ravel_pytree`` order of the parameters, computed in the same pass as the gradient), else None;
    hvp, with hvps, the matvec ``v ↦ ∇²L(θ_t)·v`` ((P,) flat vectors) of the same linearisation
    (each further product is only the tangent part: the gradient's passes are not re-run).
    """

    params: Any
    loss: jax.Array
    grads: Any
    updates: Any
    new_params: Any
    opt_state: Any
    aux: Any
    t: jax.Array
    key: jax.Array | None
    hvps: Any = None
    hvp: Callable | None = None


def init_state(params: Params, optimizer: Optimizer | optax.GradientTransformation, *, aux: PyTree = (),
               key: PRNGKeyArray | None = None) -> StepState:
    """The state before step 0: ``optimizer.init(params)``, the diagnostics' ``aux``, a PRNG ``key``.

    ``key=None`` declares a run that draws nothing (full-batch updates, deterministic
    diagnostics: a ``make_step(..., stochastic=False)`` step); a stochastic step (mini-batches,
    random diagnostics) refuses such a state when it is traced, so no run silently shares
    a default key."""
    optimizer = as_optimizer(optimizer)
    return StepState(params, optimizer.init(params), aux, key, jnp.zeros([], jnp.int32), jnp.array(False))


def make_step(loss_fn: Callable, optimizer: Optimizer | optax.GradientTransformation, *, observe: Callable | None = None, project: Callable | None = None,
              batch_loss: Callable | None = None, stochastic: bool | None = None,
              tangents: Callable | None = None) -> Callable:
    """The pure step ``step(state) -> (state', record)``.

    Args:
      loss_fn: ``params -> scalar`` (the full-batch loss).
      optimizer: an :class:`~eoslab.dynamics.optim.Optimizer` or any optax ``GradientTransformation``.
      observe: ``Context -> (aux', dict)``: per-step diagnostics; the dict is merged into the record.
      project: ``params -> params`` applied after the update (projected methods).
      batch_loss: ``(params, key) -> scalar``: the loss of a random mini-batch drawn with
        ``key``; when given, the update uses its gradient (SGD).
      stochastic: split ``state.key`` every step (default: when ``batch_loss`` or ``observe``
        is given; plain GD skips the split).
      tangents: ``aux -> (m, P) array or None``: vectors (flat, in the ``ravel_pytree`` order
        of the parameters) whose Hessian-vector products the observer needs at θ_t. The step
        then computes the loss, the gradient and those products in one forward-over-reverse
        pass (``jax.jvp`` of ``jax.value_and_grad``, ``vmap``-ped over the m vectors: the
        forward and backward passes of the gradient are shared) and hands the products to
        ``observe`` as ``Context.hvps``. Full batch only (ignored with ``batch_loss``).
    """
    optimizer = as_optimizer(optimizer)
    stochastic = (batch_loss is not None or observe is not None) if stochastic is None else bool(stochastic)

    def step(state: StepState):
        params = state.params
        if stochastic:
            if state.key is None:
                raise EoslabError("this step draws random numbers (mini-batches or diagnostics): "
                                  "build its state with init_state(..., key=jax.random.PRNGKey(seed))")
            key, k_batch, k_obs = jax.random.split(state.key, 3)
        else:
            key = k_batch = k_obs = state.key
        vectors = tangents(state.aux) if (tangents is not None and batch_loss is None) else None
        hvps = hvp = None
        if vectors is not None:
            loss, grads, hvps, hvp = _value_grad_hvps(loss_fn, params, vectors)
        elif batch_loss is None:
            loss, grads = jax.value_and_grad(loss_fn)(params)
        else:
            loss, grads = jax.value_and_grad(batch_loss)(params, k_batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        new_params = optax.apply_updates(params, updates)
        rec = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "edge": jnp.asarray(optimizer.edge(opt_state), loss.dtype)}
        if project is not None:
            projected = project(new_params)
            rec["projected"] = jnp.any(jnp.stack([jnp.any(a != b) for a, b in zip(
                jax.tree_util.tree_leaves(projected), jax.tree_util.tree_leaves(new_params))]))
            new_params = projected
        aux = state.aux
        if observe is not None:
            aux, extra = observe(Context(params, loss, grads, updates, new_params, opt_state, aux, state.t, k_obs,
                                         hvps, hvp))
            rec.update(extra)
        return StepState(new_params, opt_state, aux, key, state.t + 1, state.diverged), rec

    return step


def _value_grad_hvps(loss_fn, params, vectors):
    """``(L(θ), ∇L(θ), ∇²L(θ)·V, v ↦ ∇²L(θ)·v)`` in one pass: value_and_grad linearised at θ
    (``jax.linearize``: the primal, loss and gradient, computed once) and its tangent map
    applied to the rows of V (m, P) (:func:`~eoslab.spectra.operators.tree_rows`: written leaf by
    leaf, as the tracker's products are by :func:`~eoslab.spectra.operators.flatten`; one
    ``ravel_pytree`` concatenate here cost about 2 ms per step at P = 10⁵ on XLA:CPU, a layout
    transpose fused into it and the fusion duplicated); the returned matvec reuses the same
    linearisation."""
    flat, unravel = ravel_pytree(params)
    (loss, grads), lin = jax.linearize(jax.value_and_grad(loss_fn), params)
    tangent = lambda v: lin(unravel(v.astype(flat.dtype)))[1]
    return loss, grads, tree_rows(tangent, vectors, flat.dtype), lambda v: flatten(tangent(v), flat.dtype)


def all_finite(tree: PyTree) -> Bool[Array, ""]:
    """True iff every inexact leaf of ``tree`` is finite (a scalar bool)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _nan_where(flag, rec):
    return jax.tree_util.tree_map(
        lambda x: jnp.where(flag, jnp.nan, x) if jnp.issubdtype(x.dtype, jnp.inexact) else x, rec)


def masked(step: Callable, *, total: int | Int[Array, ""] | None = None) -> Callable:
    """``step`` with divergence masking (see the module docstring) and, if ``total`` is given,
    inactivity from step ``total`` on (the state is kept; for a scan padded to a chunk size)."""

    def body(state: StepState):
        new, rec = step(state)
        active = jnp.array(True) if total is None else state.t < total
        bad = ~(jnp.isfinite(rec["loss"]) & all_finite(new.params) & all_finite(new.opt_state))
        div = state.diverged | (active & bad)
        rec = _nan_where(div, rec)
        rec["diverged"] = div
        keep = div | ~active
        out = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), state, new)
        return out._replace(diverged=div), rec

    return body


def scan(step: Callable, state: StepState, length: int, *, total: int | Int[Array, ""] | None = None,
         records: bool = True) -> tuple[StepState, dict[str, Array] | None]:
    """Run ``length`` masked steps in one ``lax.scan``: ``(final_state, records)``.

    ``records`` are the stacked per-step dicts (leading axis ``length``) with ``diverged``
    added; ``records=False`` keeps none (``None``), for long runs that only need the end.
    ``total`` (traced int): steps with ``t ≥ total`` are inactive (state unchanged)."""
    body = masked(step, total=total)

    def f(s, _):
        s, rec = body(s)
        return s, (rec if records else None)

    return jax.lax.scan(f, state, None, length=length)


def masked_scan(advance: Callable, state0: PyTree, steps: int) -> tuple[PyTree, dict[str, Array]]:
    """The same divergence masking for recurrences that are not parameter-space optimizers
    (the exact output-space (z, J) maps of second-order models).

    Iterates ``state, rec, check = advance(state)`` ``steps`` times, ``rec`` describing the
    state *before* the update and ``check`` a pytree that must be finite (the loss and the new
    state). From the first non-finite ``check`` every float of the record is NaN, ``diverged``
    is True and the state is frozen. Returns ``(final_state, records)``.
    """

    def body(carry, _):
        state, div = carry
        new, rec, check = advance(state)
        div = div | ~all_finite(check)
        rec = _nan_where(div, rec)
        rec["diverged"] = div
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(div, a, b), state, new)
        return (new, div), rec

    (state, _), recs = jax.lax.scan(body, (state0, jnp.array(False)), None, length=steps)
    return state, recs
