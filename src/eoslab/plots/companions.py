"""Figures for the companion models: the two-layer network and deep linear networks."""

from __future__ import annotations

import numpy as np

from eoslab.plots.style import EDGE_COLOR, PREDICTED_COLOR, figure, legend_below

PHASE_COLORS = {"PS": "#9ecae1", "EoS": "#fdae6b", "convergence": "#a1d99b"}


def _phase_bounds(sharpness, loss, lr):
    from eoslab.theory.two_layer import phases

    ph = phases(sharpness, loss, sharpness, lr)   # boundaries only depend on S and L
    T = len(sharpness)
    eos, conv = ph["eos_start"], ph["convergence_start"]
    end_ps = eos if eos >= 0 else (conv if conv >= 0 else T)
    spans = [("PS", 0, end_ps)]
    if eos >= 0:
        spans.append(("EoS", eos, conv if conv >= 0 else T))
    if conv >= 0:
        spans.append(("convergence", max(conv, end_ps), T))
    return [(n, a, b) for n, a, b in spans if b > a]


def shade_phases(ax, spans, labels=True):
    for name, a, b in spans:
        ax.axvspan(a, b, color=PHASE_COLORS[name], alpha=0.25, lw=0, label=name if labels else None)


def two_layer_panels(traj, lr, lam1, lam2, title=""):
    """Four panels from a two-layer trajectory dict (keys ``sharpness``, ``gfs_sharpness``, ``loss``,
    ``params`` (T, 3), ``stable_set_distance``): sharpness and GFS sharpness with 2/η; loss;
    the (α, β₁) plane over loss contours (β₂ at its final value); distance to the stable set."""
    S, G, L = (np.asarray(traj[k]) for k in ("sharpness", "gfs_sharpness", "loss"))
    P = np.asarray(traj["params"])
    t = np.arange(S.size)
    spans = _phase_bounds(S, L, lr)
    fig, axes = figure(2, 2, width=4.4, height=3.1)
    ax = axes[0, 0]
    shade_phases(ax, spans)
    ax.plot(t, S, label="sharpness S(θ_t)")
    ax.plot(t, G, ls="--", color=PREDICTED_COLOR, label="GFS sharpness")
    ax.axhline(2 / lr, color=EDGE_COLOR, lw=1, label="2/η")
    ax.set(xlabel="step", ylabel="λ_max(∇²L)", title=title)
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    shade_phases(ax, spans, labels=False)
    ax.semilogy(t, L)
    ax.set(xlabel="step", ylabel="loss")
    ax = axes[1, 0]
    ok = np.all(np.isfinite(P), axis=1)
    a_max = 1.3 * max(np.max(np.abs(P[ok, 0])), np.sqrt(2 / (lr * lam1)))
    b_max = 1.3 * max(np.max(np.abs(P[ok, 1])), 1e-3)
    A, B = np.meshgrid(np.linspace(-0.05 * a_max, a_max, 200), np.linspace(-b_max, b_max, 200))
    b2 = P[ok][-1, 2]
    Lgrid = 0.5 * lam1 * (A * B) ** 2 + 0.5 * lam2 * (A * b2 - 1) ** 2
    ax.contour(A, B, np.log10(Lgrid + 1e-12), levels=15, cmap="Greys", linewidths=0.6)
    ax.plot(P[ok, 0], P[ok, 1], lw=0.6, marker=".", ms=1.5)
    ax.axvline(np.sqrt(2 / (lr * lam1)), color=EDGE_COLOR, lw=1, label="λ₁α² = 2/η")
    ax.plot(P[ok][0, 0], P[ok][0, 1], "o", ms=4, color="k", label="θ₀")
    ax.set(xlabel="α", ylabel="β₁", title=f"log₁₀ L contours at β₂ = {b2:.3g}")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    shade_phases(ax, spans, labels=False)
    d = np.asarray(traj["stable_set_distance"])
    ax.semilogy(t, np.where(d > 0, d, np.nan))
    ax.set(xlabel="step", ylabel="distance to stable set")
    return fig


def convergence_fraction(result, threshold, title=""):
    """Fraction of initialisations converging to a critical point vs η (``result`` has ``lr``,
    ``converged_fraction``, ``max_final_sharpness_ratio``), with the threshold η* as a dashed line."""
    lr = np.asarray(result["lr"], np.float64)
    frac = np.asarray(result["converged_fraction"], np.float64)
    ratio = np.array([np.nan if r is None else r for r in result["max_final_sharpness_ratio"]], np.float64)
    fig, ax = figure()
    ax.plot(lr, frac, "o-", ms=3, zorder=3, label="converged fraction (measured)")
    ax.plot(lr, ratio, "s", ms=3, color=PREDICTED_COLOR, zorder=3, label="max η·λ_max(θ_N)/2 (converged)")
    ax.axvline(threshold, color=EDGE_COLOR, ls="--", lw=1, zorder=1, label=f"predicted threshold 2 / inf λ_max = {threshold:.4g}")
    ax.set(xlabel="step size η", ylabel="fraction / ratio", ylim=(-0.05, 1.15), title=title)
    legend_below(ax, ncol=1)
    return fig


def uv_trajectories(trajs, lrs, target=1.0, title=""):
    """GD trajectories of ½(uv − target)² in the (u, v) plane over loss contours: ``trajs`` is a
    list (one per η in ``lrs``) of (T, 2) arrays; the stable arc u² + v² ≤ 2/η of uv = target is bold."""
    fig, axes = figure(len(lrs), 1, width=3.4, height=3.2)
    axes = np.atleast_1d(axes)
    g = np.linspace(-2.5, 2.5, 300)
    U, V = np.meshgrid(g, g)
    Lg = 0.5 * (U * V - target) ** 2
    for ax, tr, lr in zip(axes, trajs, lrs):
        ax.contour(U, V, np.log10(Lg + 1e-6), levels=14, cmap="Greys", linewidths=0.5)
        u = np.linspace(0.05, 2.5, 400)
        for s in (1, -1):
            ax.plot(s * u, s * target / u, color="k", lw=0.6)
            stable = u**2 + (target / u) ** 2 <= 2 / lr
            ax.plot(s * u[stable], s * target / u[stable], color=PREDICTED_COLOR, lw=3, label="stable minima" if s == 1 else None)
        for path in np.asarray(tr):
            ok = np.all(np.isfinite(path), axis=1) & np.all(np.abs(path) < 3, axis=1)
            ax.plot(path[ok, 0], path[ok, 1], lw=0.5, marker=".", ms=1)
        ax.set(xlim=(-2.5, 2.5), ylim=(-2.5, 2.5), xlabel="u", ylabel="v", title=f"{title} η = {lr:g}", aspect="equal")
        legend_below(ax, ncol=1)
    return fig
