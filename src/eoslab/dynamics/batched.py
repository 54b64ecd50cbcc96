"""A batch of trainings in one compiled call: B step sizes, optimizers' hyperparameters and/or seeds at once.

:func:`train_batch` advances B *members* (each its own optimizer state, parameters and, for
different seeds, its own data) with one jitted call per chunk of steps, built on the one
stepper (:mod:`eoslab.dynamics.stepper`): each member's state is the
:func:`~eoslab.dynamics.train.initial_state` of :func:`~eoslab.dynamics.train.train`, the
states are stacked, and a chunk is ``vmap`` (or ``lax.map``) of
``scan(train_step(...), state, length)``, so any built-in optimizer of
:mod:`eoslab.dynamics.optim` (gd, heavy-ball, Nesterov, RMSProp, Adam; the numbers live in the
state, so members of one kind share one compiled program) can be batched, each member's top
Hessian (NTK, Gauss-Newton; preconditioned Hessian for adaptive optimizers) eigenvalues are
tracked with its own tracker state, and each member's divergence is masked on its own by the
stepper's scan. A member's trajectory is that of ``train`` with the same arguments up to
floating-point rounding (the batched and the single program may reduce in a different order;
in the chaotic edge-of-stability phase such differences grow, as between two machines).

The spectra: ``spectra="map"`` (default) runs the members' chunks one after the other inside
the compiled program (``lax.map``), so each keeps its own control flow (a tracker stops as
soon as its own values have converged); ``spectra="vmap"`` vectorises everything. Every member
is at the same step, so the step index and the trackers' call counts are passed un-batched
(``davidson.track(..., shared_count=True)``) and the branches on them (the cold start, the
periodic check, ``t % track_every``) stay branches; those on a member's own numbers (skipping
the guard products) become selects that compute both sides, and a tracker's iteration runs as
long as the slowest member's. Without spectra the members are always vectorised. See
``benchmarks/batched_train.py`` for what each costs on this machine.

On a CPU the members are split into equal parts, one per core (:func:`_parts`), each advanced by
its own call of one compiled program per chunk, the parts on one thread each (``threads``), so
the batch uses every core; the results do not depend on the thread count, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from eoslab import progress
from eoslab._precision import follows, is_x64, x64
from eoslab.dynamics import optim
from eoslab.dynamics.stepper import masked, scan
from eoslab.dynamics.train import Trajectory, initial_state, nan_rows, train_step
from eoslab.errors import EoslabError, check_positive_int
from eoslab.problem import Params, Problem
from eoslab.spectra import tracking
from eoslab.spectra.davidson import TrackState
from eoslab.typing import ArrayLike, Float

SPECTRA_MODES = ("map", "vmap")


def _members(problem, lr, momentum, optimizer):
    """``(problems (B) or None, shared problem, B, optimizers (B) or None, lrs, moms)``."""
    probs = None if isinstance(problem, Problem) else list(problem)
    if probs is not None:
        if not probs or not all(isinstance(p, Problem) for p in probs):
            raise EoslabError("problem must be a Problem or a non-empty sequence of Problems")
        s0 = jax.tree_util.tree_structure(probs[0])
        shapes0 = [(a.shape, a.dtype) for a in jax.tree_util.tree_leaves(probs[0])]
        for i, p in enumerate(probs[1:], 1):
            if jax.tree_util.tree_structure(p) != s0 or [(a.shape, a.dtype) for a in
                                                         jax.tree_util.tree_leaves(p)] != shapes0:
                raise EoslabError(f"problem {i} differs from problem 0 in its model, data shapes or dtypes; "
                                  "batched members must share them (only values may differ)")
    p0 = problem if probs is None else probs[0]
    if optimizer is not None:
        if lr is not None or np.any(np.asarray(momentum) != 0):
            raise EoslabError("give either lr/momentum or optimizer, not both")
        opts = [optimizer] if isinstance(optimizer, optim.Optimizer) else list(optimizer)
        if not all(isinstance(o, optim.Optimizer) for o in opts):
            raise EoslabError("optimizer must be an eoslab.dynamics.optim optimizer or a sequence of them")
        B = len(probs) if probs is not None else len(opts)
        opts = opts * B if len(opts) == 1 else opts
        if len(opts) != B:
            raise EoslabError(f"optimizer must be one or {B} optimizers (one per member), got {len(opts)}")
        if any(o != opts[0] for o in opts):  # equal = same update: one compiled program for all
            raise EoslabError("batched members must use optimizers of one kind with constant step sizes "
                              f"(got {sorted({o.name for o in opts})}); batch each kind apart")
        return probs, p0, B, opts, None, None
    lrs = np.atleast_1d(np.asarray(lr, float))
    B = len(probs) if probs is not None else lrs.size
    lrs = np.broadcast_to(lrs, (B,)) if lrs.size == 1 else lrs
    if lrs.shape != (B,):
        raise EoslabError(f"lr must be a number or {B} step sizes (one per member), got shape {lrs.shape}")
    if not np.all(np.isfinite(lrs) & (lrs > 0)):
        raise EoslabError(f"every step size must be a finite positive number, got {lrs.tolist()}")
    moms = np.broadcast_to(np.asarray(momentum, float), (B,)) if np.ndim(momentum) == 0 else np.asarray(momentum, float)
    if moms.shape != (B,) or not np.all((moms >= 0) & (moms < 1)):
        raise EoslabError(f"momentum must be one number or {B} numbers in [0, 1), got {np.asarray(momentum).tolist()}")
    return probs, p0, B, None, lrs, moms


@follows("problem")
def train_batch(problem: Problem | Sequence[Problem], lr: Float[ArrayLike, " B"] | float | None = None,
                steps: int | None = None, *, momentum: Float[ArrayLike, " B"] | float = 0.0,
                optimizer: optim.Optimizer | Sequence[optim.Optimizer] | None = None, k: int = 2, track_every: int = 1,
                track: tuple[str, ...] = ("hessian",), tol: float = 1e-3,
                max_products: int | None = None, seed: int | Sequence[int] = 0, batch_size: int | None = None,
                batch_sharpness_samples: int = 32, chunk: int = 50,
                spectra: str = "map", threads: int | None = None) -> tuple[list[Trajectory], Params]:
    """Train B members at once.

    Args:
      problem: one :class:`~eoslab.Problem` shared by every member (they then differ by their
        optimizer's numbers only; B = ``len(lr)`` or ``len(optimizer)``), or a sequence of B
        problems with the same model and data shapes (e.g. one per seed: own θ₀ and data).
      lr: (B,) step sizes, or one for all (with a sequence of problems): GD, or heavy-ball with
        ``momentum`` μ (one or (B,)), as :func:`~eoslab.dynamics.train.train`'s ``lr``/``momentum``.
      optimizer: instead of ``lr``/``momentum``: one or B built-in optimizers of one kind
        (:mod:`eoslab.dynamics.optim`: ``gd``, ``heavy_ball``, ``nesterov``, ``rmsprop``, ``adam``
        with constant step sizes), e.g. ``[optim.adam(lr) for lr in lrs]``.
      k, track_every, track, tol, max_products: as :func:`eoslab.dynamics.train.train`.
      seed: the trackers' cold start and the step keys, one or (B,) (member i uses ``seed[i]``,
        as ``train(..., seed=seed[i])``, so its mini-batches too).
      batch_size, batch_sharpness_samples: mini-batch SGD members, as
        :func:`~eoslab.dynamics.train.train` (each member draws its own batches from its own key
        stream; keys ``batch_loss``, ``batch_sharpness``, ``batch_sharpness_se``). ``None``: full batch.
      chunk: steps per compiled call. spectra: ``"map"`` or ``"vmap"`` (module docstring).
      threads: on a CPU the members are split into one contiguous part per core (:data:`CPU_PARTS`),
        each advanced by its own compiled call per chunk; ``threads`` of them run at the same time
        (JAX runs calls from different Python threads concurrently, so the cores share the batch).
        ``None`` (default): one per core this process may use; 1: the parts one after the other.
        The results do not depend on it, bit for bit. (Programs running at once need the
        tracker's LAPACK calls unbatched on a CPU: :mod:`eoslab.spectra.davidson`.)

    Returns:
      ``(trajectories, final_params)``: a list of B :class:`~eoslab.dynamics.train.Trajectory`
      with the keys and ``.meta`` of :func:`~eoslab.dynamics.train.train` (``loss``,
      ``grad_norm``, ``accuracy``, ``<op>_eigs`` (steps, k), ``<op>_residuals``,
      ``<op>_products``, ``<op>_entered``, ``<op>_converged``, ``tracked``, ``edge`` (the
      member's own threshold), ``edge_ratio``, ``diverged``; ``meta["seconds"]`` is the batch's
      wall time divided by B) plus the arrays ``lr``, ``seconds``, ``batch_seconds`` (the
      batch's wall time) and ``members`` (B), and the members' final parameters (a pytree
      with a leading axis B).
    """
    probs, p0, B, opts, lrs, moms = _members(problem, lr, momentum, optimizer)
    track = tuple(track)
    for op in track:
        if op not in tracking.OPERATORS:
            raise EoslabError(f"unknown operator {op!r} to track; expected some of {tracking.OPERATORS}")
    steps = check_positive_int("steps", steps)
    k, track_every, chunk = (check_positive_int(n, v) for n, v in (("k", k), ("track_every", track_every),
                                                                    ("chunk", chunk)))
    if spectra not in SPECTRA_MODES:
        raise EoslabError(f"spectra must be one of {SPECTRA_MODES}, got {spectra!r}")
    if threads is not None:
        threads = check_positive_int("threads", threads)
    n_mc = check_positive_int("batch_sharpness_samples", batch_sharpness_samples)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
        if batch_size > p0.n:
            raise EoslabError(f"batch_size {batch_size} is larger than the number of examples {p0.n}")
    seeds = np.broadcast_to(np.asarray(seed), (B,)) if np.ndim(seed) == 0 else np.asarray(seed)
    if seeds.shape != (B,):
        raise EoslabError(f"seed must be one integer or {B}, got shape {seeds.shape}")
    flat0 = ravel_pytree(p0.params)[0]
    dtype = flat0.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise EoslabError(f"parameters must be floating point, got {dtype}")
    if opts is None:  # train's own lr/momentum optimizers; μ = 0 heavy-ball is GD's update, edge 2/η
        hb = bool(np.any(moms))
        opts = [optim.heavy_ball(jnp.asarray(a, dtype), float(m)) if hb else optim.gd(jnp.asarray(a, dtype))
                for a, m in zip(lrs, moms)]
    member = lambda i: probs[i] if probs is not None else p0
    states = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *_initial_states(member, opts, seeds, probs is None,
                                                                                 k, track))
    batch_problem, p_axis = (p0, None) if probs is None else (jax.tree_util.tree_map(
        lambda *xs: jnp.stack(xs), *probs), 0)
    static = dict(length=min(chunk, steps), every=track_every, max_products=max_products, p_axis=p_axis,
                  spectra=spectra if track else "vmap", batch_size=batch_size, n_mc=n_mc)
    tol_a = jnp.asarray(tol, dtype)
    records = []
    start = time.perf_counter()
    with progress.task(f"training {B} members", steps, "steps") as bar:
        parts = _parts(B)
        states = _run_chunks(batch_problem, tol_a, states, steps, opts[0], static, records, bar, parts,
                             _workers(threads, len(parts)))
    wall = time.perf_counter() - start
    full = {key: np.concatenate([r[key] for r in records]) for key in records[0]}  # (steps, B, ...)
    o = opts[0]
    trajs = []
    for i in range(B):
        t = Trajectory({key: np.ascontiguousarray(a[:, i]) for key, a in full.items()},
                       {"lr": float(lrs[i] if lrs is not None else opts[i].hyper["lr"]), "optimizer": o.name,
                        "hyper": {n: v if isinstance(v, (bool, int, float, str)) else float(v)
                                                for n, v in opts[i].hyper.items()}, "quantity": o.quantity,
                        "batch_size": batch_size, "seconds": wall / B, "members": B})
        t.update(lr=np.asarray(t.meta["lr"]), seconds=np.asarray(wall / B), batch_seconds=np.asarray(wall),
                 members=np.asarray(B))
        trajs.append(t)
    return trajs, states.params


def _initial_states(member, opts, seeds, shared: bool, k, track) -> list:
    """Each member's :func:`~eoslab.dynamics.train.initial_state`. Members of one problem with one
    seed (a step-size sweep) differ only by their optimizer's state, so the trackers' cold states
    and the key are drawn once per seed (the same arrays ``initial_state`` would draw)."""
    done, out = {}, []
    for i, (opt, seed) in enumerate(zip(opts, seeds)):
        key = (0 if shared else i, int(seed))
        if key in done:
            out.append(done[key]._replace(opt_state=opt.init(member(i).params)))
        else:
            out.append(done.setdefault(key, initial_state(member(i), opt, k=k, track=track, seed=int(seed))))
    return out


def _run_chunks(problem, tol, states, steps, optimizer, static, records, bar, parts, workers):
    """Advance chunk by chunk, appending each chunk's rows (steps, B, ...) to ``records``;
    returns the final states. ``parts``: the members' ``(start, stop)`` slices (:func:`_parts`),
    each one compiled call per chunk, on ``workers`` threads (the progress bar moves once every
    part has done the chunk). A part shorter than the first is padded with copies of its last
    member (computed, never returned), so that every part runs the same compiled program."""
    p_axis = static["p_axis"]
    size = parts[0][1] - parts[0][0]

    def cut(tree, a, b):  # members a..b-1, then b-1 again up to `size`
        idx = np.minimum(np.arange(a, a + size), b - 1)
        return jax.tree_util.tree_map(lambda x: x[a:b] if b - a == size else x[idx], tree)

    probs = [problem if p_axis is None else cut(problem, a, b) for a, b in parts]
    sts = [cut(states, a, b) if len(parts) > 1 else states for a, b in parts]
    own = [b - a for a, b in parts]  # each part's real members (the rest is padding)
    total = jnp.asarray(steps)
    wide = is_x64()  # JAX's float64 switch is per thread: the workers take the caller's

    def advance(i):
        with x64() if wide else contextlib.nullcontext():
            if sts[i] is None:  # every member of this part has diverged: nothing left to compute
                return None, None
            out = _batch_chunk(probs[i], tol, sts[i], total, optimizer, group=_group(size), **static)
            return jax.block_until_ready(out)

    done, last = 0, [None] * len(parts)
    finals = list(sts)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(workers)) if workers > 1 else None
        if pool is not None:  # Ctrl-C: drop the queued chunks instead of waiting for them
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        while done < steps:
            outs = list((map if pool is None else pool.map)(advance, range(len(parts))))
            take = min(static["length"], steps - done)
            for i, (st, rec) in enumerate(outs):
                if st is None:  # the rows the stepper would give a part left with no live member
                    last[i] = nan_rows(last[i], take)
                    continue
                last[i] = {key: np.asarray(a)[:take, :own[i]] for key, a in rec.items()}
                finals[i] = st
                sts[i] = None if len(parts) > 1 and np.asarray(st.diverged).all() else st
            records.append({key: np.concatenate([r[key] for r in last], axis=1) for key in last[0]})
            done += take
            live = ~np.concatenate([np.asarray(f.diverged)[:n] for f, n in zip(finals, own)])
            bar.update(done, f"{int(live.sum())} of {live.size} members not diverged")
            if not live.any():  # every member diverged: the rest is NaN rows
                records.append(nan_rows(records[-1], steps - done))
                done = steps
    if len(parts) == 1:
        return finals[0]
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *[jax.tree_util.tree_map(lambda x: x[:n], f)
                                                                     for f, n in zip(finals, own)])


@functools.partial(jax.jit, static_argnames=("optimizer", "length", "every", "max_products", "p_axis", "spectra",
                                             "batch_size", "n_mc", "group"))
def _batch_chunk(problem, tol, states, total, optimizer, *, length, every, max_products, p_axis, spectra,
                 batch_size=None, n_mc=32, group=None):
    """``length`` steps of every member (axis 0 of ``states``; of ``problem`` too when
    ``p_axis`` is 0): the stepper's masked :func:`~eoslab.dynamics.train.train_step`,
    vmapped or mapped over the members (vmapped in groups of ``group`` members, one group after
    the other; ``None``: all at once). Records come back (length, B, ...)."""
    group = states.t.shape[0] if group is None else group
    if spectra == "map":
        def member(prob, state):
            step = train_step(prob, optimizer, tol, every=every, max_products=max_products, batch_size=batch_size,
                              n_mc=n_mc)
            return scan(step, state, length, total=total)

        if p_axis == 0:
            states, rec = jax.lax.map(lambda a: member(*a), (problem, states))
        else:
            states, rec = jax.lax.map(lambda s: member(problem, s), states)
        return states, jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), rec)

    def member(prob, state, t, counts):
        step = masked(train_step(prob, optimizer, tol, every=every, max_products=max_products, batch_size=batch_size,
                                 n_mc=n_mc, shared_counts=True), total=total)
        return step(_with_counters(state, t, counts))

    def body(states, _):
        # Every member is at the same step, so the step index and the trackers' call counts are
        # passed un-batched: the conditionals on them (the observer's t % every, the tracker's
        # cold start and periodic check) stay conditionals under vmap instead of becoming
        # selects that run both branches for every member. A diverged member's frozen counters
        # are behind the others', hence the max.
        t = jnp.max(states.t)
        counts = {name: jnp.max(c) for name, c in _counters(states.aux).items()}
        step = lambda prob, sts: jax.vmap(member, in_axes=(p_axis, 0, None, None))(prob, sts, t, counts)
        B = states.t.shape[0]
        if group >= B:
            return step(problem, states)
        # Groups of `group` members vectorised, one group after the other: a large vmapped step
        # outgrows the CPU's caches (B = 32: the step's gradient pass costs 1.3× per member what it
        # costs at B = 8).
        split = lambda a: a.reshape((B // group, group) + a.shape[1:])
        gs = jax.tree_util.tree_map(split, states)
        if p_axis == 0:
            out = jax.lax.map(lambda a: step(*a), (jax.tree_util.tree_map(split, problem), gs))
        else:
            out = jax.lax.map(lambda s: step(problem, s), gs)
        return jax.tree_util.tree_map(lambda a: a.reshape((B,) + a.shape[2:]), out)

    return jax.lax.scan(body, states, None, length=length)


#: On a CPU, the most members vectorised together (``spectra="vmap"``); larger batches run as
#: groups of at most this many, one group after the other (``benchmarks/batched_train.py --chunks``).
CPU_GROUP = 8


#: On a CPU, the members are split into this many parts (``None``: one per core this process
#: may use), each advanced by one compiled call per chunk; :func:`train_batch`'s ``threads`` only
#: says how many threads run the parts, so it does not change any result.
CPU_PARTS: int | None = None


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _workers(threads: int | None, parts: int) -> int:
    """Threads :func:`train_batch` runs its ``parts`` on: ``threads`` (``None``: the cores this
    process may use), at most one per part."""
    return max(1, min(_cores() if threads is None else threads, parts))


def _parts(B: int) -> list[tuple[int, int]]:
    """The members' contiguous ``(start, stop)`` slices: on a CPU, at most :data:`CPU_PARTS` of
    them (at most B), each of ⌈B / parts⌉ members but the last, which may have fewer (it is
    padded to the others' size, so that one program serves them all: B = 3 on two cores is
    parts of 2 and 1 + a copy); one on an accelerator. They depend on the machine (its cores),
    never on the thread count; a vectorised part runs in groups of :func:`_group` of its size.
    Members of one part are all at the same step, so the step index and call counts the part
    shares (``_batch_chunk``) are those of the whole batch; a part whose members have all
    diverged is not run again and gets the NaN rows of :func:`~eoslab.dynamics.train.nan_rows`."""
    n = 1 if jax.default_backend() != "cpu" else max(1, min(_cores() if CPU_PARTS is None else CPU_PARTS, B))
    size = -(-B // n)
    return [(a, min(a + size, B)) for a in range(0, B, size)]


def _group(B: int) -> int:
    """Members vectorised together: all of them on an accelerator or when B ≤ :data:`CPU_GROUP`;
    on a CPU the largest divisor of B in [CPU_GROUP/2, CPU_GROUP] (all of them if there is none)."""
    if jax.default_backend() != "cpu" or B <= CPU_GROUP:
        return B
    return next((g for g in range(CPU_GROUP, CPU_GROUP // 2 - 1, -1) if B % g == 0), B)


def _counters(aux) -> dict:
    """The call count of every tracker state in ``aux`` (train's dict of operator → state)."""
    return {name: s.count for name, s in aux.items() if isinstance(s, TrackState)}


def _with_counters(state, t, counts):
    """``state`` with step index ``t`` and tracker call counts ``counts`` (from :func:`_counters`)."""
    aux = {name: dataclasses.replace(s, count=counts[name]) if name in counts else s for name, s in state.aux.items()}
    return state._replace(t=t, aux=aux)
