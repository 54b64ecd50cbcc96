"""Report figures of the 2-D model, drawn from stored runs (:mod:`eoslab.experiments.kinds.quadratic2d`)."""

from __future__ import annotations

import matplotlib.ticker
import numpy as np

from eoslab.plots.style import EDGE_COLOR, PREDICTED_COLOR, figure, legend_below


def _label(p: dict) -> str:
    return f"ε={p['eps']:g}, θ₀=({p['theta1']:g}, {p['theta2_scaled']:g}/√ε), η={p['lr']:g}"


def _log_subset(t: np.ndarray, every_until: int = 300, n: int = 700) -> np.ndarray:
    """Indices of ``t`` to draw on a log axis: every step up to ``every_until`` (the period-2
    oscillation of the transient), then about ``n`` log-spaced steps (keeping both parities)."""
    late = np.nonzero(t >= every_until)[0]
    picks = np.unique(np.geomspace(1, max(late.size, 1), n).astype(int) - 1) if late.size else np.array([], int)
    picks = late[np.unique(np.concatenate([picks, np.minimum(picks + 1, late.size - 1)]))] if late.size else picks
    return np.concatenate([np.nonzero(t < every_until)[0], picks]).astype(int)


def sharpness_to_edge(results, predictions: dict):
    """Left: η·λ_t/2 against t (log axis) for every non-diverged run, with the edge (1).
    Right: its two-step mean (the period-2 oscillation removed) converging to the measured
    limit, with the predicted limits."""
    fig, (ax, zoom) = figure(ncols=2, width=4.4)
    runs = [r for r in results.runs if not r.scalars()["diverged"]]
    colors = ["C0", "C1", "C4", "C5", "C6", "C7"]
    lims = []
    for c, r in zip(colors * 4, runs):
        a = r.arrays
        keep = _log_subset(a["t"])
        t = a["t"][keep] + 1
        ax.plot(t, a["eta_lambda_half"][keep], color=c, lw=0.5, alpha=0.3)
        ax.plot(t, a["eta_ntk_half"][keep], color=c, lw=0.6, alpha=0.8, label=_label(r.params))
        zoom.plot(t, a["eta_ntk_half_avg2"][keep], color=c, lw=1.0, zorder=3)  # measured over theory
        measured = r.scalars()["eta_ntk_limit"] / 2
        lims.append(measured)
        zoom.axhline(measured, color=c, ls=":", lw=1.0, label=f"ε={r.params['eps']:g} measured {measured:.6f}")
        for (name, fn), ls in zip(predictions.items(), ["--", "-."]):
            pred = fn([r]) / 2
            zoom.axhline(pred, color=PREDICTED_COLOR, ls=ls, lw=0.9, label=f"ε={r.params['eps']:g} {name} {pred:.6f}")
    for axis in (ax, zoom):
        axis.axhline(1.0, color=EDGE_COLOR, lw=1.0, label="edge: λ = 2/η" if axis is ax else None)
        axis.set_xscale("log")
        axis.set_xlabel("step t + 1")
    ax.set_ylabel("η λ_max(t) / 2   (NTK; faint: Hessian)")
    ax.set_title("sharpening past the edge, then back below it")
    if lims:
        lo = min(lims) - 2 * (1 - min(lims))
        zoom.set_ylim(lo, 1 + 0.3 * (1 - lo))
    zoom.set_xlim(left=30)  # before, the transient jumps across the whole range
    zoom.set_ylabel("two-step mean of η λ_max / 2")
    zoom.set_title("the limit, just below 2/η")
    legend_below(ax, fontsize=6)      # outside the axes: the curves fill the panels
    legend_below(zoom, fontsize=6)
    return fig


def landscape(results, max_steps: int = 60):
    """Trajectories (first ``max_steps`` steps, then the rest faint) over log₁₀ L, one panel
    per ε; the minimiser lines θ₁ = ±√ε θ₂, thick where ηλ ≤ 2."""
    eps_values = results.values("eps")
    fig, axes = figure(ncols=len(eps_values), width=3.8, height=3.4)
    axes = np.atleast_1d(axes)
    for ax, eps in zip(axes, eps_values):
        runs = results.select(eps=eps)
        thetas = [r.arrays["theta"] for r in runs]
        # The frame: converged runs' first steps and every starting point (not an overflow's path).
        finite = np.concatenate([th[:max_steps] for th, r in zip(thetas, runs) if not r.scalars()["diverged"]]
                                + [th[:1] for th in thetas])
        span1 = max(1.2 * np.abs(finite[:, 0]).max(), 0.5)
        span2 = 1.15 * np.abs(finite[:, 1]).max()
        span2 = min(span2, 4.0 / np.sqrt(eps))
        g1, g2 = np.meshgrid(np.linspace(-span1, span1, 160), np.linspace(-span2, span2, 160))
        E = runs[0].params["E"]
        f = 0.5 * (g1**2 - eps * g2**2)  # eigenbasis (angle 0); the NTK is rotation invariant
        L = 0.5 * (f - E) ** 2
        cs = ax.contourf(g1, g2, np.log10(L + 1e-12), levels=24, cmap="Greys", alpha=0.55)
        cs.set_rasterized(True)  # keeps the SVG small
        fig.colorbar(cs, ax=ax, label="log₁₀ L")
        b = np.linspace(-span2, span2, 400)
        lr = runs[0].params["lr"]
        stable = eps * (1 + eps) * b**2 <= 2 / lr
        for sgn in (1, -1):
            ax.plot(sgn * np.sqrt(eps) * b, b, color="k", lw=0.6)
            ax.plot(np.where(stable, sgn * np.sqrt(eps) * b, np.nan), b, color="k", lw=2.2)
        for c, r, th in zip(["C0", "C1", "C3", "C4"] * 4, runs, thetas):
            ok = np.all(np.isfinite(th), axis=1)
            th = th[ok]
            div = r.scalars()["diverged"]
            lab = f"θ₀=({r.params['theta1']:g}, {r.params['theta2_scaled']:g}/√ε)" + (" diverged" if div else "")
            ax.plot(th[:max_steps, 0], th[:max_steps, 1], "-o", color=c, ms=1.8, lw=0.6, label=lab)
            ax.plot(th[max_steps:, 0], th[max_steps:, 1], color=c, lw=0.4, alpha=0.4)
            ax.plot(th[-1:, 0], th[-1:, 1], "*", color=c, ms=8)
        ax.set_xlim(-span1, span1)
        ax.set_ylim(-span2, span2)
        ax.set_xlabel("θ₁")
        ax.set_ylabel("θ₂")
        ax.set_title(f"ε = {eps:g}, η = {lr:g}")
        ax.legend(fontsize=6, loc="lower left")
    return fig


def phase_diagram(results):
    """Left: an image over (initial √ε·θ₂, η) whose colour mixes the fractions at EoS (green),
    below (blue) and diverged (red); right: the fractions against η."""
    runs = sorted(results.runs, key=lambda r: r.params["lr"])
    lrs = np.array([r.params["lr"] for r in runs])
    p0 = runs[0].params
    nb, m = p0["n_b"], p0["inits_per_b"]
    b = np.linspace(p0["b_min"], p0["b_max"], nb)
    img = np.zeros((len(runs), nb, 3))
    fracs = np.zeros((len(runs), 3))
    for i, r in enumerate(runs):
        cls = r.arrays["phase"].reshape(nb, m)
        shares = np.stack([(cls == k).mean(axis=1) for k in (1, 0, 2)], axis=1)  # EoS, below, diverged
        colours = np.array([[0.17, 0.63, 0.17], [0.12, 0.47, 0.71], [0.84, 0.15, 0.16]])
        img[i] = shares @ colours + (1 - shares.sum(1, keepdims=True))
        fracs[i] = [(cls == k).mean() for k in (1, 0, 2)]
    fig, (ax, ax2) = figure(ncols=2, width=4.2)
    y = np.arange(len(runs))
    ax.imshow(img, origin="lower", aspect="auto", interpolation="nearest",
              extent=(b[0] - (b[1] - b[0]) / 2, b[-1] + (b[1] - b[0]) / 2, -0.5, len(runs) - 0.5))
    ax.set_yticks(y, [f"{v:.3g}" for v in lrs])
    ax.set_xlabel("initial √ε·θ₂ (θ₁ ~ U(±%g))" % p0["theta1_max"])
    ax.set_ylabel("step size η")
    ax.set_title(f"phase diagram, ε = {p0['eps']:g} ({nb * m} inits per η)")
    ax.grid(False)
    for k, (name, c) in enumerate([("at EoS", "C2"), ("below EoS", "C0"), ("diverged", "C3")]):
        ax2.plot(lrs, fracs[:, k], "-o", color=c, ms=3, label=name)
    ax2.set_xscale("log")
    ticks = lrs[:: max(1, len(lrs) // 5)]
    ax2.set_xticks(ticks, [f"{v:.3g}" for v in ticks])
    ax2.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.set_xlabel("step size η")
    ax2.set_ylabel("fraction of initialisations")
    ax2.set_ylim(-0.02, 1.02)
    ax2.legend()
    return fig
