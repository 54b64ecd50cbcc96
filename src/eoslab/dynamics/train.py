"""Full-batch training of any :class:`~eoslab.Problem` (networks included) with matrix-free
spectral tracking at every step, and the network-vs-Taylor-model comparison.

:func:`train` runs any optimizer (GD by default, :mod:`eoslab.dynamics.optim`, or any optax
one), full batch or mini-batch, through the one stepper (:mod:`eoslab.dynamics.stepper`) in jitted chunks of ``lax.scan`` (so a rich
progress bar with ETA can be shown between chunks) and records, per step, the loss, the
accuracy (classification) and, every ``track_every`` steps, the top-k eigenvalues of the
loss Hessian, the NTK and/or the Gauss-Newton matrix with their residual norms. The
eigenvalues come from :mod:`eoslab.spectra.tracking` (warm-started block Davidson on
Hessian-vector / NTK-vector products): since the operators move little from one step to
the next, tracking costs a few products per step.

:func:`compare_taylor` trains a problem and its second-order Taylor model around θ₀
(:mod:`eoslab.models.taylor`) side by side with the same η and records the linear and the
non-linear parts of every step's output change.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import optax

from eoslab.dynamics import optim
from eoslab.dynamics.gd import default_optimizer
from eoslab.dynamics.stepper import StepState, init_state, make_step, scan
from eoslab import progress as eoslab_progress
from eoslab._precision import follows
from eoslab.errors import EoslabError, between, check, check_positive, check_positive_int, check_representable
from eoslab.partial import Checkpointer, PartialFolder
from eoslab.models.taylor import TaylorData, expand, is_taylor, taylor_problem
from eoslab.problem import Params, Problem
from eoslab.spectra import density as spectral_density
from eoslab.spectra import tracking
from eoslab.spectra.operators import hvp
from eoslab.typing import Array, ArrayLike, Float, Int, PRNGKeyArray

#: Operators that can be tracked (see :data:`eoslab.spectra.tracking.OPERATORS`).
OPERATORS = tracking.OPERATORS

#: Keys of a :func:`train` trajectory; arrays indexed by step t = 0 … steps−1, row t
#: describing θ_t before its update. ``<op>`` is each tracked operator.
TRAIN_KEYS = {
    "loss": "L(θ_t) (full batch, also under mini-batch SGD)",
    "batch_loss": "the loss of step t's mini-batch (batch_size only)",
    "accuracy": "fraction of examples whose argmax output is the argmax target (NaN for regression)",
    "grad_norm": "‖g_t‖, the gradient the update used (the mini-batch's under SGD)",
    "edge": "the optimizer's stability threshold for this update (2/η GD, 2(1+β)/η heavy-ball, ...; NaN unknown)",
    "edge_ratio": "λ₁ of the optimizer's stability operator / edge at tracked steps: 1 is its edge",
    "tracked": "True at the steps where the spectra were computed (t % track_every == 0)",
    "<op>_eigs": "(k,) top-k algebraic eigenvalues of the operator at θ_t (NaN when not tracked)",
    "<op>_residuals": "(k,) ‖Av − θv‖ of each: a rigorous bound on its distance to the spectrum",
    "<op>_products": "operator-vector products spent tracking it at this step",
    "<op>_converged": "True when the tracker's stopping rule held at this step (False: its product cap was hit)",
    "<op>_entered": "True when a new eigenvector entered the top-k set at this step",
    "preconditioned_eigs": "(k,) top-k eigenvalues of P^{-1/2}∇²L P^{-1/2}, P the update's preconditioner "
                           "(adaptive optimizers; also _residuals, _products, _entered)",
    "batch_sharpness": "E_B[g_Bᵀ H_B g_B / ‖g_B‖²] over random mini-batches, Monte Carlo (batch_size only)",
    "batch_sharpness_se": "its standard error (std / √samples)",
    "linear_norm": "‖J_t δ_t‖, δ_t the parameter update (only with nonlinear=True)",
    "nonlinear_norm": "‖½Q_t(δ_t, δ_t)‖: the η² part of the output change (nonlinear=True)",
    "nonlinear_top": "|u·½Q_t(δ_t, δ_t)|, u the top NTK eigenvector (nonlinear=True, NTK tracked on all data)",
    "nonlinear_actual": "‖f(θ_t+δ_t) − f(θ_t) − J_t δ_t‖: all orders beyond linear (nonlinear=True)",
    "<op>_trace": "Hutch++ estimate of tr(A) every density_every steps (operators in density=; NaN otherwise)",
    "<op>_trace_stderr": "its standard error",
    "<op>_density_nodes": "(probes·steps,) stochastic Lanczos quadrature nodes (eoslab.spectra.density)",
    "<op>_density_weights": "(probes·steps,) their weights (each probe's sum to 1; mean over probes is the density)",
    "diverged": "True from the first step whose loss or new state is non-finite (rows NaN there)",
}


def _is_classification(problem: Problem) -> bool:
    # the loss says so: a multi-output regression (targets (n, c > 1) under MSE) has no accuracy
    loss = getattr(problem, "loss", None)
    ce = loss == "cross_entropy" or "cross_entropy" in getattr(loss, "__name__", "")  # also optax's
    return ce and problem.targets.ndim == 2


def _track_step(problem, params, states, tol, max_products, shared_counts=False, products=None, matvecs=None):
    """The one place that computes the tracked spectra (swap the tracker here); ``products``:
    the Hessian products of the tracked rows when the step computed them with its gradient,
    ``matvecs`` the Hessian matvec of the step's linearisation then."""
    return tracking.track_spectra(problem, params, states, tol=tol, max_products=max_products,
                                  shared_count=shared_counts, products=products, matvecs=matvecs)


class Trajectory(dict):
    """A :func:`train` trajectory: a dict of per-step NumPy arrays (keys :data:`TRAIN_KEYS`)
    with the run's metadata kept apart in ``.meta`` (``lr`` η₀, ``optimizer`` name,
    ``hyper`` its arguments, ``quantity`` what its edge bounds, ``batch_size``, ``seconds``
    wall time with compilation, ``first_chunk_seconds`` compilation + the first chunk)."""

    def __init__(self, arrays=(), meta=None):
        super().__init__(arrays)
        self.meta = dict(meta or {})


def _check(lr, steps, k, track_every, track, momentum, optimizer, tol=1e-3):
    check_positive_int("steps", steps)
    check_positive_int("k", k)
    check_positive_int("track_every", track_every)
    check("tol", tol, between(0, 1, lo_open=True, hi_open=True))
    if optimizer is None:
        check_positive("lr", lr)
        if not 0.0 <= float(momentum) < 1.0:
            raise EoslabError(f"momentum must be in [0, 1), got {momentum!r}")
    elif lr is not None or float(momentum) != 0.0:
        raise EoslabError("give either lr/momentum or optimizer, not both")
    for op in track:
        if op not in OPERATORS:
            raise EoslabError(f"unknown operator {op!r} to track; expected some of {OPERATORS}")


def take(problem: Problem, idx: Int[ArrayLike, " n"]) -> Problem:
    """The problem restricted to the examples ``idx`` (a traced int array; jittable). The loss
    stays a mean (an explicit ``norm`` is scaled by the kept fraction), as in :func:`subset`."""
    def cut(p):
        norm = None if p.norm is None else p.norm * idx.shape[0] / p.n
        return dataclasses.replace(p, data=jax.tree_util.tree_map(lambda x: jnp.asarray(x)[idx], p.data),
                                   targets=jnp.asarray(p.targets)[idx], norm=norm)

    if isinstance(problem.data, TaylorData):
        inner = cut(dataclasses.replace(problem, data=problem.data.inputs))
        return dataclasses.replace(inner, data=TaylorData(inner.data, problem.data.anchor))
    return cut(problem)


def sample_batch(key: PRNGKeyArray, n: int, batch_size: int) -> Int[Array, " batch_size"]:
    """The mini-batch of one step: ``batch_size`` distinct examples drawn uniformly at random
    among the ``n``, independently at every step (int32 indices, (batch_size,))."""
    return jax.random.choice(key, n, (batch_size,), replace=False)


@follows("problem")
def train(problem: Problem, lr: float | None = None, steps: int | None = None, *,
          optimizer: optim.Optimizer | optax.GradientTransformation | None = None,
          momentum: float = 0.0, batch_size: int | None = None, k: int = 2, track_every: int = 1,
          track: tuple[str, ...] = ("hessian", "ntk"), tol: float = 1e-3,
          spectra_examples: int | Int[ArrayLike, " n"] | None = None, max_products: int | None = None,
          batch_sharpness_samples: int = 32, nonlinear: bool = False, seed: int = 0,
          density: tuple[str, ...] = (),
          density_every: int = 0, density_probes: int = 4, density_steps: int = 32, trace_products: int = 30,
          chunk: int = 50,
          progress: bool = False, description: str = "training",
          callback: Callable[[int, dict], None] | None = None, checkpoint: str | os.PathLike | Checkpointer | None = None,
          checkpoint_every: int | None = None, resume: bool = False) -> tuple[Trajectory, Params]:
    """Train ``problem`` with full-batch GD ``θ ← θ − η∇L(θ)`` (heavy-ball with ``momentum``), or
    any optimizer, full batch or mini-batch, tracking spectra along the way.

    Args:
      problem: model, data and θ₀ (any pytree; float32 parameters stay float32).
      lr: step size η (with ``momentum`` β: heavy-ball, :func:`eoslab.dynamics.optim.heavy_ball`).
      steps: number of updates.
      optimizer: instead of ``lr``/``momentum``: an :mod:`eoslab.dynamics.optim` optimizer
        or any optax ``GradientTransformation`` (e.g. ``optax.adam(1e-3)``; its edge is then
        unknown, NaN, and only the raw spectra are reported).
      batch_size: mini-batch SGD: each step's gradient is that of ``batch_size`` distinct
        examples drawn uniformly at random, independently at each step, from ``seed``
        (:func:`sample_batch`). ``None``: full batch. With it, every tracked step also records
        the batch sharpness E_B[g_Bᵀ H_B g_B / ‖g_B‖²] over ``batch_sharpness_samples``
        independent batches (Monte Carlo, with its standard error).
      k: top eigenvalues tracked per operator (the tracker's block is k + 1).
      track_every: compute the spectra at steps t with t % track_every == 0 (1: every step).
      track: operators to follow, among ``"hessian"``, ``"ntk"``, ``"gauss_newton"``
        (empty: no spectra). With an adaptive optimizer (``quantity == "preconditioned"``)
        and ``"hessian"``, the preconditioned Hessian P^{-1/2}∇²L P^{-1/2} is tracked too.
      tol: relative accuracy of the tracked eigenvalues (stopping rule of the tracker).
      spectra_examples: compute the spectra on a fixed subset of the data, as Cohen et al.
        do for large datasets: an int m (the first m examples) or an index array. The
        loss normalisation is kept a mean, so the subset's eigenvalues estimate the full
        ones. ``None``: all examples.
      max_products: cap on products per tracking call (default: the tracker's).
      nonlinear: also record the linear / non-linear parts of each step's output change
        (:data:`TRAIN_KEYS`); costs a nested JVP and a forward pass per step.
      density: operators whose trace (Hutch++, ``trace_products`` products, with a standard
        error) and spectral density (stochastic Lanczos quadrature, ``density_probes`` probes ×
        ``density_steps`` Lanczos steps) are recorded every ``density_every`` steps
        (:mod:`eoslab.spectra.density`; on the ``spectra_examples`` subset if given).
      seed: seeds the trackers' cold start, the mini-batches and the density probes. chunk: steps per jitted
        scan (progress updates, callbacks).
      progress: show a rich progress bar with ETA.
      callback: ``callback(t, record)`` called on the host for every step, in order, after
        the chunk holding it has run (``record``: that row of every key, NumPy scalars and
        arrays); e.g. a TensorBoard or W&B logger (docs/optimizers.md). Its return value is
        ignored. After a resume it is called for the steps computed after the checkpoint.
      checkpoint: keep the run on disk as it goes: a folder path (a partial-run folder,
        :mod:`eoslab.partial`: ``arrays.npz`` the per-step arrays so far, ``checkpoint.npz``,
        ``progress.json``) or any object with ``update(arrays, done, total, checkpoint)`` and
        ``read_checkpoint()`` (:class:`eoslab.partial.Checkpointer`; e.g. the results store's
        ``Store(root).partial(config)``). A checkpoint holds the whole loop state (the
        :class:`~eoslab.dynamics.stepper.StepState`: parameters, optimizer state, tracker states,
        key, t, diverged) and the per-step records so far, with a fingerprint of the training.
      checkpoint_every: steps between checkpoints (default: every chunk). Checkpoints fall on
        chunk boundaries: the number is rounded up to a multiple of ``chunk`` (a state inside a
        compiled chunk is never seen by the host); the last step is always checkpointed.
      resume: continue from ``checkpoint``'s last checkpoint. The state's structure is rebuilt
        from :func:`initial_state` of this call's problem and options and refilled with the
        stored leaves, so the continued run is bit-identical to an uninterrupted one (same
        compiled chunks applied to the same state). A checkpoint of a different training
        (problem, θ₀, data, optimizer, η, steps, chunk, tracking options, seed) is refused,
        naming what differs; no checkpoint at all is refused too.

    Returns:
      ``(trajectory, final_params)``: trajectory is a :class:`Trajectory` (a dict of NumPy
      arrays, keys :data:`TRAIN_KEYS`, with the run's metadata in ``.meta``).
    """
    track = tuple(track)
    _check(lr, steps, k, track_every, track, momentum, optimizer, tol)
    chunk = check_positive_int("chunk", chunk)
    n_mc = check_positive_int("batch_sharpness_samples", batch_sharpness_samples)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
        if batch_size > problem.n:
            raise EoslabError(f"batch_size {batch_size} is larger than the number of examples {problem.n}")
    if callback is not None and not callable(callback):
        raise EoslabError("callback must be callable as callback(t, record)")
    flat0, unravel = ravel_pytree(problem.params)
    if track and k >= flat0.size:
        raise EoslabError(f"k = {k} tracked eigenvalues needs more than k parameters; the model has {flat0.size}")
    dtype = flat0.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise EoslabError(f"parameters must be floating point, got {dtype}")
    check_representable("lr", lr if optimizer is None else (getattr(optimizer, "hyper", None) or {}).get("lr"), dtype)
    opt = default_optimizer(jnp.asarray(lr, dtype), momentum) if optimizer is None else optim.as_optimizer(optimizer)
    spec = problem
    if spectra_examples is not None:
        idx = np.arange(int(spectra_examples)) if np.ndim(spectra_examples) == 0 else np.asarray(spectra_examples)
        spec = problem.subset(idx)
    project = bool(nonlinear and "ntk" in track and spectra_examples is None)
    density = tuple(density)
    for op in density:
        if op not in OPERATORS:
            raise EoslabError(f"unknown operator {op!r} for the density; expected some of {OPERATORS}")
    if density:
        check_positive_int("density_every", density_every)
        check_positive_int("density_probes", density_probes)
        check_positive_int("density_steps", density_steps)
        if check_positive_int("trace_products", trace_products) < 6:
            raise EoslabError(f"trace_products must be ≥ 6 (Hutch++ with a standard error), got {trace_products}")
    state = initial_state(problem, opt, spec=spec, k=k, track=track, seed=seed)
    saver = None
    if checkpoint is not None:
        saver = checkpoint_folder(checkpoint)
        if checkpoint_every is not None:
            check_positive_int("checkpoint_every", checkpoint_every)
    elif resume or checkpoint_every is not None:
        raise EoslabError("resume and checkpoint_every need checkpoint= (a folder or a Store partial run)")
    static = dict(length=min(chunk, steps), every=int(track_every), nonlinear=bool(nonlinear),
                  project=project, max_products=max_products, batch_size=batch_size, n_mc=n_mc,
                  density=(density, int(density_every), int(density_probes), int(density_steps),
                           int(trace_products), int(seed)) if density else None)
    tol_a = jnp.asarray(tol, dtype)

    records, t_first = [], None
    done = 0
    if saver is not None:
        length = static["length"]
        every = -(-int(checkpoint_every or length) // length) * length
        fingerprint = _fingerprint(problem, state, opt, dict(
            steps=int(steps), chunk=int(chunk), k=int(k), track_every=int(track_every), track=list(track),
            tol=float(tol), batch_size=batch_size, batch_sharpness_samples=n_mc, nonlinear=bool(nonlinear),
            seed=int(seed), max_products=max_products, density=list(density), density_every=int(density_every),
            density_probes=int(density_probes), density_steps=int(density_steps),
            trace_products=int(trace_products), spectra_examples=_digest(
                None if spectra_examples is None else np.asarray(spectra_examples))))
        if resume:
            state, done, records = restore(saver, state, fingerprint)
            records = [records] if done else []
        last_saved = done
    resumed_from = done
    bar = _progress(progress, steps, description)
    start = time.perf_counter()
    listener = eoslab_progress.task(description, steps, "steps")
    report = listener.__enter__()
    if done:
        report.update(done, f"resumed at step {done}")
    try:
        while done < steps:
            state, rec = _chunk(problem, None if spectra_examples is None else spec, tol_a, state, jnp.asarray(steps), opt,
                                **static)
            rec = jax.tree_util.tree_map(np.asarray, rec)
            if t_first is None:
                t_first = time.perf_counter() - start
            take_n = min(static["length"], steps - done)
            rec = jax.tree_util.tree_map(lambda a: a[:take_n], rec)
            records.append(rec)
            if callback is not None:
                for i in range(take_n):
                    callback(done + i, {key_: v[i] for key_, v in rec.items()})
            done += take_n
            info = f"loss {float(rec['loss'][take_n - 1]):.4g}" + _eig_info(rec, take_n - 1)
            report.update(done, info)
            if bar is not None:
                bar[0].update(bar[1], completed=done, info=info)
            if bool(state.diverged):  # nothing more to compute
                records.append(nan_rows(records[-1], steps - done))
                done = steps
            if saver is not None and (done - last_saved >= every or done == steps):
                records = [_concat(records)]
                save_checkpoint(saver, state, records[0], done, steps, fingerprint)
                last_saved = done
    finally:
        listener.__exit__(None, None, None)
        if bar is not None:
            bar[0].stop()
    arrays = _concat(records)
    hyper = {name: (v if isinstance(v, (bool, int, float, str)) else "schedule" if callable(v) else float(v))
             for name, v in opt.hyper.items()}
    rate = opt.hyper.get("lr")
    lr0 = float(lr) if lr is not None else (_float_or_nan(rate(steps - 1)) if callable(rate) else _float_or_nan(rate))
    meta = {"lr": lr0, "optimizer": opt.name,
            "hyper": hyper, "quantity": opt.quantity, "batch_size": batch_size,
            "seconds": time.perf_counter() - start, "first_chunk_seconds": t_first}
    if saver is not None:
        meta["resumed_from"] = resumed_from
    return Trajectory(arrays, meta), state.params


def _concat(records: list) -> dict:
    return {key_: np.concatenate([r[key_] for r in records]) for key_ in records[0]}


# ---- checkpoints -------------------------------------------------------------------------

def checkpoint_folder(checkpoint: str | os.PathLike | Checkpointer) -> Checkpointer:
    """``checkpoint`` as a :class:`eoslab.partial.Checkpointer`: a folder path becomes a
    :class:`eoslab.partial.PartialFolder`; an object with ``update`` and ``read_checkpoint``
    is used as it is."""
    if isinstance(checkpoint, (str, os.PathLike)):
        return PartialFolder(checkpoint)
    if callable(getattr(checkpoint, "update", None)) and callable(getattr(checkpoint, "read_checkpoint", None)):
        return checkpoint
    raise EoslabError("checkpoint must be a folder path or an object with update(arrays, done, total, checkpoint) "
                      f"and read_checkpoint(), got {type(checkpoint).__name__}")


def _digest(x) -> str | None:
    """SHA-256 (16 hex digits) of a pytree's leaves: dtypes, shapes and bytes."""
    import hashlib

    if x is None:
        return None
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(x):
        a = np.asarray(_key_data(leaf))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _key_data(leaf):
    return jax.random.key_data(leaf) if _is_key(leaf) else leaf


def _fingerprint(problem: Problem, state, opt, options: dict) -> dict:
    """What identifies a training for its checkpoints: the options, the optimizer, the initial
    state (θ₀, optimizer state with its hyperparameters, trackers' cold states, key), the data."""
    hyper = {name: (v if isinstance(v, (bool, int, float, str)) or v is None else
                    "schedule" if callable(v) else float(np.asarray(v)))
             for name, v in opt.hyper.items()}
    leaves, treedef = jax.tree_util.tree_flatten(state)
    return {**options, "optimizer": opt.name, "hyper": hyper, "loss": _loss_name(problem.loss),
            "state_structure": str(treedef), "initial_state": _digest(leaves),
            "data": _digest((problem.data, problem.targets)), "norm": None if problem.norm is None else float(problem.norm)}


def _loss_name(loss) -> str:
    return loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)


def save_checkpoint(saver: Checkpointer, state: StepState, records: dict, done: int, total: int,
                    fingerprint: dict) -> None:
    """Write one checkpoint: the state's leaves (``state/<i>``, in ``tree_flatten`` order; PRNG
    key arrays as their key data), the per-step records of steps 0 … done−1 (``records/<key>``),
    ``done`` and the training's ``fingerprint`` (JSON bytes); and the records as the folder's
    per-step arrays."""
    import json

    leaves = jax.tree_util.tree_leaves(state)
    ck = {f"state/{i:05d}": np.asarray(_key_data(leaf)) for i, leaf in enumerate(leaves)}
    ck.update({f"records/{key_}": v for key_, v in records.items()})
    ck["done"] = np.int64(done)
    ck["fingerprint"] = np.frombuffer(json.dumps(fingerprint, sort_keys=True).encode(), np.uint8)
    saver.update(records, done, total, checkpoint=ck)


def restore(saver: Checkpointer, template: StepState, fingerprint: dict) -> tuple[StepState, int, dict]:
    """``(state, done, records)`` from ``saver``'s last checkpoint, the state rebuilt on the
    structure of ``template`` (the run's :func:`initial_state`). Refuses, in one line, a
    missing checkpoint or one whose fingerprint differs (naming the differing fields)."""
    import json

    ck = saver.read_checkpoint()
    where = getattr(saver, "path", saver)
    if ck is None:
        raise EoslabError(f"nothing to resume: {where} holds no checkpoint")
    try:
        stored = json.loads(bytes(ck["fingerprint"]).decode())
        done = int(ck["done"])
    except (KeyError, ValueError) as e:
        raise EoslabError(f"{where}: not a training checkpoint ({e})") from None
    differ = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k))
    if differ:
        raise EoslabError(f"{where}: the checkpoint is of a different training (differs in: {', '.join(differ)}); "
                          "resume with the same problem and options, or start afresh without resume")
    leaves_t, treedef = jax.tree_util.tree_flatten(template)
    leaves = []
    for i, t in enumerate(leaves_t):
        a = ck.get(f"state/{i:05d}")
        want = np.asarray(_key_data(t))
        if a is None or a.shape != want.shape or a.dtype != want.dtype:
            raise EoslabError(f"{where}: checkpoint state leaf {i} does not match this training's state")
        leaf = jnp.asarray(a)
        if _is_key(t):
            leaf = jax.random.wrap_key_data(leaf, impl=jax.random.key_impl(t))
        leaves.append(leaf)
    records = {k[len("records/"):]: v for k, v in ck.items() if k.startswith("records/")}
    return jax.tree_util.tree_unflatten(treedef, leaves), done, records


def _float_or_nan(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _eig_info(rec, i) -> str:
    if "hessian_eigs" in rec and np.isfinite(rec["hessian_eigs"][i, 0]):
        return f"  λ₁ {rec['hessian_eigs'][i, 0]:.4g}"
    return ""


def nan_rows(template: dict, count: int) -> dict:
    """``count`` rows shaped like ``template``'s (a dict of (T, ...) arrays) for steps after every
    run diverged: NaN floats, ``diverged`` True, other booleans False, integers 0."""
    def fill(key, a):
        shape = (count,) + a.shape[1:]
        if a.dtype == bool:
            return np.full(shape, key == "diverged", bool)
        if np.issubdtype(a.dtype, np.floating):
            return np.full(shape, np.nan, a.dtype)
        return np.zeros(shape, a.dtype)

    return {key: fill(key, a) for key, a in template.items()}


def _progress(enabled: bool, steps: int, description: str):
    if not enabled:
        return None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                 transient=False)
    task = p.add_task(description, total=steps, info="compiling…")
    p.start()
    return p, task


def initial_state(problem: Problem, optimizer: optim.Optimizer, *, spec: Problem | None = None, k: int = 2,
                  track: tuple[str, ...] = ("hessian",), seed: int = 0) -> StepState:
    """The :class:`~eoslab.dynamics.stepper.StepState` :func:`train` starts from: θ₀, the
    optimizer's state, the trackers' cold states (seeded by ``seed``; on ``spec``, default
    ``problem``) and the step key. Call it outside jit."""
    spec = problem if spec is None else spec
    key = jax.random.PRNGKey(seed)
    aux = tracking.spectra_init(spec, k=k, key=key, which=tuple(track)) if track else {}
    if track and "hessian" in track and optimizer.quantity == "preconditioned":
        flat0 = ravel_pytree(problem.params)[0]
        aux["preconditioned"] = tracking.track_init(flat0.size, min(k, flat0.size),
                                                    jax.random.fold_in(key, 99), flat0.dtype)
    return init_state(problem.params, optimizer, aux=aux, key=jax.random.fold_in(key, 1))


def train_step(problem: Problem, optimizer: optim.Optimizer, tol: float, *, spec: Problem | None = None, every: int = 1,
               nonlinear: bool = False, project: bool = False, max_products: int | None = None,
               batch_size: int | None = None, n_mc: int = 32,
               density: tuple | None = None, shared_counts: bool = False) -> Callable:
    """:func:`train`'s pure step ``step(state) -> (state', record)`` (traceable; the
    :func:`~eoslab.dynamics.stepper.make_step` of the optimizer with the spectra observer),
    for :func:`~eoslab.dynamics.stepper.scan`, alone or ``vmap``-ped over a batch of states.
    ``shared_counts``: the step is ``vmap``-ped with the step index ``t`` and the trackers'
    call counts un-batched (every member at the same step; ``davidson.track``'s ``shared_count``)."""
    spec = problem if spec is None else spec
    observe = _spectra_observer(problem, spec, optimizer, tol, every=every, nonlinear=nonlinear, project=project,
                                max_products=max_products, classification=_is_classification(problem),
                                batch_size=batch_size, n_mc=n_mc, density=density, shared_counts=shared_counts)
    batch_loss = None
    if batch_size is not None:
        batch_loss = lambda p, key: take(problem, sample_batch(key, problem.n, batch_size)).loss_fn(p)
    # Tracking the full-batch Hessian at every step of full-batch training: the step's gradient
    # and the tracker's first products come from one pass (Context.hvps).
    fuse = every == 1 and batch_size is None and spec is problem
    tangents = _hessian_rows if fuse else None
    return make_step(problem.loss_fn, optimizer, observe=observe, batch_loss=batch_loss, tangents=tangents)


def _hessian_rows(aux):
    st = aux.get("hessian") if isinstance(aux, dict) else None
    return None if st is None else tracking.tracked_rows(st)


def batch_sharpness(problem: Problem, params: Params, key: PRNGKeyArray, batch_size: int, samples: int
                    ) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Monte Carlo batch sharpness: the mean and standard error over ``samples`` independent
    mini-batches B (:func:`sample_batch`) of g_Bᵀ H_B g_B / ‖g_B‖², with g_B, H_B the gradient
    and Hessian of the loss of B (Andreyev & Beneventano 2024). One gradient and one HVP per
    sample; returns two scalars."""
    def one(k):
        sub = take(problem, sample_batch(k, problem.n, batch_size))
        grad = jax.grad(sub.loss_fn)
        g, hg = jax.jvp(grad, (params,), (grad(params),))
        gf, hgf = ravel_pytree(g)[0], ravel_pytree(hg)[0]
        return (gf @ hgf) / (gf @ gf)

    vals = jax.vmap(one)(jax.random.split(key, samples))
    se = jnp.std(vals, ddof=1) / jnp.sqrt(samples) if samples > 1 else jnp.asarray(jnp.nan, vals.dtype)
    return jnp.mean(vals), se


def _densities(spec, params, key, ops, probes, steps, products) -> dict:
    """Trace (Hutch++) and SLQ density of each operator in ``ops`` at ``params``."""
    out = {}
    dtype = ravel_pytree(params)[0].dtype
    for i, op in enumerate(ops):
        mv, dim = tracking.operator(spec, params, op)
        kt, kd = jax.random.split(jax.random.fold_in(key, i))
        tr = spectral_density.hutchpp(mv, dim, kt, products, dtype)
        d = spectral_density.slq(mv, dim, kd, probes, min(steps, dim), dtype)
        out[f"{op}_trace"], out[f"{op}_trace_stderr"] = tr.value, tr.stderr
        out[f"{op}_density_nodes"], out[f"{op}_density_weights"] = d.nodes.reshape(-1), d.weights.reshape(-1)
    return out


def _spectra_observer(problem, spec, optimizer, tol, *, every, nonlinear, project, max_products, classification,
                      batch_size, n_mc, density=None, shared_counts=False):
    _, unravel = ravel_pytree(problem.params)

    def tracked(ctx):
        params, aux = ctx.params, ctx.aux
        ops = {op: st for op, st in aux.items() if op in OPERATORS}
        fused = ctx.hvps is not None and "hessian" in ops
        products = {"hessian": ctx.hvps} if fused else None
        matvecs = {"hessian": ctx.hvp} if (fused and ctx.hvp is not None) else None
        new, res = (_track_step(spec, params, ops, tol, max_products, shared_counts, products, matvecs) if ops
                    else ({}, {}))
        out = {}
        for op, r in res.items():
            out[f"{op}_eigs"], out[f"{op}_residuals"] = r.values, r.residuals
            out[f"{op}_products"], out[f"{op}_entered"] = r.n_products, r.entered
            out[f"{op}_converged"] = r.converged
        tops = {op: r.vectors[0] for op, r in res.items()}
        if "preconditioned" in aux:
            s = jax.lax.rsqrt(ravel_pytree(optimizer.preconditioner(ctx.opt_state))[0].astype(aux["preconditioned"].vectors.dtype))
            hmv = ctx.hvp if (ctx.hvp is not None and "hessian" in ops) else hvp(spec, params, linearized=True)[0]
            st, r = tracking.track(lambda v: s * hmv(s * v), aux["preconditioned"], tol=tol, max_products=max_products,
                                   shared_count=shared_counts)
            new["preconditioned"] = st
            out["preconditioned_eigs"], out["preconditioned_residuals"] = r.values, r.residuals
            out["preconditioned_products"], out["preconditioned_entered"] = r.n_products, r.entered
            out["preconditioned_converged"] = r.converged
        return new, (out, tops)

    def skipped(ctx):
        out, tops = {}, {}
        for op, st in ctx.aux.items():
            nan = jnp.full((st.k,), jnp.nan, st.vectors.dtype)
            out[f"{op}_eigs"], out[f"{op}_residuals"] = nan, nan
            out[f"{op}_products"], out[f"{op}_entered"] = jnp.zeros((), jnp.int32), jnp.array(False)
            out[f"{op}_converged"] = jnp.array(False)
            if op in OPERATORS:
                tops[op] = jnp.zeros((st.vectors.shape[1],), st.vectors.dtype)
        return ctx.aux, (out, tops)

    def observe(ctx):
        v = ctx.params
        rec = {}
        if batch_size is not None:
            rec["batch_loss"] = ctx.loss
            rec["loss"] = problem.loss_fn(v)
        outputs = None
        if classification:
            outputs = problem.predict(v)
            hit = jnp.argmax(outputs, -1) == jnp.argmax(problem.targets, -1)
            rec["accuracy"] = jnp.mean(hit.astype(ctx.loss.dtype))
        else:
            rec["accuracy"] = jnp.asarray(jnp.nan, ctx.loss.dtype)
        aux, top_ntk = ctx.aux, None
        if aux:
            if every == 1:
                aux, (out, tops) = tracked(ctx)
            else:
                aux, (out, tops) = jax.lax.cond(ctx.t % every == 0, tracked, skipped, ctx)
            rec.update(out)
            top_ntk = tops.get("ntk")
            edge = jnp.asarray(optimizer.edge(ctx.opt_state), ctx.loss.dtype)
            key = "preconditioned_eigs" if "preconditioned_eigs" in out else "hessian_eigs"
            if key in out:
                rec["edge_ratio"] = out[key][0] / edge
        rec["tracked"] = (ctx.t % every == 0) if aux else jnp.array(False)
        if density is not None:
            ops, d_every, probes, d_steps, products, seed = density
            dkey = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 0x5D), ctx.t)
            dens = lambda p: _densities(spec, p, dkey, ops, probes, d_steps, products)
            blank = lambda p: jax.tree_util.tree_map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype),
                                                     jax.eval_shape(dens, p))
            rec.update(jax.lax.cond(ctx.t % d_every == 0, dens, blank, v))
        if batch_size is not None:  # every track_every steps, with or without tracked operators
            measure = lambda c: batch_sharpness(problem, c.params, c.key, batch_size, n_mc)
            nan = jnp.asarray(jnp.nan, ctx.loss.dtype)
            skip = lambda c: (nan, nan)
            bs = measure(ctx) if every == 1 else jax.lax.cond(ctx.t % every == 0, measure, skip, ctx)
            rec["batch_sharpness"], rec["batch_sharpness_se"] = bs
        if nonlinear:
            delta = ctx.updates
            f0, jd, qdd = expand(problem.fn, v, delta, problem.data)
            nl = 0.5 * qdd.reshape(-1)
            rec["linear_norm"] = jnp.linalg.norm(jd)
            rec["nonlinear_norm"] = jnp.linalg.norm(nl)
            rec["nonlinear_top"] = (jnp.abs(top_ntk @ nl) if (project and top_ntk is not None)
                                    else jnp.asarray(jnp.nan, ctx.loss.dtype))
            moved = optax.apply_updates(v, delta)
            rec["nonlinear_actual"] = jnp.linalg.norm((problem.predict(moved) - f0 - jd).reshape(-1))
        return aux, rec

    return observe


@functools.partial(jax.jit, static_argnames=("optimizer", "length", "every", "nonlinear", "project", "max_products",
                                             "batch_size", "n_mc", "density"))
def _chunk(problem, spec, tol, state, total, optimizer, *, length, every, nonlinear, project, max_products,
           batch_size, n_mc, density=None):
    step = train_step(problem, optimizer, tol, spec=spec, every=every, nonlinear=nonlinear, project=project,
                      max_products=max_products, batch_size=batch_size, n_mc=n_mc, density=density)
    return scan(step, state, length, total=total)


# ---- summaries ---------------------------------------------------------------------------

def crossings(values: np.ndarray, threshold: float) -> int:
    """Number of upward crossings of ``threshold`` by the finite entries of ``values``
    (the first value counts as a crossing if it already lies above)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0
    above = v > threshold
    return int(above[0]) + int(np.sum(above[1:] & ~above[:-1]))


def first_above(values: np.ndarray, threshold: float) -> int:
    """First step with ``values > threshold`` (−1 if never)."""
    hit = np.nonzero(np.asarray(values) > threshold)[0]
    return int(hit[0]) if hit.size else -1


def summarize(traj: dict, op: str | None = None) -> dict:
    """Scalars of a :func:`train` trajectory for the operator ``op`` against the optimizer's
    own edge at every step (the ``edge`` key): final loss, max sharpness, number of upward
    crossings of the edge by λ₁, steps above it, whether λ₂ stayed below, …

    ``op`` defaults to the optimizer's stability operator: ``"preconditioned"`` for adaptive
    optimizers (when tracked), else ``"hessian"``. For an optax optimizer with an unknown edge
    (NaN) the edge counts are absent and only the spectra are summarised."""
    meta = getattr(traj, "meta", {})
    if op is None:
        op = "preconditioned" if "preconditioned_eigs" in traj else "hessian"
    lr = float(meta["lr"]) if "lr" in meta else float(traj.get("lr", np.nan))
    if "edge" in traj:
        edge_t = np.asarray(traj["edge"], float)
    else:  # a plain dict of GD arrays (no optimizer recorded): GD's 2/η
        edge_t = np.full(traj["loss"].shape[0], 2.0 / lr)
    finite_edge = edge_t[np.isfinite(edge_t)]
    edge = float(finite_edge[-1]) if finite_edge.size else float("nan")
    seconds = meta.get("seconds", traj.get("seconds", np.nan))
    out = {"optimizer": meta.get("optimizer", "gd"), "lr": lr,
           "quantity": meta.get("quantity", "hessian"), "batch_size": meta.get("batch_size"),
           "edge": edge, "steps": int(traj["loss"].shape[0]),
           "final_loss": float(traj["loss"][-1]), "min_loss": float(np.nanmin(traj["loss"])),
           "diverged": bool(traj["diverged"][-1]), "seconds": float(seconds)}
    if not np.all(np.isnan(traj["accuracy"])):
        out["final_accuracy"] = float(traj["accuracy"][-1])
    key = f"{op}_eigs"
    if key in traj and np.any(np.isfinite(traj[key])):
        e = traj[key]
        ratio = e[:, 0] / edge_t
        out.update({
            "operator": op,
            "initial_sharpness": float(e[np.isfinite(e[:, 0])][0, 0]),
            "max_sharpness": float(np.nanmax(e[:, 0])),
            "max_residual": float(np.nanmax(traj[f"{op}_residuals"][:, 0])),
            "products_per_track": float(np.mean(traj[f"{op}_products"][traj["tracked"]])),
            "unconverged_steps": int(np.sum(traj["tracked"] & ~traj[f"{op}_converged"]))
            if f"{op}_converged" in traj else 0,
        })
        if finite_edge.size:
            out.update({"crossings": crossings(ratio, 1.0), "first_crossing_step": first_above(ratio, 1.0),
                        "steps_above_edge": int(np.sum(ratio > 1.0)), "max_edge_ratio": float(np.nanmax(ratio))})
        if e.shape[1] > 1:
            out["max_second"] = float(np.nanmax(e[:, 1]))
            if finite_edge.size:
                out["second_below_edge"] = bool(np.nanmax(e[:, 1] / edge_t) < 1.0)
    if "batch_sharpness" in traj and np.any(np.isfinite(traj["batch_sharpness"])):
        bs = traj["batch_sharpness"]
        out["final_batch_sharpness"] = float(bs[np.isfinite(bs)][-1])
        out["max_batch_sharpness"] = float(np.nanmax(bs))
    return out


# ---- network vs its Taylor model ----------------------------------------------------------

def divergence_step(a: np.ndarray, b: np.ndarray, rtol: float = 0.1) -> int:
    """First step where ``|a − b| > rtol·|a|`` (−1 if never): when two trajectories part."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    bad = ~(np.abs(a - b) <= rtol * np.abs(a))
    hit = np.nonzero(bad & (np.isfinite(a) | np.isfinite(b)))[0]
    return int(hit[0]) if hit.size else -1


@follows("problem")
def compare_taylor(problem: Problem, lr: float, steps: int, *, rtol: float = 0.1, progress: bool = False,
                   **train_kw: Any) -> dict:
    """Train ``problem`` and its second-order Taylor model around θ₀ side by side.

    Both start from θ₀ with the same η and options (``train_kw`` go to :func:`train`;
    ``nonlinear=True`` is forced so the non-linear dynamical contribution is recorded).
    Returns ``{"network": traj, "taylor": traj, "loss_divergence_step": t,
    "sharpness_divergence_step": t}``, the steps where the loss / top Hessian eigenvalue
    of the two first differ by more than ``rtol`` (relative; −1 if never).
    """
    if is_taylor(problem):
        raise EoslabError("compare_taylor needs the network's problem, not a Taylor model")
    train_kw["nonlinear"] = True
    net, _ = train(problem, lr, steps, progress=progress, description="network", **train_kw)
    tay, _ = train(taylor_problem(problem), lr, steps, progress=progress, description="Taylor model", **train_kw)
    out = {"network": net, "taylor": tay, "rtol": rtol,
           "loss_divergence_step": divergence_step(net["loss"], tay["loss"], rtol)}
    if "hessian_eigs" in net:
        tracked = net["tracked"]
        s = divergence_step(net["hessian_eigs"][tracked, 0], tay["hessian_eigs"][tracked, 0], rtol)
        out["sharpness_divergence_step"] = int(np.nonzero(tracked)[0][s]) if s >= 0 else -1
    return out
