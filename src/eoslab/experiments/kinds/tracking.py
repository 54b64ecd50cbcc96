"""Warm-started eigenvalue tracking along GD, checked against dense ``jax.hessian`` + ``eigh``.

Kind ``tracking.accuracy``: a small float64 tanh MLP trained with full-batch GD; at every
step the top-k Hessian eigenvalues are tracked by :func:`eoslab.spectra.track` (warm-started
from the previous step) and compared with the dense Hessian's spectrum. One run per point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from eoslab import Problem
from eoslab.dynamics import optim
from eoslab.dynamics.stepper import init_state, make_step, scan
from eoslab.errors import positive, positive_int
from eoslab.experiments import Field, Kind, Measurement, register
from eoslab.spectra import hvp, track, track_init
from eoslab.spectra.dense import hessian_matrix

SCHEMA = {
    "model": {
        "width": Field(int, 12, doc="hidden units of the 2-hidden-layer tanh MLP", static=True, check=positive_int),
    },
    "data": {
        "n": Field(int, 40, doc="Gaussian examples", static=True, check=positive_int),
        "d": Field(int, 4, doc="input dimension", static=True, check=positive_int),
        "target_scale": Field(float, 2.0, doc="std of the Gaussian random targets", check=positive),
    },
    "dynamics": {
        "lr": Field(float, 0.5, doc="step size η", check=positive),
        "steps": Field(int, 60, doc="GD steps", static=True, check=positive_int),
        "k": Field(int, 2, doc="tracked top eigenvalues", static=True, check=positive_int),
        "tol": Field(float, 1e-3, doc="tracker's relative accuracy", check=positive),
    },
}


def _apply(p, x):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    h = jnp.tanh(h @ p["w2"] + p["b2"])
    return (h @ p["w3"])[:, 0]


def simulate(point: dict) -> dict:
    """One run: tracked and dense Hessian spectra at every GD step (float64)."""
    n, d, w, k = point["n"], point["d"], point["width"], point["k"]
    ks = jax.random.split(jax.random.PRNGKey(point["seed"]), 5)
    x = jax.random.normal(ks[0], (n, d))
    y = point["target_scale"] * jax.random.normal(ks[1], (n,))
    params = {"w1": jax.random.normal(ks[2], (d, w)) / d**0.5, "b1": jnp.zeros(w),
              "w2": jax.random.normal(ks[3], (w, w)) / w**0.5, "b2": jnp.zeros(w),
              "w3": jax.random.normal(ks[4], (w, 1)) / w**0.5}
    problem = Problem.from_model(_apply, params, x, y)
    flat0 = ravel_pytree(params)[0]
    lr, tol = point["lr"], point["tol"]

    def observe(ctx):  # tracked (warm-started) and dense spectra of θ_t
        st, r = track(hvp(problem, ctx.params)[0], ctx.aux, tol=tol)
        eigs = jnp.linalg.eigvalsh(hessian_matrix(problem, ctx.params))[::-1]
        return st, {"tracked": r.values, "residuals": r.residuals, "products": r.n_products,
                    "entered": r.entered, "converged": r.converged, "spectrum": eigs}

    opt = optim.gd(lr)
    step = make_step(problem.loss_fn, opt, observe=observe, stochastic=False)
    state = init_state(params, opt, aux=track_init(flat0.size, k, jax.random.fold_in(ks[0], 7), flat0.dtype))
    _, rec = jax.jit(lambda s: scan(step, s, point["steps"]))(state)
    out = {key: np.asarray(rec[key]) for key in ("tracked", "residuals", "products", "entered", "converged", "spectrum",
                                                    "edge")}
    out["eta_lambda_half"] = lr * out["spectrum"][:, 0] / 2
    return out


def run(points: list[dict]) -> list[dict]:
    return [simulate(p) for p in points]


def max_rel_error(runs) -> Measurement:
    """max over runs, steps and the top k of |tracked − dense| / |dense|."""
    errs = [np.max(np.abs(r.arrays["tracked"] - r.arrays["spectrum"][:, :r.arrays["tracked"].shape[1]])
                   / np.abs(r.arrays["spectrum"][:, :r.arrays["tracked"].shape[1]])) for r in runs]
    return Measurement(value=float(max(errs)), uncertainty=0.0)


def bound_violations(runs) -> Measurement:
    """Number of tracked values farther from the dense spectrum than their residual norm."""
    bad = 0
    for r in runs:
        t, res, spec = r.arrays["tracked"], r.arrays["residuals"], r.arrays["spectrum"]
        dist = np.min(np.abs(t[:, :, None] - spec[:, None, :]), axis=2)
        bad += int(np.sum(dist > res * (1 + 1e-8) + 1e-12 * np.abs(t)))
    return Measurement(value=float(bad), uncertainty=0.0)


def warm_cost_ratio(runs) -> Measurement:
    """Mean products per warm step (steps ≥ 1) over the products of the cold first step."""
    ratios = [np.mean(r.arrays["products"][1:]) / r.arrays["products"][0] for r in runs]
    return Measurement(value=float(np.mean(ratios)), uncertainty=0.0)


def figures(results):
    from eoslab.plots.style import figure

    fig, ax = figure()
    for r in results.runs[:1]:
        t, res, spec = r.arrays["tracked"], r.arrays["residuals"], r.arrays["spectrum"]
        steps = np.arange(t.shape[0])
        for i in range(t.shape[1]):
            ax.plot(steps, spec[:, i], color=f"C{i}", lw=2, alpha=0.4, label=f"dense λ{i + 1}")
            ax.errorbar(steps, t[:, i], yerr=res[:, i], fmt=".", color=f"C{i}", ms=3, label=f"tracked λ{i + 1} ± ‖r‖")
        lr = float(r.params["lr"])
        if np.nanmax(spec[:, 0]) >= 0.5 * 2 / lr:  # the edge is drawn only when the run comes near it
            ax.axhline(2 / lr, color="#d62728", ls="--", lw=1.0, label=f"edge 2/η = {2 / lr:.4g}")
        ax.set_title(f"GD, η = {lr:g} (edge 2/η = {2 / lr:.4g})", fontsize=9)
        ax.set_xlabel("GD step")
        ax.set_ylabel("Hessian eigenvalue")
        ax.legend(fontsize=7, loc="upper left")
    return [("tracking_accuracy", fig, "Warm-started tracked top Hessian eigenvalues (dots, error bars = residual "
             "norms, a rigorous bound) against the dense jax.hessian + eigh spectrum (lines).")]


register(Kind(name="tracking.accuracy", schema=SCHEMA, run=run,
              measures={"max_rel_error": max_rel_error, "bound_violations": bound_violations,
                        "warm_cost_ratio": warm_cost_ratio},
              predictions={}, figures=figures, chunk=1,
              doc="warm-started top-k Hessian tracking along GD vs dense eigh", version=3))
