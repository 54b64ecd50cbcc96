"""Figures for high-dimensional second-order models: Theorem 2 scaling, the (η, σ_z) phase
plot of a sweep, and the non-linear contribution along a trajectory."""

from __future__ import annotations

import numpy as np

from eoslab.plots.style import EDGE_COLOR, PREDICTED_COLOR, figure, save

OUTCOME_STYLE = {"converged": ("#1f77b4", "o"), "eos": ("#ff7f0e", "s"), "diverged": ("#7f7f7f", "x")}


def plot_theorem2_scaling(rows: list[dict], path):
    """Save :func:`plot_theorem2_scaling_figure` as ``path`` (.png, .svg)."""
    return save(plot_theorem2_scaling_figure(rows), path)


def plot_theorem2_scaling_figure(rows: list[dict]):
    """E[λ̈]/E[λ]/σ_z² against D (log) for each (D/P, σ_z), Monte Carlo ± 1 stderr, with the
    exact finite-size expectation (dashed) and the theorem's limit 1. ``rows`` from
    :func:`eoslab.theory.theorem2.scaling_table`. Returns the figure."""
    fig, ax = figure(width=5.0, height=3.6)
    series = sorted({(r["D_over_P"], r["sigma_z"]) for r in rows})
    for i, (dp, sz) in enumerate(series):
        rs = sorted((r for r in rows if r["D_over_P"] == dp and r["sigma_z"] == sz), key=lambda r: r["D"])
        D = np.array([r["D"] for r in rs], float) * (1 + 0.03 * (i - len(series) / 2))
        s2 = sz**2
        y = np.array([r["ratio"] for r in rs]) / s2
        e = np.array([r["ratio_stderr"] for r in rs]) / s2
        fs = np.array([r["finite_size_ratio"] for r in rs]) / s2
        line = ax.errorbar(D, y, yerr=e, marker="o", ms=3, capsize=2, label=f"D/P={dp:g}, σ_z={sz:g}")
        ax.plot(D, fs, ls="--", color=line[0].get_color(), lw=0.8)
    ax.axhline(1.0, color=PREDICTED_COLOR, lw=1.5, label="Theorem 2 limit")
    ax.set_xscale("log")
    ax.set_xlabel("D (datapoints)")
    ax.set_ylabel("E[λ̈] / (σ_z² E[λ])")
    ax.set_title("Sharpening at initialisation (dashed: exact at finite D, P)")
    ax.legend(fontsize=7)
    return fig


def plot_sweep(rows: list[dict], traj_eta_half, lrs, path):
    """Save :func:`phase_figure` as ``path`` (.png, .svg)."""
    return save(phase_figure(rows, traj_eta_half, lrs), path)


def phase_figure(rows: list[dict], traj_eta_half, lrs):
    """Left: the outcome (converged / EoS / diverged) of each run in the (η, σ_z) plane, one
    marker per seed (jittered). Right: ηλ_max/2 (NTK) against step for one seed, each η.
    ``rows`` from :func:`eoslab.dynamics.highdim.summarize` with a ``sigma_z`` key;
    ``traj_eta_half`` (B, steps) for the right panel."""
    fig, (ax, ax2) = figure(ncols=2, width=4.4, height=3.4)
    rng = np.random.default_rng(0)
    seen = set()
    for r in rows:
        c, mk = OUTCOME_STYLE[r["outcome"]]
        y = r["sigma_z"] * (1 + 0.04 * rng.standard_normal())
        ax.scatter(r["lr"], y, color=c, marker=mk, s=22, label=None if r["outcome"] in seen else r["outcome"])
        seen.add(r["outcome"])
    ax.set_xscale("log")
    ax.set_xlabel("step size η")
    ax.set_ylabel("σ_z (residual scale)")
    ax.set_title("Outcome of GD on random second-order models")
    ax.legend(fontsize=7)
    x = np.asarray(traj_eta_half)
    for b in range(x.shape[0]):
        ax2.plot(x[b], lw=0.8, label=f"η={float(lrs[b]):.3g}")
    ax2.axhline(1.0, color=EDGE_COLOR, ls="--", lw=1, label="edge (ηλ = 2)")
    ax2.set_ylim(0, 1.6)
    ax2.set_xlabel("step")
    ax2.set_ylabel("ηλ_max(NTK)/2")
    ax2.legend(fontsize=6, ncol=2)
    return fig


def plot_nonlinear(traj: dict, lr: float, events: dict, path, events_top: dict | None = None):
    """Top: ηλ/2 for the two largest NTK eigenvalues, with the onset, growth and fall events.
    Bottom: the non-linear contribution ‖½η²Q(g,g)‖/‖ηJg‖ (RMS over the period-2 window;
    what :func:`eoslab.dynamics.highdim.nonlinear_events` analyses) and the same ratio for
    the projections on the top NTK eigenvector (thin). ``traj`` is ONE run (1-D arrays)."""
    from eoslab.dynamics.highdim import smoothed_ratio

    fig, (a1, a2) = figure(nrows=2, width=6.0, height=2.6, sharex=True)
    ev = np.asarray(traj["ntk_eigs"])
    a1.plot(lr * ev[:, 0] / 2, label="ηλ₁/2")
    a1.plot(lr * ev[:, 1] / 2, label="ηλ₂/2", lw=0.8)
    a1.axhline(1.0, color=EDGE_COLOR, ls="--", lw=1)
    a2.semilogy(smoothed_ratio(traj["nonlinear_norm"], traj["linear_norm"], 2), label="‖½η²Q(g,g)‖ / ‖ηJg‖")
    a2.semilogy(smoothed_ratio(traj["nonlinear_top"], traj["linear_top"], 2), lw=0.6, alpha=0.7,
                label="projections on top eigenvector")
    for name, ls in (("onset", ":"), ("grow", "-."), ("fall", "--")):
        if events.get(name, -1) >= 0:
            for a in (a1, a2):
                a.axvline(events[name], color="k", ls=ls, lw=0.8)
            a1.annotate(name, (events[name], 0.05), xycoords=("data", "axes fraction"), fontsize=7, rotation=90)
    a1.set_ylabel("ηλ/2 (NTK)")
    a1.legend(fontsize=7)
    a1.set_title(f"Non-linear contribution along a trajectory (η = {lr:g})")
    a2.set_ylabel("non-linear / linear")
    a2.set_xlabel("step")
    a2.legend(fontsize=7)
    return save(fig, path)
