"""Figures of the 2-D model: runs approaching the EoS limit, and theory vs simulation."""

from __future__ import annotations

import numpy as np

from eoslab.plots.style import EDGE_COLOR, PREDICTED_COLOR, figure, save


def plot_runs(traj: dict, predicted_ratio: float, path):
    """Two panels from :func:`eoslab.dynamics.quadratic2d.trajectories`: ηλ_t/2 against t (log t)
    with the edge (1) and the predicted limit, and the runs in the (θ₁, θ₂) plane over the
    contours of f = ½(θ₁² − εθ₂²) with the minimisers f = E. Saves PNG + SVG; returns paths."""
    eps, E = traj["eps"], traj["E"]
    t, th, ratio = traj["t"], traj["theta"], traj["ratio"]
    fig, (a, b) = figure(ncols=2, width=4.6, height=3.4)
    for k in range(ratio.shape[0]):
        a.plot(t + 1, ratio[k], lw=0.9, alpha=0.85)
    a.axhline(1.0, color=EDGE_COLOR, ls=":", lw=1, label="edge ηλ/2 = 1")
    a.axhline(predicted_ratio, color=PREDICTED_COLOR, ls="--", lw=1.2,
              label=f"predicted λ∞η/2 = {predicted_ratio:.5f}")
    a.set_xscale("log")
    a.set_xlabel("step t + 1")
    a.set_ylabel("η λ_t / 2 (NTK)")
    a.set_title(f"ε = {eps:g}, η = {traj['lr']:g}" + (f", E = {E:g}" if E else ""))
    a.set_ylim(0, max(1.1, float(np.nanmin([np.nanmax(ratio), 1.4]))))
    a.legend(loc="lower right")

    finite = th[np.isfinite(th).all(axis=-1)]
    lo, hi = finite.min(axis=0), finite.max(axis=0)
    pad = 0.15 * (hi - lo) + 1e-3
    g1 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 300)
    g2 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], 300)
    T1, T2 = np.meshgrid(g1, g2)
    F = 0.5 * (T1**2 - eps * T2**2)
    cs = b.contour(T1, T2, F, levels=15, cmap="Greys", linewidths=0.6)
    b.clabel(cs, fontsize=6)
    b.contour(T1, T2, F - E, levels=[0.0], colors=PREDICTED_COLOR, linewidths=1.2)
    for k in range(th.shape[0]):
        line, = b.plot(th[k, :, 0], th[k, :, 1], ".-", ms=1.5, lw=0.5, alpha=0.8)
        b.plot(th[k, 0, 0], th[k, 0, 1], "o", color=line.get_color(), ms=4)
    b.set_xlabel("θ₁")
    b.set_ylabel("θ₂")
    b.set_title("trajectories over contours of f (green: f = E)")
    return save(fig, path)


def plot_limit_comparison(rows: list[dict], path):
    """From :func:`eoslab.theory.eos2d.limit_comparison`: (2 − ηλ∞)/ε against ε for the
    simulations and each prediction, and |prediction − simulation| against ε."""
    eps = np.array([r["eps"] for r in rows])
    sim = np.array([r["sim_median"] for r in rows])
    preds = [("leading", "leading order 2 − 2ε/(4−3ε+4ε²)", ":")]
    orders = sorted(int(k[5:]) for k in rows[0] if k.startswith("order"))
    preds += [(f"order{k}", f"series through ε^{k}", "--") for k in orders]
    preds += [("exact", "exact slow manifold", "-")]
    fig, (a, b) = figure(ncols=2, width=4.6, height=3.4)
    a.plot(eps, (2 - sim) / eps, "ko", ms=4, label="simulation (median)", zorder=5)
    lo = np.array([r["sim_q05"] for r in rows])
    hi = np.array([r["sim_q95"] for r in rows])
    a.fill_between(eps, (2 - hi) / eps, (2 - lo) / eps, color="0.85", label="simulations 5–95 %")
    for key, label, ls in preds:
        v = np.array([r[key] for r in rows])
        a.plot(eps, (2 - v) / eps, ls, label=label)
        b.plot(eps, np.abs(v - sim), ls + "o", ms=3, label=label)
    a.set_xscale("log")
    a.set_xlabel("ε")
    a.set_ylabel("(2 − ηλ∞) / ε")
    a.legend(fontsize=7)
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("ε")
    b.set_ylabel("|prediction − simulation| of ηλ∞")
    b.legend(fontsize=7)
    return save(fig, path)
