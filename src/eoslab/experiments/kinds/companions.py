"""The companion papers: the minimalist two-layer network (Liu et al. 2025) and deep linear
networks at large step sizes (Crăciun & Ghoshdastidar 2024).

Two runners shared by the CLI (``eoslab two-layer``, ``eoslab linear-net``) and the reproduction
kinds ``two_layer.phases`` and ``linear_net.threshold`` registered here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from eoslab.dynamics import gd, sweep
from eoslab.dynamics.convergence import convergence_sweep
from eoslab.dynamics.projected import projected_gd
from eoslab.errors import (EoslabError, check_positive, check_positive_int, each, nonempty, nonnegative_int,
                           positive, positive_int)
from eoslab.experiments import Field, Kind, Measurement, register
from eoslab.models import linear_net, two_layer
from eoslab.theory import linear_net as ln_theory
from eoslab.theory import two_layer as tl_theory


# ---- two-layer network ------------------------------------------------------------------------
def simulate_two_layer(lam1: float = 1.0, lam2: float = 0.01, lr: float = 4.0, steps: int = 1500,
                       theta0=two_layer.THETA0, samples: int = 0, seed: int = 0,
                       lower=None, upper=None) -> dict:
    """GD (or projected GD onto the box [lower, upper] when either is given) on the two-layer model.

    ``samples = 0``: population loss; ``samples = n > 0``: empirical loss on n samples drawn with
    ``seed``. Returns ``{"trajectory": {key: (steps, ...) array}, "phases": dict, "config": dict}``;
    the trajectory has GD's keys plus ``params`` (steps, 3) and the per-step diagnostics of
    :func:`eoslab.theory.two_layer.diagnostics` (the exact sharpness among them: P = 3, closed-form
    Hessian, so GD itself records no spectra; the NTK of an empirical problem would be n×n).
    """
    lr = check_positive("lr", lr)
    steps = check_positive_int("steps", steps)
    if samples < 0 or int(samples) != samples:
        raise EoslabError(f"samples must be 0 (population) or a positive integer, got {samples!r}")
    if samples:
        problem = two_layer.empirical_problem(jax.random.PRNGKey(seed), lam1, lam2, int(samples), theta0)
    else:
        problem = two_layer.population_problem(lam1, lam2, theta0)
    projected = lower is not None or upper is not None
    if projected:
        lo = -np.inf if lower is None else lower
        hi = np.inf if upper is None else upper
        traj, _ = projected_gd(problem, lr, steps, lo, hi, spectra="none", record_params=True)
    else:
        traj, _ = gd(problem, lr, steps, spectra="none", record_params=True)
    sigma = two_layer.problem_covariance(problem)
    diag = tl_theory.diagnostics(traj["params"], sigma, lr)
    traj = {**{k: np.asarray(v) for k, v in traj.items()}, **{k: np.asarray(v) for k, v in diag.items()}}
    ph = tl_theory.phases(traj["sharpness"], traj["loss"], traj["gfs_sharpness"], lr)
    ph["diverged"] = bool(traj["diverged"][-1])
    ph["max_stable_set_distance_after_eos"] = _nanmax(traj["stable_set_distance"][max(ph["convergence_start"], 0):]) \
        if ph["convergence_start"] >= 0 else float("nan")
    ph["final_stable_set_distance"] = float(traj["stable_set_distance"][-1])
    ph["balance_identity_error"] = balance_identity_error(traj["params"], sigma, lr)
    config = dict(lam1=lam1, lam2=lam2, lr=lr, steps=steps, theta0=[float(t) for t in np.asarray(theta0)],
                  samples=int(samples), seed=seed, projected=projected,
                  lower=None if lower is None else np.broadcast_to(lower, (3,)).tolist(),
                  upper=None if upper is None else np.broadcast_to(upper, (3,)).tolist())
    return {"trajectory": traj, "phases": ph, "config": config, "sigma": np.asarray(sigma)}


def _nanmax(x) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmax(x)) if np.isfinite(x).any() else float("nan")


def balance_identity_error(params, sigma, lr) -> float:
    """max_t |c_{t+1} − c_t − η²(g_α² − ‖g_β‖²)| / (1 + |c_t|): GD moves the conserved quantity of
    gradient flow only at O(η²), by exactly this amount (plain GD only; NaN rows skipped)."""
    p = jnp.asarray(params)
    c = tl_theory.balance(p)
    g = jax.vmap(lambda th: two_layer.grad(th, jnp.asarray(sigma)))(p)
    pred = lr**2 * (g[:, 0] ** 2 - jnp.sum(g[:, 1:] ** 2, axis=1))
    err = jnp.abs(c[1:] - c[:-1] - pred[:-1]) / (1 + jnp.abs(c[:-1]))
    return _nanmax(err)


# ---- deep linear networks ------------------------------------------------------------------------
def parse_grid(spec: str) -> np.ndarray:
    """Step sizes from ``"start:stop:num"`` (inclusive ``linspace``) or ``"a,b,c"``; all > 0."""
    try:
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, num = float(parts[0]), float(parts[1]), parts[2]
            if not num.strip().isdigit() or int(num) < 1 or stop < start:
                raise ValueError
            grid = np.round(np.linspace(start, stop, int(num)), 12)   # 0.85, not 0.8500000000000001
        else:
            grid = np.array([float(v) for v in spec.split(",")])
    except ValueError:
        raise EoslabError(f"malformed step-size grid {spec!r}: expected START:STOP:NUM with START ≤ STOP "
                          f"and NUM a positive integer, or a comma-separated list") from None
    if grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 0)):
        raise EoslabError(f"step sizes must be finite and positive, got {spec!r}")
    return grid


def linear_net_problem(depth: int, width: int, loss: str = "half_mean", target: float = 1.0):
    """The network of the CLI: widths (width, …, width), whitened data X = I (n = width examples)
    and targets Y = target·I. depth 2, width 1: L = ½(uv − target)²."""
    x, y = linear_net.identity_data(width, target)
    widths = linear_net.widths_for(depth, width)
    return linear_net.problem(x, y, linear_net.init(jax.random.PRNGKey(0), widths), loss)


def linear_net_convergence(problem, lrs, inits: int = 1000, steps: int = 2000, init_scale: float = 0.5,
                           seed: int = 0, grad_tol: float = 1e-6, sharpness_rtol: float = 1e-3,
                           track_det: bool = True) -> dict:
    """The convergence fraction over a grid of step sizes, next to the threshold 2 / inf_M λ_max.

    ``inits`` initialisations with i.i.d. N(0, init_scale²) weights (one ``vmap`` over lrs × inits).
    Returns a JSON-ready dict (see docs/companions.md for the keys).
    """
    lrs = np.asarray(lrs, np.float64)
    inits = check_positive_int("inits", inits)
    widths = (problem.data.shape[1],) + tuple(w.shape[0] for w in problem.params)
    keys = jax.random.split(jax.random.PRNGKey(seed), inits)
    batch = jax.vmap(lambda k: linear_net.init(k, widths, init_scale))(keys)
    inf_lam, method = ln_theory.inf_sharpness(problem)
    thr = ln_theory.threshold(inf_lam)
    out = convergence_sweep(problem, lrs, batch, steps, grad_tol=grad_tol,
                            loss_min=ln_theory.minimum_loss(problem), track_det=track_det)
    conv = np.asarray(out["converged"])
    ratio = np.where(conv, lrs[:, None] * np.asarray(out["final_sharpness"]) / 2, np.nan)
    with np.errstate(all="ignore"):
        max_ratio = [float(np.nanmax(r)) if np.isfinite(r).any() else None for r in ratio]
    frac = conv.mean(axis=1)
    beyond = lrs > thr
    det = np.asarray(out["min_abs_det"])
    return {
        "model": "linear_net", "widths": list(widths), "depth": len(widths) - 1,
        "loss": "sum" if problem.normaliser == 0.5 else "half_mean",
        "inits": inits, "steps": int(out["steps"]), "init_scale": init_scale, "seed": seed,
        "grad_tol": grad_tol,
        "inf_sharpness": inf_lam, "threshold": thr, "threshold_method": method,
        "lr": lrs.tolist(),
        "converged_fraction": frac.tolist(),
        "at_minimum_fraction": np.asarray(out["at_minimum"]).mean(axis=1).tolist(),
        "diverged_fraction": np.asarray(out["diverged"]).mean(axis=1).tolist(),
        "max_final_sharpness_ratio": max_ratio,
        "min_abs_det": [float(np.nanmin(d)) if np.isfinite(d).any() else None for d in det],
        "min_abs_det_overall": float(np.nanmin(det)) if np.isfinite(det).any() else None,
        "max_fraction_beyond_threshold": float(frac[beyond].max()) if beyond.any() else None,
        "sharpness_bound_holds": bool(all(r is None or r <= 1 + sharpness_rtol for r in max_ratio)),
        "sharpness_rtol": sharpness_rtol,
    }


def uv_paths(problem, lrs, n_paths: int = 8, steps: int = 200, init_scale: float = 1.0, seed: int = 0):
    """GD paths θ_t = (u, v) of a depth-2 scalar chain, (len(lrs), n_paths, steps, 2), from
    N(0, init_scale²) initialisations (one vmap over lrs × paths)."""
    if problem.num_params != 2:
        raise EoslabError("(u, v) paths need the depth-2 scalar chain (2 parameters)")
    inits = jax.vmap(lambda k: linear_net.init(k, (1, 1, 1), init_scale))(
        jax.random.split(jax.random.PRNGKey(seed), n_paths))
    run = lambda lr, p0: gd(problem, lr, steps, spectra="none", record_params=True, params0=p0)[0]["params"]
    return np.asarray(jax.vmap(lambda lr: jax.vmap(lambda p0: run(lr, p0))(inits))(jnp.asarray(lrs, jnp.float64)))


def path_lrs(lrs, threshold):
    """Three step sizes of a grid for the (u, v) figure: the smallest, the largest below the
    threshold and the smallest above it (when they exist)."""
    lrs = np.asarray(lrs)
    below, above = lrs[lrs < threshold], lrs[lrs > threshold]
    picks = [lrs.min()] + ([below.max()] if below.size else []) + ([above.min()] if above.size else [])
    return np.unique(np.asarray(picks))


# ---- reproduction kinds ------------------------------------------------------------------------
def positive_list(v):
    """Config rule: a non-empty list of finite positive numbers."""
    return nonempty(v) or each(positive)(v)


TWO_LAYER_SCHEMA = {
    "model": {"name": Field(str, "two_layer", choices=("two_layer",)),
              "lam1": Field(float, 1.0, doc="variance λ₁ of the irrelevant input x₁", check=positive),
              "lam2": Field(float, 0.01, doc="variance λ₂ of the relevant input x₂ (y = x₂)", check=positive),
              "samples": Field(int, 0, doc="0: population loss; n > 0: empirical loss on n samples",
                                check=nonnegative_int)},
    "init": {"alpha0": Field(float, two_layer.THETA0[0]), "beta10": Field(float, two_layer.THETA0[1]),
             "beta20": Field(float, two_layer.THETA0[2])},
    "dynamics": {"lr": Field(float, 4.0, doc="step size η", check=positive),
                 "steps": Field(int, 1500, doc="GD steps", static=True, check=positive_int)},
}

_SCALARS = ("eos_start", "convergence_start", "delta_eos", "delta_after", "final_loss", "final_eta_sharpness",
            "gfs_violations", "balance_identity_error", "sharpness_initial", "sharpness_at_ps_end")


def _two_layer_run(points):
    out = []
    for p in points:   # each run is one jitted scan; runs differ in static data (samples), so no vmap
        r = simulate_two_layer(p["lam1"], p["lam2"], p["lr"], p["steps"],
                               (p["alpha0"], p["beta10"], p["beta20"]), p["samples"], p["seed"])
        ph = r["phases"]
        res = {k: np.float64(ph[k]) for k in _SCALARS}
        res["gfs_violations_convergence"] = np.float64(ph["gfs_violations_by_phase"]["convergence"])
        res["gfs_violations_eos"] = np.float64(ph["gfs_violations_by_phase"]["eos"])
        res["diverged"] = np.float64(ph["diverged"])
        for k in ("loss", "sharpness", "gfs_sharpness", "stable_set_distance", "params"):
            res[k] = r["trajectory"][k]
        out.append(res)
    return out


def _scalar(name, reduce=max):
    def measure(runs):
        vals = [float(r.scalars()[name]) for r in runs]
        return Measurement(reduce(vals), 0.0, note=f"{len(vals)} run(s)")
    return measure


def _ps_ratio(runs):
    """min over runs of S(end of PS) / S(θ₀): progressive sharpening's factor."""
    vals = [float(r.scalars()["sharpness_at_ps_end"]) / float(r.scalars()["sharpness_initial"]) for r in runs]
    return Measurement(min(vals), 0.0)


def _two_layer_figures(results):
    from eoslab.plots.companions import two_layer_panels

    figs = []
    for run in results.runs:
        p = run.params
        fig = two_layer_panels(run.arrays, p["lr"], p["lam1"], p["lam2"],
                               title=f"λ₁={p['lam1']}, λ₂={p['lam2']}, η={p['lr']}, n={p['samples'] or '∞'}")
        name = f"two_layer_lr{p['lr']:g}_n{p['samples']}".replace(".", "p")   # no dot: it would read as a suffix
        figs.append((name, fig,
                     "Two-layer net: sharpness and GFS sharpness vs 2/η, loss, phases shaded "
                     "(PS, EoS, convergence), trajectory in the (α, β₁) plane, distance to the stable set."))
    return figs


register(Kind(
    name="two_layer.phases", schema=TWO_LAYER_SCHEMA, run=_two_layer_run,
    measures={"delta_after": _scalar("delta_after"), "delta_eos": _scalar("delta_eos"),
              "final_loss": _scalar("final_loss"), "final_eta_sharpness": _scalar("final_eta_sharpness"),
              "eos_start": _scalar("eos_start", min), "ps_sharpening_ratio": _ps_ratio,
              "convergence_start": _scalar("convergence_start", min),
              "gfs_violations_convergence": _scalar("gfs_violations_convergence"),
              "gfs_violations_eos": _scalar("gfs_violations_eos"),
              "balance_identity_error": _scalar("balance_identity_error")},
    figures=_two_layer_figures, chunk=8,
    doc="GD on the minimalist two-layer net: phases, sharpness after EoS, GFS sharpness, loss."))


LINEAR_NET_SCHEMA = {
    "model": {"name": Field(str, "linear_net", choices=("linear_net",)),
              "depth": Field(int, 2, doc="number of layers L", static=True, check=positive_int),
              "width": Field(int, 1, doc="every width (input, hidden, output)", static=True, check=positive_int),
              "loss": Field(str, "half_mean", choices=linear_net.LOSSES, static=True),
              "target": Field(float, 1.0, doc="Y = target·I")},
    "init": {"inits": Field(int, 1000, doc="initialisations per step size", static=True, check=positive_int),
             "init_scale": Field(float, 0.5, doc="weights i.i.d. N(0, init_scale²)", check=positive)},
    "dynamics": {"lr_grid": Field(list, doc="step sizes (each > 0)", static=True, check=positive_list),
                 "steps": Field(int, 2000, doc="GD steps N", static=True, check=positive_int),
                 "grad_tol": Field(float, 1e-6, doc="converged: ‖∇L(θ_N)‖ ≤ grad_tol", check=positive),
                 "track_det": Field(bool, True, doc="track min |det(I − η∇²L)| at every step (a dense Hessian "
                                                    "per step)", static=True)},
    "theory": {"numerical_inf": Field(bool, False, doc="also minimise λ_max over the minimisers numerically",
                                      static=True)},
}


def _linear_net_run(points):
    out = []
    for p in points:   # one vmapped sweep (lrs × inits) per point
        prob = linear_net_problem(p["depth"], p["width"], p["loss"], p["target"])
        r = linear_net_convergence(prob, p["lr_grid"], p["inits"], p["steps"], p["init_scale"], p["seed"],
                                   p["grad_tol"], track_det=p["track_det"])
        nan = lambda xs: np.array([np.nan if v is None else v for v in xs], np.float64)
        res = {"lr": np.asarray(r["lr"]), "converged_fraction": np.asarray(r["converged_fraction"]),
               "at_minimum_fraction": np.asarray(r["at_minimum_fraction"]),
               "diverged_fraction": np.asarray(r["diverged_fraction"]),
               "max_final_sharpness_ratio": nan(r["max_final_sharpness_ratio"]),
               "min_abs_det": nan(r["min_abs_det"]),
               "threshold": np.float64(r["threshold"]), "inf_sharpness": np.float64(r["inf_sharpness"]),
               "closed_form": np.float64(r["threshold_method"] == "closed_form")}
        if prob.num_params == 2:
            res["uv_lrs"] = path_lrs(r["lr"], r["threshold"])
            res["uv_paths"] = uv_paths(prob, res["uv_lrs"], seed=p["seed"])
        if p["numerical_inf"]:
            res["inf_sharpness_numerical"] = np.float64(
                ln_theory.inf_sharpness_numerical(prob, jax.random.PRNGKey(p["seed"]), restarts=2,
                                                  temperatures=(1e-2, 1e-4))[0])
        out.append(res)
    return out


def _one(runs):
    if len(runs) != 1:
        raise EoslabError(f"this measure needs exactly one run (use `where`), got {len(runs)}")
    return runs[0]


def _grid_step(run):
    lr = run.arrays["lr"]
    return float(np.max(np.diff(lr))) if lr.size > 1 else float("nan")


def _empirical_threshold(runs):
    """Midpoint between the largest η with a converging run and the next grid point (± half a step)."""
    run = _one(runs)
    lr, frac = run.arrays["lr"], run.arrays["converged_fraction"]
    pos = np.flatnonzero(frac > 0)
    if pos.size == 0 or pos[-1] + 1 >= lr.size:
        raise EoslabError("the convergence fraction does not drop to 0 inside the grid")
    k = pos[-1]
    return Measurement(0.5 * (lr[k] + lr[k + 1]), 0.5 * (lr[k + 1] - lr[k]))


def _fraction_beyond(runs):
    run = _one(runs)
    lr, frac = run.arrays["lr"], run.arrays["converged_fraction"]
    beyond = lr > float(run.scalars()["threshold"])
    if not beyond.any():
        raise EoslabError("no step size beyond the threshold in the grid")
    return Measurement(float(frac[beyond].max()), 0.0, note=f"{int(beyond.sum())} step sizes > threshold")


def _fraction_well_below(runs):
    run = _one(runs)
    lr, frac = run.arrays["lr"], run.arrays["converged_fraction"]
    below = lr <= 0.75 * float(run.scalars()["threshold"])
    n = run.params["inits"]
    f = float(frac[below].min())
    return Measurement(f, np.sqrt(max(f * (1 - f), 1.0 / n) / n), note="η ≤ 0.75 η*; binomial standard error")


def _max_ratio(runs):
    vals = np.concatenate([r.arrays["max_final_sharpness_ratio"] for r in runs])
    return Measurement(float(np.nanmax(vals)), 0.0, note="max over converged runs of η·λ_max(θ_N)/2")


def _log10_min_det(runs):
    vals = np.concatenate([r.arrays["min_abs_det"] for r in runs])
    return Measurement(float(np.log10(np.nanmin(vals))), 0.0, note="log10 of min |det(I − η∇²L)| over all steps")


def _threshold(runs):
    return float(_one(runs).scalars()["threshold"])


def _inf_closed(runs):
    return float(_one(runs).scalars()["inf_sharpness"])


def _linear_net_figures(results):
    from eoslab.plots.companions import convergence_fraction, uv_trajectories

    figs = []
    for run in results.runs:
        p = run.params
        fig = convergence_fraction(run.arrays, float(run.scalars()["threshold"]),
                                   title=f"depth {p['depth']}, width {p['width']}, {p['inits']} inits")
        figs.append((f"linear_net_d{p['depth']}_w{p['width']}", fig,
                     "Deep linear net: fraction of initialisations converging to a critical point vs η, "
                     "the threshold 2/inf λ_max (dashed), and the largest η·λ_max/2 of a converged run."))
        if "uv_paths" in run.arrays:
            fig = uv_trajectories(run.arrays["uv_paths"], run.arrays["uv_lrs"], p["target"], title="½(uv − 1)²:")
            figs.append((f"linear_net_uv_d{p['depth']}_w{p['width']}", fig,
                         "GD paths of ½(uv − 1)² over loss contours; bold: the stable minima u² + v² ≤ 2/η of "
                         "uv = 1 (empty beyond η = 1)."))
    return figs


register(Kind(
    name="linear_net.threshold", schema=LINEAR_NET_SCHEMA, run=_linear_net_run,
    measures={"empirical_threshold": _empirical_threshold, "fraction_beyond_threshold": _fraction_beyond,
              "fraction_well_below": _fraction_well_below, "max_sharpness_ratio": _max_ratio,
              "log10_min_abs_det": _log10_min_det,
              "inf_sharpness_numerical": _scalar("inf_sharpness_numerical", min)},
    predictions={"threshold": _threshold, "inf_sharpness_closed_form": _inf_closed},
    figures=_linear_net_figures, chunk=4,
    doc="Deep linear nets: convergence fraction over step sizes vs the threshold 2 / inf λ_max."))
