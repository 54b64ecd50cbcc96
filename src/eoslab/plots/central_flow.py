"""Figure of a central-flow run next to discrete GD and gradient flow (four panels)."""

from __future__ import annotations

import numpy as np

from eoslab.plots.style import EDGE_COLOR, PREDICTED_COLOR, figure, legend_below, save

GD_COLOR, GF_COLOR, CF_COLOR, SS_COLOR = "#1f77b4", "#7f7f7f", PREDICTED_COLOR, "#9467bd"


def plot_flow(out: dict, lr: float, path, *, window: int = 20, title: str = "") -> list:
    """Loss (GD raw and smoothed, the central flow's L and predicted time-averaged loss,
    gradient flow), sharpness vs 2/η, tr Σ, and ‖w_GD − w_CF‖, ‖w_GD − w_GF‖ over GD steps.
    ``out`` is :func:`eoslab.dynamics.central_flow.run`'s result. Returns the written paths."""
    fig, axes = figure(ncols=4, width=3.6, height=3.5)
    flow_axes(axes, out, lr, window=window)
    if title:
        fig.suptitle(title, fontsize=9)
    return save(fig, path)


#: Names of the curves for GD (:func:`flow_axes`' default) and for RMSProp's central flow.
GD_NAMES = {"opt": "GD", "stable": "gradient flow", "SF": "GF", "matrix": "Hessian", "avg": "L + trΣ/η"}
RMSPROP_NAMES = {"opt": "RMSProp", "stable": "stable flow", "SF": "SF", "matrix": "P⁻¹H", "avg": "L + ½⟨H, Σ⟩"}


def flow_axes(axes, out: dict, lr: float, *, window: int = 20, names: dict | None = None) -> None:
    """Draw :func:`plot_flow`'s four panels on ``axes`` (4,); legends under the panels (the
    curves fill them), η named with the edge. ``names``: :data:`GD_NAMES` (default) or
    :data:`RMSPROP_NAMES` (``gd_*`` arrays then hold the discrete RMSProp run)."""
    from eoslab.dynamics.central_flow import smooth

    nm = GD_NAMES if names is None else names
    opt = nm["opt"]

    t = np.arange(out["loss"].shape[0])
    ax = axes[0]
    if "gd_loss" in out:
        ax.semilogy(t, out["gd_loss"], color=GD_COLOR, alpha=0.3, lw=0.7, label=opt)
        ax.semilogy(t, smooth(out["gd_loss"], window), color=GD_COLOR, lw=1.2, label=f"{opt}, {window}-step mean")
    if "gf_loss" in out:
        ax.semilogy(t, out["gf_loss"], color=GF_COLOR, ls=":", label=nm["stable"])
    ax.semilogy(t, out["loss"], color=CF_COLOR, ls="--", lw=1.0, label="central flow L(w)")
    ax.semilogy(t, out["avg_loss"], color=CF_COLOR, lw=1.4, label=f"CF prediction {nm['avg']}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    legend_below(ax, ncol=1, fontsize=7)
    ax = axes[1]
    if "gd_sharpness" in out:
        ax.plot(t, out["gd_sharpness"], color=GD_COLOR, lw=0.8, label=f"{opt} λ₁")
    eigs = np.asarray(out["eigs"])
    for i in range(eigs.shape[1]):
        ax.plot(t, eigs[:, i], color=CF_COLOR, lw=1.2 if i == 0 else 0.8, alpha=1.0 if i == 0 else 0.6,
                label="central flow λ₁…λₖ" if i == 0 else None)
    ax.axhline(2.0 / lr, color=EDGE_COLOR, ls="--", lw=1.0, label=f"edge 2/η = {2.0 / lr:.4g} (η = {lr:.4g})")
    ax.set_xlabel("step")
    ax.set_ylabel(f"{nm['matrix']} eigenvalues")
    legend_below(ax, ncol=1, fontsize=7)
    ss = None
    if "gd_x" in out and "alpha" in out and np.any(np.asarray(out["n_active"]) > 0):
        from eoslab.dynamics.central_flow import self_stabilization

        ss = self_stabilization(out, lr)
        lo, hi = axes[1].get_ylim()
        axes[1].plot(t, np.clip(2.0 / lr + ss["y"], -1e300, 1e300), color=SS_COLOR, lw=0.8, alpha=0.8,
                     label="self-stabilization 2/η + y")
        axes[1].set_ylim(lo, hi)
        legend_below(axes[1], ncol=1, fontsize=7)
    ax = axes[2]
    if "gd_x" in out:
        ax.plot(t, np.asarray(out["gd_x"]) ** 2, color=GD_COLOR, lw=0.6, alpha=0.5, label="GD x² (along u)")
        ax.plot(t, smooth(np.asarray(out["gd_x"]) ** 2, window), color=GD_COLOR, lw=1.2,
                label=f"GD x², {window}-step mean")
    ax.plot(t, out["trace_sigma"], color=CF_COLOR, lw=1.4, label="central flow tr Σ (σ² for k = 1)")
    ax.set_yscale("log")
    # Scale to the central flow and GD's smoothed x² (the undamped map's cycle can span 100 decades).
    ref = [np.asarray(out["trace_sigma"], float)]
    if "gd_x" in out:
        ref.append(smooth(np.asarray(out["gd_x"], float) ** 2, window))
    ref = np.concatenate(ref)
    ref = ref[np.isfinite(ref) & (ref > 0)]
    if ss is not None:
        # The undamped map's cycle can span 100 decades: draw it only inside the panel's range.
        with np.errstate(over="ignore", invalid="ignore"):
            x2 = ss["x"] ** 2
        top = ref.max() * 10 if ref.size else np.inf
        bottom = ref.min() / 10 if ref.size else 0.0
        ax.plot(t, np.where((x2 <= top) & (x2 >= bottom), x2, np.nan), color=SS_COLOR, lw=0.8, alpha=0.8,
                label="self-stabilization x²")
        legend_below(ax, ncol=1, fontsize=7)
    if ref.size:
        ax.set_ylim(ref.min() / 10, ref.max() * 10)
    ax.set_xlabel("step")
    ax.set_ylabel("oscillation variance")
    legend_below(ax, ncol=1, fontsize=7)
    ax = axes[3]
    if "dist_gd_cf" in out:
        ax.plot(t, out["dist_gd_cf"], color=CF_COLOR, label=f"‖w_{opt} − w_CF‖")
    if "dist_gd_gf" in out:
        ax.plot(t, out["dist_gd_gf"], color=GF_COLOR, ls=":", label=f"‖w_{opt} − w_{nm['SF']}‖")
    ax.set_xlabel("step")
    ax.set_ylabel("distance in weight space")
    legend_below(ax, ncol=1, fontsize=7)


def plot_2d_axes(axes, rows) -> None:
    """The 2-D model over ε: ``rows`` = [(ε, arrays)] with ``cf_limit``, ``gd_limit`` and
    ``theory_limit`` (ηλ∞). Left: the three limits; right: the miss S_CF − λ_GD against the
    slow-manifold δ = 2 − ηλ∞ and ε/2."""
    rows = sorted(rows, key=lambda r: r[0])
    eps = np.array([r[0] for r in rows])
    cf = np.array([float(r[1]["cf_limit"]) for r in rows])
    gd = np.array([float(r[1]["gd_limit"]) for r in rows])
    th = np.array([float(r[1]["theory_limit"]) for r in rows])
    ax = axes[0]
    ax.plot(eps, cf, "o-", color=CF_COLOR, label="central flow ηS(∞)")
    ax.plot(eps, gd, "s", color=GD_COLOR, label="exact GD ηλ∞")
    ax.plot(eps, th, "-", color="k", lw=0.8, label="slow-manifold theory")
    ax.axhline(2.0, color=EDGE_COLOR, ls="--", lw=1.0, label="2/η")
    ax.set_xlabel("ε")
    ax.set_ylabel("limit of ηλ₁")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.loglog(eps, cf - gd, "o", color=CF_COLOR, label="miss S_CF − λ_GD")
    ax.loglog(eps, 2.0 - th, "-", color="k", lw=0.8, label="δ = 2 − ηλ∞ (theory)")
    ax.loglog(eps, eps / 2, ":", color=GF_COLOR, label="ε/2")
    ax.set_xlabel("ε")
    ax.set_ylabel("η × miss")
    ax.legend(fontsize=7)
