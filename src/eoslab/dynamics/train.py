"""Full-batch training of any :class:`~eoslab.Problem` (networks included) with matrix-free
spectral tracking at every step, and the network-vs-Taylor-model comparison.

:func:`train` runs GD (or heavy-ball momentum) in jitted chunks of ``lax.scan`` (so a rich
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
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from eoslab import progress as eoslab_progress
from eoslab._precision import follows
from eoslab.dynamics.gd import all_finite
from eoslab.errors import EoslabError, between, check, check_positive, check_positive_int
from eoslab.models.taylor import TaylorData, expand, is_taylor, taylor_problem
from eoslab.problem import Params, Problem
from eoslab.spectra import tracking

#: Operators that can be tracked (see :data:`eoslab.spectra.tracking.OPERATORS`).
OPERATORS = tracking.OPERATORS

#: Keys of a :func:`train` trajectory; arrays indexed by step t = 0 … steps−1, row t
#: describing θ_t before its update. ``<op>`` is each tracked operator.
TRAIN_KEYS = {
    "loss": "L(θ_t)",
    "accuracy": "fraction of examples whose argmax output is the argmax target (NaN for regression)",
    "grad_norm": "‖∇L(θ_t)‖",
    "tracked": "True at the steps where the spectra were computed (t % track_every == 0)",
    "<op>_eigs": "(k,) top-k algebraic eigenvalues of the operator at θ_t (NaN when not tracked)",
    "<op>_residuals": "(k,) ‖Av − θv‖ of each: a rigorous bound on its distance to the spectrum",
    "<op>_products": "operator-vector products spent tracking it at this step",
    "<op>_converged": "True when the tracker's stopping rule held at this step (False: its product cap was hit)",
    "<op>_entered": "True when a new eigenvector entered the top-k set at this step",
    "linear_norm": "‖J_t δ_t‖, δ_t the parameter update (only with nonlinear=True)",
    "nonlinear_norm": "‖½Q_t(δ_t, δ_t)‖: the η² part of the output change (nonlinear=True)",
    "nonlinear_top": "u·½Q_t(δ_t, δ_t), u the top NTK eigenvector (nonlinear=True, NTK tracked on all data)",
    "nonlinear_actual": "‖f(θ_t+δ_t) − f(θ_t) − J_t δ_t‖: all orders beyond linear (nonlinear=True)",
    "diverged": "True from the first step whose loss or parameters are non-finite (rows NaN there)",
}


def subset(problem: Problem, indices) -> Problem:
    """The problem restricted to the examples ``indices`` (works for Taylor problems too,
    whose expansion point must not be sliced). See
    :func:`eoslab.spectra.tracking.data_subset`."""
    if isinstance(problem.data, TaylorData):
        inner = tracking.data_subset(dataclasses.replace(problem, data=problem.data.inputs), indices)
        return dataclasses.replace(inner, data=TaylorData(inner.data, problem.data.anchor))
    return tracking.data_subset(problem, indices)


def _is_classification(problem: Problem) -> bool:
    # the loss says so: a multi-output regression (targets (n, c > 1) under MSE) has no accuracy
    return getattr(problem, "loss", None) == "cross_entropy" and problem.targets.ndim == 2


def _track_step(problem, params, states, tol, max_products):
    """The one place that computes the tracked spectra (swap the tracker here)."""
    return tracking.track_spectra(problem, params, states, tol=tol, max_products=max_products)


def _check(lr, steps, k, track_every, track, momentum, tol=1e-3):
    check_positive("lr", lr)
    check_positive_int("steps", steps)
    check_positive_int("k", k)
    check_positive_int("track_every", track_every)
    check("tol", tol, between(0, 1, lo_open=True, hi_open=True))
    if not 0.0 <= float(momentum) < 1.0:
        raise EoslabError(f"momentum must be in [0, 1), got {momentum!r}")
    for op in track:
        if op not in OPERATORS:
            raise EoslabError(f"unknown operator {op!r} to track; expected some of {OPERATORS}")


@follows("problem")
def train(problem: Problem, lr: float, steps: int, *, momentum: float = 0.0, k: int = 2,
          track_every: int = 1, track=("hessian", "ntk"), tol: float = 1e-3, spectra_examples=None,
          max_products: int | None = None, nonlinear: bool = False, seed: int = 0,
          chunk: int = 50, progress: bool = False, description: str = "training"):
    """Full-batch GD ``v ← μv − η∇L(θ); θ ← θ + v`` (μ = ``momentum``; 0 is plain GD).

    Args:
      problem: model, data and θ₀ (any pytree; float32 parameters stay float32).
      lr: step size η. steps: number of updates.
      k: top eigenvalues tracked per operator (the tracker's block is k + 1).
      track_every: compute the spectra at steps t with t % track_every == 0 (1: every step).
      track: operators to follow, among ``"hessian"``, ``"ntk"``, ``"gauss_newton"``
        (empty: no spectra).
      tol: relative accuracy of the tracked eigenvalues (stopping rule of the tracker).
      spectra_examples: compute the spectra on a fixed subset of the data, as Cohen et al.
        do for large datasets: an int m (the first m examples) or an index array. The
        loss normalisation is kept a mean, so the subset's eigenvalues estimate the full
        ones. ``None``: all examples.
      max_products: cap on products per tracking call (default: the tracker's).
      nonlinear: also record the linear / non-linear parts of each step's output change
        (:data:`TRAIN_KEYS`); costs a nested JVP and a forward pass per step.
      seed: seeds the trackers' cold start. chunk: steps per jitted scan (progress updates).
      progress: show a rich progress bar with ETA.

    Returns:
      ``(trajectory, final_params)``: trajectory is a dict of NumPy arrays (keys
      :data:`TRAIN_KEYS`, plus ``"seconds"`` (wall time, compilation included),
      ``"first_chunk_seconds"`` (the first chunk: compilation + ``chunk`` steps) and ``"lr"``).
    """
    track = tuple(track)
    _check(lr, steps, k, track_every, track, momentum, tol)
    chunk = check_positive_int("chunk", chunk)
    flat0, _ = ravel_pytree(problem.params)
    if track and k >= flat0.size:
        raise EoslabError(f"k = {k} tracked eigenvalues needs more than k parameters; the model has {flat0.size}")
    dtype = flat0.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise EoslabError(f"parameters must be floating point, got {dtype}")
    spec = problem
    if spectra_examples is not None:
        idx = np.arange(int(spectra_examples)) if np.ndim(spectra_examples) == 0 else np.asarray(spectra_examples)
        spec = subset(problem, idx)
    project = bool(nonlinear and "ntk" in track and spectra_examples is None)
    states = tracking.spectra_init(spec, k=k, key=jax.random.PRNGKey(seed), which=track) if track else {}

    state = (flat0, jnp.zeros_like(flat0), states, jnp.array(False))
    lr_a, mom_a, tol_a = (jnp.asarray(v, dtype) for v in (lr, momentum, tol))
    static = dict(length=min(chunk, steps), every=int(track_every), nonlinear=bool(nonlinear),
                  project=project, max_products=max_products, classify=_is_classification(problem))

    records, t_first = [], None
    bar = _progress(progress, steps, description)
    done = 0
    start = time.perf_counter()
    listener = eoslab_progress.task(description, steps, "steps")
    report = listener.__enter__()
    try:
        while done < steps:
            state, rec = _chunk(problem, spec, lr_a, mom_a, tol_a, state, jnp.asarray(done), jnp.asarray(steps),
                                **static)
            rec = jax.tree_util.tree_map(np.asarray, rec)
            if t_first is None:
                t_first = time.perf_counter() - start
            take = min(static["length"], steps - done)
            records.append(jax.tree_util.tree_map(lambda a: a[:take], rec))
            done += take
            info = f"loss {float(rec['loss'][take - 1]):.4g}" + _eig_info(rec, take - 1)
            report.update(done, info)
            if bar is not None:
                bar[0].update(bar[1], completed=done, info=info)
            if bool(state[3]):  # diverged: nothing more to compute
                records.append(_nan_rows(records[-1], steps - done))
                done = steps
    finally:
        listener.__exit__(None, None, None)
        if bar is not None:
            bar[0].stop()
    traj = {key: np.concatenate([r[key] for r in records]) for key in records[0]}
    traj["seconds"] = np.asarray(time.perf_counter() - start)
    traj["first_chunk_seconds"] = np.asarray(t_first)
    traj["lr"] = np.asarray(float(lr))
    return traj, ravel_pytree(problem.params)[1](state[0])


def _eig_info(rec, i) -> str:
    if "hessian_eigs" in rec and np.isfinite(rec["hessian_eigs"][i, 0]):
        return f"  λ₁ {rec['hessian_eigs'][i, 0]:.4g}"
    return ""


def _nan_rows(template: dict, count: int) -> dict:
    def fill(a):
        shape = (count,) + a.shape[1:]
        if a.dtype == bool:
            return np.ones(shape, bool) if a is template.get("diverged") else np.zeros(shape, bool)
        if np.issubdtype(a.dtype, np.floating):
            return np.full(shape, np.nan, a.dtype)
        return np.zeros(shape, a.dtype)

    return {key: fill(a) for key, a in template.items()}


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


@functools.partial(jax.jit, static_argnames=("length", "every", "nonlinear", "project", "max_products", "classify"))
def _chunk(problem, spec, lr, momentum, tol, state, start, total, *, length, every, nonlinear, project,
           max_products, classify):
    _, unravel = ravel_pytree(problem.params)
    loss_flat = lambda v: problem.loss_fn(unravel(v))

    def spectra(v, states):
        if not states:
            return states, {}
        new, res = _track_step(spec, unravel(v), states, tol, max_products)
        out = {}
        for op, r in res.items():
            out[f"{op}_eigs"], out[f"{op}_residuals"] = r.values, r.residuals
            out[f"{op}_products"], out[f"{op}_entered"] = r.n_products, r.entered
            out[f"{op}_converged"] = r.converged
        return new, (out, res)

    def skip_spectra(v, states):
        out = {}
        for op, st in states.items():
            nan = jnp.full((st.k,), jnp.nan, st.vectors.dtype)
            out[f"{op}_eigs"], out[f"{op}_residuals"] = nan, nan
            out[f"{op}_products"], out[f"{op}_entered"] = jnp.zeros((), jnp.int32), jnp.array(False)
            out[f"{op}_converged"] = jnp.array(False)
        top = {op: jnp.zeros((st.vectors.shape[1],), st.vectors.dtype) for op, st in states.items()}
        return states, (out, top)

    def one_step(v, vel, states, t):
        loss, g = jax.value_and_grad(loss_flat)(v)
        rec = {"loss": loss, "grad_norm": jnp.linalg.norm(g)}
        outputs = None
        if classify:
            outputs = problem.predict(unravel(v))
            hit = jnp.argmax(outputs, -1) == jnp.argmax(problem.targets, -1)
            rec["accuracy"] = jnp.mean(hit.astype(v.dtype))
        else:
            rec["accuracy"] = jnp.asarray(jnp.nan, v.dtype)
        top_ntk = None
        if states:
            def do(v, states):
                new, (out, res) = spectra(v, states)
                return new, (out, {op: r.vectors[0] for op, r in res.items()})

            if every == 1:
                states, (out, tops) = do(v, states)
            else:
                states, (out, tops) = jax.lax.cond(t % every == 0, do, skip_spectra, v, states)
            rec.update(out)
            top_ntk = tops.get("ntk")
        rec["tracked"] = (t % every == 0) if states else jnp.array(False)
        vel = momentum * vel - lr * g
        if nonlinear:
            p, delta = unravel(v), unravel(vel)
            f0, jd, qdd = expand(problem.fn, p, delta, problem.data)
            nl = 0.5 * qdd.reshape(-1)
            rec["linear_norm"] = jnp.linalg.norm(jd)
            rec["nonlinear_norm"] = jnp.linalg.norm(nl)
            rec["nonlinear_top"] = (top_ntk @ nl) if (project and top_ntk is not None) else jnp.asarray(jnp.nan, v.dtype)
            rec["nonlinear_actual"] = jnp.linalg.norm((problem.predict(unravel(v + vel)) - f0 - jd).reshape(-1))
        return v + vel, vel, states, rec, loss

    def body(carry, i):
        v, vel, states, div = carry
        t = start + i
        active = t < total
        nv, nvel, nstates, rec, loss = one_step(v, vel, states, t)
        div = div | (active & ~(jnp.isfinite(loss) & all_finite(nv)))
        rec = jax.tree_util.tree_map(
            lambda x: jnp.where(div, jnp.nan, x) if jnp.issubdtype(x.dtype, jnp.inexact) else x, rec)
        rec["diverged"] = div
        keep = div | ~active
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), (v, vel, states), (nv, nvel, nstates))
        return (*new, div), rec

    carry, recs = jax.lax.scan(body, state, jnp.arange(length))
    return carry, recs


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


def summarize(traj: dict, op: str = "hessian") -> dict:
    """Scalars of a :func:`train` trajectory for the operator ``op``: final loss, max
    sharpness, number of upward crossings of 2/η by λ₁, whether λ₂ stayed below 2/η, …"""
    lr = float(traj["lr"])
    edge = 2.0 / lr
    out = {"lr": lr, "edge": edge, "steps": int(traj["loss"].shape[0]),
           "final_loss": float(traj["loss"][-1]), "min_loss": float(np.nanmin(traj["loss"])),
           "diverged": bool(traj["diverged"][-1]), "seconds": float(traj["seconds"])}
    if not np.all(np.isnan(traj["accuracy"])):
        out["final_accuracy"] = float(traj["accuracy"][-1])
    key = f"{op}_eigs"
    if key in traj and np.any(np.isfinite(traj[key])):
        e = traj[key]
        out.update({
            "operator": op,
            "initial_sharpness": float(e[np.isfinite(e[:, 0])][0, 0]),
            "max_sharpness": float(np.nanmax(e[:, 0])),
            "crossings": crossings(e[:, 0], edge),
            "first_crossing_step": first_above(e[:, 0], edge),
            "steps_above_edge": int(np.sum(e[:, 0] > edge)),
            "max_residual": float(np.nanmax(traj[f"{op}_residuals"][:, 0])),
            "products_per_track": float(np.mean(traj[f"{op}_products"][traj["tracked"]])),
            "unconverged_steps": int(np.sum(traj["tracked"] & ~traj[f"{op}_converged"]))
            if f"{op}_converged" in traj else 0,
        })
        if e.shape[1] > 1:
            out["max_second"] = float(np.nanmax(e[:, 1]))
            out["second_below_edge"] = bool(np.nanmax(e[:, 1]) < edge)
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
                   **train_kw) -> dict:
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
