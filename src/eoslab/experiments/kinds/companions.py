"""The companion papers: the minimalist two-layer network (Liu et al. 2025) and deep linear
networks at large step sizes (Crăciun & Ghoshdastidar 2024).

The reproduction kinds ``two_layer.phases`` and ``linear_net.threshold``: configs → the library's
:func:`eoslab.theory.two_layer.simulate_two_layer` and :func:`eoslab.theory.linear_net.threshold_comparison`
(the same runners as ``eoslab two-layer`` and ``eoslab linear-net``) → stored arrays, measures, figures.
"""

from __future__ import annotations

import jax
import numpy as np

from eoslab.dynamics import convergence
from eoslab.errors import MeasureError, each, nonempty, nonnegative_int, positive, positive_int
from eoslab.experiments import Field, Kind, Measurement, register
from eoslab.models import linear_net, two_layer
from eoslab.theory import linear_net as ln_theory
from eoslab.theory import two_layer as tl_theory


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
        r = tl_theory.simulate_two_layer(p["lam1"], p["lam2"], p["lr"], p["steps"],
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
        # the problem's own θ₀ is not used (only its shapes): the initialisations come from the seed
        prob = linear_net.identity_problem(jax.random.PRNGKey(p["seed"]), p["depth"], p["width"], p["loss"],
                                           p["target"])
        r = ln_theory.threshold_comparison(prob, p["lr_grid"], p["inits"], p["steps"], p["init_scale"], p["seed"],
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
            res["uv_lrs"] = convergence.path_lrs(r["lr"], r["threshold"])
            res["uv_paths"] = convergence.uv_paths(prob, res["uv_lrs"], seed=p["seed"])
        if p["numerical_inf"]:
            res["inf_sharpness_numerical"] = np.float64(
                ln_theory.inf_sharpness_numerical(prob, jax.random.PRNGKey(p["seed"]), restarts=2,
                                                  temperatures=(1e-2, 1e-4))[0])
        out.append(res)
    return out


def _single_run(runs):
    if len(runs) != 1:
        raise MeasureError(f"this measure needs exactly one run (use `where`), got {len(runs)}")
    return runs[0]


def _grid_step(run):
    lr = run.arrays["lr"]
    return float(np.max(np.diff(lr))) if lr.size > 1 else float("nan")


def _empirical_threshold(runs):
    """Midpoint between the largest η with a converging run and the next grid point (± half a step)."""
    run = _single_run(runs)
    lr, frac = run.arrays["lr"], run.arrays["converged_fraction"]
    pos = np.flatnonzero(frac > 0)
    if pos.size == 0 or pos[-1] + 1 >= lr.size:
        raise MeasureError("the convergence fraction does not drop to 0 inside the grid")
    k = pos[-1]
    return Measurement(0.5 * (lr[k] + lr[k + 1]), 0.5 * (lr[k + 1] - lr[k]))


def _fraction_beyond(runs):
    run = _single_run(runs)
    lr, frac = run.arrays["lr"], run.arrays["converged_fraction"]
    beyond = lr > float(run.scalars()["threshold"])
    if not beyond.any():
        raise MeasureError("no step size beyond the threshold in the grid")
    return Measurement(float(frac[beyond].max()), 0.0, note=f"{int(beyond.sum())} step sizes > threshold")


def _fraction_well_below(runs):
    run = _single_run(runs)
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
    return float(_single_run(runs).scalars()["threshold"])


def _inf_closed(runs):
    return float(_single_run(runs).scalars()["inf_sharpness"])


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
