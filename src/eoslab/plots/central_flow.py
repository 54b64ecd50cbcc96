"""Figure of a central-flow run next to discrete GD and gradient flow (four panels)."""

from __future__ import annotations

import numpy as np

from eoslab.plots.style import EDGE_COLOR, PREDICTED_COLOR, figure, save

GD_COLOR, GF_COLOR, CF_COLOR = "#1f77b4", "#7f7f7f", PREDICTED_COLOR


def plot_flow(out: dict, lr: float, path, *, window: int = 20, title: str = "") -> list:
    """Loss (GD raw and smoothed, the central flow's L and predicted time-averaged loss,
    gradient flow), sharpness vs 2/η, tr Σ, and ‖w_GD − w_CF‖, ‖w_GD − w_GF‖ over GD steps.
    ``out`` is :func:`eoslab.dynamics.central_flow.run`'s result. Returns the written paths."""
    from eoslab.dynamics.central_flow import smooth

    t = np.arange(out["loss"].shape[0])
    fig, axes = figure(ncols=4, width=3.6, height=2.9)
    ax = axes[0]
    if "gd_loss" in out:
        ax.semilogy(t, out["gd_loss"], color=GD_COLOR, alpha=0.3, lw=0.7, label="GD")
        ax.semilogy(t, smooth(out["gd_loss"], window), color=GD_COLOR, lw=1.2, label=f"GD, {window}-step mean")
    if "gf_loss" in out:
        ax.semilogy(t, out["gf_loss"], color=GF_COLOR, ls=":", label="gradient flow")
    ax.semilogy(t, out["loss"], color=CF_COLOR, ls="--", lw=1.0, label="central flow L(w)")
    ax.semilogy(t, out["avg_loss"], color=CF_COLOR, lw=1.4, label="CF prediction L + trΣ/η")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    ax = axes[1]
    if "gd_sharpness" in out:
        ax.plot(t, out["gd_sharpness"], color=GD_COLOR, lw=0.8, label="GD λ₁")
    eigs = np.asarray(out["eigs"])
    for i in range(eigs.shape[1]):
        ax.plot(t, eigs[:, i], color=CF_COLOR, lw=1.2 if i == 0 else 0.8, alpha=1.0 if i == 0 else 0.6,
                label="central flow λ₁…λₖ" if i == 0 else None)
    ax.axhline(2.0 / lr, color=EDGE_COLOR, ls="--", lw=1.0, label="2/η")
    ax.set_xlabel("step")
    ax.set_ylabel("Hessian eigenvalues")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(t, out["trace_sigma"], color=CF_COLOR, label="tr Σ (σ² for k = 1)")
    ax.set_xlabel("step")
    ax.set_ylabel("predicted oscillation variance")
    ax.legend(fontsize=7)
    ax = axes[3]
    if "dist_gd_cf" in out:
        ax.plot(t, out["dist_gd_cf"], color=CF_COLOR, label="‖w_GD − w_CF‖")
    if "dist_gd_gf" in out:
        ax.plot(t, out["dist_gd_gf"], color=GF_COLOR, ls=":", label="‖w_GD − w_GF‖")
    ax.set_xlabel("step")
    ax.set_ylabel("distance in weight space")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save(fig, path)
