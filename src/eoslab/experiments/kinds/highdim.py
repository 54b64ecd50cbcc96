"""Kinds for high-dimensional random second-order models (docs/theorem2.md).

* ``second_order.theorem2``: Monte Carlo of (λ, λ̇, λ̈) of the top NTK eigenvalue at random
  initialisation (exact perturbation-theory derivatives); measures E[λ̈]/(σ_z² E[λ]) (the
  theorem: → 1), its difference from the exact finite-size expectation, and E[λ̇] (→ 0).
* ``second_order.highdim_eos``: GD on one random model per (σ_z, seed) for a batch of step
  sizes (the batched output-space stepper); measures the outcome (EoS fraction), ηλ/2 after the
  onset, and the timing of the non-linear contribution.
"""

from __future__ import annotations

import jax
import numpy as np

from eoslab import progress
from eoslab.errors import MeasureError, integer, positive
from eoslab.experiments import Field, Kind, Measurement, register


# The random-model fields shared by both kinds' [model] section.
_RANDOM_MODEL = {
    "name": Field(str, "second_order", choices=("second_order",), doc="random second-order model"),
    "D": Field(int, doc="datapoints", check=integer(2), static=True),
    "P": Field(int, doc="parameters", check=integer(1), static=True),
    "sigma_z": Field(float, 1.0, doc="std of the initial residuals", check=positive),
}


# ---- second_order.theorem2 -------------------------------------------------------------------
T2_SCHEMA = {
    "model": {
        **_RANDOM_MODEL,
        "sigma_j": Field(float, 1.0, doc="std of the Jacobian entries", check=positive),
    },
    "montecarlo": {"samples": Field(int, 400, doc="random initialisations", check=integer(10), static=True)},
}


def run_theorem2(points: list[dict]) -> list[dict]:
    """One ``theorem2.sample_moments`` call per point: each is already a ``lax.map`` over samples
    (σ's are compile-time constants of the sampler, so points are not ``vmap``-ped together)."""
    from eoslab.theory import theorem2

    out = []
    for p in points:
        m = theorem2.sample_moments(jax.random.PRNGKey(p["seed"]), p["D"], p["P"], p["sigma_z"],
                                    p["sigma_j"], 1.0, p["samples"])
        s = theorem2.summarize(m, p["D"], p["P"], p["sigma_z"])
        out.append({"lam": np.asarray(m.lam), "lam_dot": np.asarray(m.lam_dot), "lam_ddot": np.asarray(m.lam_ddot),
                    "cond_lam_ddot": np.asarray(m.cond_lam_ddot),
                    **{k: np.float64(v) for k, v in s.items() if k != "samples"}})
    return out


def _single(runs):
    if len(runs) != 1:
        raise MeasureError(f"select exactly one run with `where` (got {len(runs)})")
    s = runs[0].scalars()
    return s, runs[0].params["sigma_z"] ** 2


def ratio_over_sigma2(runs) -> Measurement:
    """E[λ̈]/(σ_z² E[λ]) (Theorem 2: → 1 as D, P → ∞), delta-method standard error."""
    s, s2 = _single(runs)
    return Measurement(s["ratio"] / s2, s["ratio_stderr"] / s2)


def finite_size_over_sigma2(runs) -> Measurement:
    """The exact finite-D, P expectation (2σ_q²σ_z²/n²)E[F]/E[λ] over σ_z² (estimated over J)."""
    s, s2 = _single(runs)
    return Measurement(s["finite_size_ratio"] / s2, s["finite_size_ratio_stderr"] / s2)


def residual_over_sigma2(runs) -> Measurement:
    """(MC ratio − exact finite-size ratio)/σ_z² on the same draws of J (→ 0 exactly)."""
    s, s2 = _single(runs)
    return Measurement(s["residual"] / s2, s["residual_stderr"] / s2)


def mean_lambda_dot_scaled(runs) -> Measurement:
    """E[λ̇]/E[λ] (Theorem 2: 0), with its standard error."""
    s, _ = _single(runs)
    return Measurement(s["mean_lambda_dot"] / s["mean_lambda"], s["mean_lambda_dot_stderr"] / s["mean_lambda"])


def theorem2_figures(results):
    from eoslab.plots.highdim import plot_theorem2_scaling_figure

    rows = [{"D": r.params["D"], "P": r.params["P"], "D_over_P": r.params["D"] / r.params["P"],
             "sigma_z": r.params["sigma_z"], **r.scalars()} for r in results.runs]
    return [("theorem2_scaling", plot_theorem2_scaling_figure(rows),
             "E[λ̈]/(σ_z² E[λ]) at random initialisation against D for two ratios D/P and two σ_z "
             "(Monte Carlo ± 1 standard error; dashed: the exact finite-size expectation; green: the "
             "theorem's limit 1).")]


register(Kind(
    name="second_order.theorem2", schema=T2_SCHEMA, run=run_theorem2,
    measures={"ratio_over_sigma2": ratio_over_sigma2, "finite_size_over_sigma2": finite_size_over_sigma2,
              "residual_over_sigma2": residual_over_sigma2, "mean_lambda_dot_scaled": mean_lambda_dot_scaled},
    predictions={}, figures=theorem2_figures, chunk=1,
    doc="Theorem 2: Monte Carlo of the top NTK eigenvalue's time derivatives at random initialisation.",
    version=1))


# ---- second_order.highdim_eos ----------------------------------------------------------------
EOS_SCHEMA = {
    "model": {
        **_RANDOM_MODEL,
        "sharpening": Field(float, 0.15, doc="σ_q = sharpening·√(D/P); σ_J = √D/(√D+√P)", check=positive),
    },
    "dynamics": {
        "lrs": Field(list, doc="step sizes η, run as one batch on the same model", static=True,
                     check=lambda v: None if v and all(x > 0 for x in v) else "must be a non-empty list of numbers > 0"),
        "steps": Field(int, doc="GD steps", check=integer(10), static=True),
    },
}


def run_eos(points: list[dict]) -> list[dict]:
    """Per point (σ_z, seed): one model, all step sizes in one batched output-space run."""
    out = []
    with progress.task("random second-order models", len(points), "models") as bar:
        for p in points:
            out.append(_run_eos_point(p))
            bar.advance(1)
    return out


def _run_eos_point(p: dict) -> dict:
    from eoslab.dynamics import highdim as hd
    from eoslab.models import second_order

    sj, sq = hd.natural_scales(p["D"], p["P"], p["sharpening"])
    m = second_order.random(jax.random.PRNGKey(p["seed"]), p["D"], p["P"], p["sigma_z"], sj, sq)
    traj, _ = hd.batched_gd_output(m, list(p["lrs"]), p["steps"], record_nonlinear=True, lanczos_iters=20)
    traj = {k: np.asarray(v) for k, v in traj.items()}
    rows = hd.summarize(traj, p["lrs"])
    ev = [hd.nonlinear_events(traj["eta_ntk_half"][b], traj["nonlinear_norm"][b], traj["linear_norm"][b])
          for b in range(len(p["lrs"]))]
    res = {k: traj[k] for k in ("eta_ntk_half", "loss", "ntk_eigs", "linear_norm", "nonlinear_norm",
                                "linear_top", "nonlinear_top", "diverged")}
    for key in ("onset_ntk", "final_eta_ntk_half", "mean_eta_ntk_half_after_onset", "eta_ntk2_half", "final_loss"):
        res[key] = np.array([r[key] for r in rows], float)
    res["outcome"] = np.array([("converged", "eos", "diverged").index(r["outcome"]) for r in rows])
    for key in ("onset", "grow", "fall"):
        res[f"nonlinear_{key}"] = np.array([e[key] for e in ev])
    res["nonlinear_ok"] = np.array([e["ok"] for e in ev])
    return res


def eos_after_onset(runs) -> Measurement:
    """Mean over the runs that reached the edge (and did not diverge) of the time-averaged ηλ/2
    after the onset; uncertainty: the spread (std) across those runs."""
    vals = np.concatenate([r.arrays["mean_eta_ntk_half_after_onset"][r.arrays["outcome"] == 1] for r in runs])
    if vals.size == 0:
        raise MeasureError("no run reached the edge of stability")
    return Measurement(vals.mean(), vals.std(ddof=1) if vals.size > 1 else 0.0, note=f"{vals.size} EoS run(s)")


def edge_fraction(runs) -> Measurement:
    """Fraction of the runs (all step sizes) that reached the edge (onset ≥ 0) without diverging."""
    a = np.concatenate([(r.arrays["onset_ntk"] >= 0) & (r.arrays["outcome"] != 2) for r in runs])
    return Measurement(a.mean(), 0.0, note=f"{a.size} runs")


def nonlinear_ok_fraction(runs) -> Measurement:
    """Among runs whose top eigenvalue fell back after the onset, the fraction where the non-linear
    term was small during sharpening and grew 10× before the fall (`nonlinear_events`)."""
    ok = np.concatenate([r.arrays["nonlinear_ok"][r.arrays["nonlinear_fall"] >= 0] for r in runs])
    if ok.size == 0:
        raise MeasureError("no run's top eigenvalue fell back")
    return Measurement(ok.mean(), 0.0, note=f"{ok.size} run(s) with a fall")


def eos_figures(results):
    from eoslab.plots.highdim import phase_figure

    rows = []
    for r in results.runs:
        for b, lr in enumerate(r.params["lrs"]):
            rows.append({"lr": lr, "sigma_z": r.params["sigma_z"],
                         "outcome": ("converged", "eos", "diverged")[int(r.arrays["outcome"][b])]})
    first = results.runs[0]
    return [("highdim_phase", phase_figure(rows, first.arrays["eta_ntk_half"], first.params["lrs"]),
             "Left: outcome of GD on random second-order models against η and σ_z (one marker per seed). "
             "Right: ηλ_max/2 of the NTK for one model and each η: sharpening to the edge, then hovering at it.")]


register(Kind(
    name="second_order.highdim_eos", schema=EOS_SCHEMA, run=run_eos,
    measures={"eos_after_onset": eos_after_onset, "edge_fraction": edge_fraction,
              "nonlinear_ok_fraction": nonlinear_ok_fraction},
    predictions={}, figures=eos_figures, chunk=1,
    doc="GD on random high-dimensional second-order models: sharpening to the edge, EoS, non-linear term.",
    version=2))  # 2: the NTK Lanczos starts from spectra.lanczos.fixed_start, not a PRNGKey(0) draw
