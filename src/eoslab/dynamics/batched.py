"""A batch of full-batch trainings in one compiled call: B step sizes and/or seeds at once.

:func:`train_batch` advances B *members* (each its own η, momentum, parameters and, for
different seeds, its own data) with one jitted ``lax.scan`` per chunk of steps, the update
vmapped over the members, and tracks each member's top Hessian (NTK, Gauss-Newton)
eigenvalues with :mod:`eoslab.spectra.tracking`. Each member's divergence is masked on its
own, as in :func:`eoslab.dynamics.train.train`: from its first non-finite loss or parameter
its rows are NaN and its state is frozen, while the other members go on.

The update is the one of :func:`~eoslab.dynamics.train.train` (heavy ball,
``v ← μv − η∇L(θ); θ ← θ + v``; μ = 0 is GD), so a member's trajectory is that of ``train``
with the same arguments up to floating-point rounding (the batched and the single program
may reduce in a different order; in the chaotic edge-of-stability phase such differences
grow, as between two machines).

The spectra: ``spectra="map"`` (default) runs the members' trackers one after the other
inside the compiled program (``lax.map``), so each keeps its own control flow (a tracker
stops as soon as its own values have converged); ``spectra="vmap"`` vectorises them, which
turns the tracker's branches into selects (both sides computed) and runs every member's
iteration as long as the slowest one's. See ``benchmarks/batched_train.py`` for what each
costs on this machine.
"""

from __future__ import annotations

import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from eoslab import progress
from eoslab._precision import follows
from eoslab.errors import EoslabError, check_positive_int
from eoslab.problem import Problem
from eoslab.spectra import tracking

SPECTRA_MODES = ("map", "vmap")


def _members(problem, lr, momentum):
    """``(problems or None, shared problem, B, lrs, moms)``."""
    if isinstance(problem, Problem):
        probs = None
        lrs = np.atleast_1d(np.asarray(lr, float))
        B = lrs.size
    else:
        probs = list(problem)
        if not probs or not all(isinstance(p, Problem) for p in probs):
            raise EoslabError("problem must be a Problem or a non-empty sequence of Problems")
        B = len(probs)
        lrs = np.broadcast_to(np.asarray(lr, float), (B,)) if np.ndim(lr) == 0 else np.asarray(lr, float)
        s0 = jax.tree_util.tree_structure(probs[0])
        shapes0 = [(a.shape, a.dtype) for a in jax.tree_util.tree_leaves(probs[0])]
        for i, p in enumerate(probs[1:], 1):
            if jax.tree_util.tree_structure(p) != s0 or [(a.shape, a.dtype) for a in
                                                         jax.tree_util.tree_leaves(p)] != shapes0:
                raise EoslabError(f"problem {i} differs from problem 0 in its model, data shapes or dtypes; "
                                  "batched members must share them (only values may differ)")
    if lrs.shape != (B,):
        raise EoslabError(f"lr must be a number or {B} step sizes (one per member), got shape {lrs.shape}")
    if not np.all(np.isfinite(lrs) & (lrs > 0)):
        raise EoslabError(f"every step size must be a finite positive number, got {lrs.tolist()}")
    moms = np.broadcast_to(np.asarray(momentum, float), (B,)) if np.ndim(momentum) == 0 else np.asarray(momentum, float)
    if moms.shape != (B,) or not np.all((moms >= 0) & (moms < 1)):
        raise EoslabError(f"momentum must be one number or {B} numbers in [0, 1), got {np.asarray(momentum).tolist()}")
    return probs, (problem if probs is None else probs[0]), B, lrs, moms


@follows("problem")
def train_batch(problem: Problem | Sequence[Problem], lr, steps: int, *, momentum=0.0, k: int = 2,
                track_every: int = 1, track=("hessian",), tol: float = 1e-3, max_products: int | None = None,
                seed: int | Sequence[int] = 0, chunk: int = 50, spectra: str = "map"):
    """Train B members at once.

    Args:
      problem: one :class:`~eoslab.Problem` shared by every member (they then differ by their
        step size and momentum only; B = ``len(lr)``), or a sequence of B problems with the same
        model and data shapes (e.g. one per seed: own θ₀ and data).
      lr: (B,) step sizes, or one for all (with a sequence of problems).
      momentum: heavy-ball μ, one or (B,).
      k, track_every, track, tol, max_products: as :func:`eoslab.dynamics.train.train`.
      seed: the trackers' cold start, one or (B,) (member i uses ``seed[i]``).
      chunk: steps per compiled scan. spectra: ``"map"`` or ``"vmap"`` (module docstring).

    Returns:
      ``(trajectories, final_params)``: a list of B dicts of NumPy arrays with the keys of
      :func:`~eoslab.dynamics.train.train` (``loss``, ``grad_norm``, ``accuracy``,
      ``<op>_eigs`` (steps, k), ``<op>_residuals``, ``<op>_products``, ``<op>_entered``,
      ``<op>_converged``, ``tracked``, ``edge`` (the member's threshold 2(1 + μ)/η),
      ``edge_ratio`` (λ₁/edge, with ``"hessian"``), ``diverged``, ``lr``, ``seconds``: the
      batch's wall time divided by B,
      ``batch_seconds``, ``batch_size``), and the members' final parameters (a pytree with a
      leading axis B).
    """
    probs, p0, B, lrs, moms = _members(problem, lr, momentum)
    track = tuple(track)
    for op in track:
        if op not in tracking.OPERATORS:
            raise EoslabError(f"unknown operator {op!r} to track; expected some of {tracking.OPERATORS}")
    steps = check_positive_int("steps", steps)
    k, track_every, chunk = (check_positive_int(n, v) for n, v in (("k", k), ("track_every", track_every),
                                                                    ("chunk", chunk)))
    if spectra not in SPECTRA_MODES:
        raise EoslabError(f"spectra must be one of {SPECTRA_MODES}, got {spectra!r}")
    seeds = np.broadcast_to(np.asarray(seed), (B,)) if np.ndim(seed) == 0 else np.asarray(seed)
    if seeds.shape != (B,):
        raise EoslabError(f"seed must be one integer or {B}, got shape {seeds.shape}")
    flat0, unravel = ravel_pytree(p0.params)
    dtype = flat0.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise EoslabError(f"parameters must be floating point, got {dtype}")

    stack = lambda *xs: jnp.stack(xs)
    if probs is None:
        batch_problem, p_axis = p0, None
        V0 = jnp.broadcast_to(flat0, (B, flat0.size))
    else:
        batch_problem, p_axis = jax.tree_util.tree_map(stack, *probs), 0
        V0 = jnp.stack([ravel_pytree(p.params)[0] for p in probs])
    states = {}
    if track:
        per = [tracking.spectra_init(probs[i] if probs else p0, k=k, key=jax.random.PRNGKey(int(seeds[i])),
                                     which=track) for i in range(B)]
        states = jax.tree_util.tree_map(stack, *per)
    classify = p0.targets.ndim == 2 and p0.targets.shape[1] > 1
    static = dict(length=min(chunk, steps), every=track_every, max_products=max_products, classify=classify,
                  p_axis=p_axis, spectra=spectra)
    state = (V0, jnp.zeros_like(V0), states, jnp.zeros(B, bool))
    lr_a, mom_a, tol_a = (jnp.asarray(v, dtype) for v in (lrs, moms, tol))
    records = []
    done = 0
    start = time.perf_counter()
    with progress.task(f"training {B} members", steps, "steps") as bar:
        _run_chunks(batch_problem, lr_a, mom_a, tol_a, state, steps, static, records, bar)
    state = records.pop()
    wall = time.perf_counter() - start
    full = {key: np.concatenate([r[key] for r in records]) for key in records[0]}  # (steps, B, ...)
    trajs = []
    for i in range(B):
        t = {key: np.ascontiguousarray(a[:, i]) for key, a in full.items()}
        t.update(lr=np.asarray(float(lrs[i])), seconds=np.asarray(wall / B), batch_seconds=np.asarray(wall),
                 batch_size=np.asarray(B))
        trajs.append(t)
    final = jax.vmap(unravel)(state[0])
    return trajs, final


def _run_chunks(problem, lr, mom, tol, state, steps, static, records, bar) -> None:
    """Advance chunk by chunk, appending each chunk's rows to ``records`` (then the final state)."""
    done = 0
    while done < steps:
        state, rec = _batch_chunk(problem, lr, mom, tol, state, jnp.asarray(done), jnp.asarray(steps), **static)
        rec = jax.tree_util.tree_map(np.asarray, rec)
        take = min(static["length"], steps - done)
        records.append(jax.tree_util.tree_map(lambda a: a[:take], rec))
        done += take
        live = ~np.asarray(state[3])
        bar.update(done, f"{int(live.sum())} of {live.size} members not diverged")
        if not live.any():  # every member diverged: the rest is NaN rows
            records.append(_nan_rows(records[-1], steps - done))
            done = steps
    records.append(state)


def _nan_rows(template: dict, count: int) -> dict:
    def fill(key, a):
        shape = (count,) + a.shape[1:]
        if key == "diverged":
            return np.ones(shape, bool)
        if a.dtype == bool:
            return np.zeros(shape, bool)
        if np.issubdtype(a.dtype, np.floating):
            return np.full(shape, np.nan, a.dtype)
        return np.zeros(shape, a.dtype)

    return {key: fill(key, a) for key, a in template.items()}


def _all_finite(v) -> jax.Array:
    return jnp.all(jnp.isfinite(v))


@functools.partial(jax.jit, static_argnames=("length", "every", "max_products", "classify", "p_axis", "spectra"))
def _batch_chunk(problem, lr, momentum, tol, state, start, total, *, length, every, max_products, classify,
                 p_axis, spectra):
    """``length`` steps of every member: one ``lax.scan`` whose body vmaps the update over
    the members (axis 0 of the state; ``p_axis`` 0 when each member has its own problem)."""
    _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda a: a[0], problem.params) if p_axis == 0
                              else problem.params)

    def member_grad(prob, v):
        loss, g = jax.value_and_grad(lambda w: prob.loss_fn(unravel(w)))(v)
        rec = {"loss": loss, "grad_norm": jnp.linalg.norm(g)}
        if classify:
            hit = jnp.argmax(prob.predict(unravel(v)), -1) == jnp.argmax(prob.targets, -1)
            rec["accuracy"] = jnp.mean(hit.astype(v.dtype))
        else:
            rec["accuracy"] = jnp.asarray(jnp.nan, v.dtype)
        return g, rec

    def member_spectra(prob, v, states):
        new, res = tracking.track_spectra(prob, unravel(v), states, tol=tol, max_products=max_products)
        out = {}
        for op, r in res.items():
            out[f"{op}_eigs"], out[f"{op}_residuals"] = r.values, r.residuals
            out[f"{op}_products"], out[f"{op}_entered"] = r.n_products, r.entered
            out[f"{op}_converged"] = r.converged
        return new, out

    def all_spectra(V, S):
        if spectra == "vmap":
            return jax.vmap(member_spectra, in_axes=(p_axis, 0, 0))(problem, V, S)
        if p_axis == 0:
            return jax.lax.map(lambda a: member_spectra(*a), (problem, V, S))
        return jax.lax.map(lambda a: member_spectra(problem, *a), (V, S))

    def skip_spectra(V, S):
        out = {}
        for op, st in S.items():
            B, kk = st.vectors.shape[0], st.k
            nan = jnp.full((B, kk), jnp.nan, st.vectors.dtype)
            out[f"{op}_eigs"], out[f"{op}_residuals"] = nan, nan
            out[f"{op}_products"], out[f"{op}_entered"] = jnp.zeros((B,), jnp.int32), jnp.zeros((B,), bool)
            out[f"{op}_converged"] = jnp.zeros((B,), bool)
        return S, out

    def body(carry, i):
        V, Vel, S, div = carry
        t = start + i
        active = t < total
        G, rec = jax.vmap(member_grad, in_axes=(p_axis, 0))(problem, V)
        if S:
            if every == 1:
                S_new, out = all_spectra(V, S)
            else:  # the same step for every member: a real branch, not a select
                S_new, out = jax.lax.cond(t % every == 0, all_spectra, skip_spectra, V, S)
            rec.update(out)
        else:
            S_new = S
        rec["tracked"] = jnp.broadcast_to((t % every == 0) if S else jnp.array(False), div.shape)
        # the heavy-ball map on a quadratic of curvature λ is stable iff λ < 2(1 + μ)/η (GD: μ = 0)
        rec["edge"] = 2.0 * (1.0 + momentum) / lr
        if "hessian_eigs" in rec:
            rec["edge_ratio"] = rec["hessian_eigs"][:, 0] / rec["edge"]
        nVel = momentum[:, None] * Vel - lr[:, None] * G
        nV = V + nVel
        div = div | (active & ~(jnp.isfinite(rec["loss"]) & jax.vmap(_all_finite)(nV)))

        def mask(x):
            if not jnp.issubdtype(x.dtype, jnp.inexact):
                return x
            d = div.reshape(div.shape + (1,) * (x.ndim - 1))
            return jnp.where(d, jnp.nan, x)

        rec = jax.tree_util.tree_map(mask, rec)
        rec["diverged"] = div
        keep = div | ~active

        def choose(a, b):
            kp = keep.reshape(keep.shape + (1,) * (a.ndim - 1))
            return jnp.where(kp, a, b)

        new = jax.tree_util.tree_map(choose, (V, Vel, S), (nV, nVel, S_new))
        return (*new, div), rec

    return jax.lax.scan(body, state, jnp.arange(length))
