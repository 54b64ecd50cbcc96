"""Figures of network training: loss, tracked eigenvalues with their error bars and 2/η,
and the network-vs-Taylor-model comparison."""

from __future__ import annotations

import numpy as np

from eoslab.plots.style import EDGE_COLOR, figure, legend_below, save

_NAMES = {"hessian": "Hessian", "ntk": "NTK", "gauss_newton": "Gauss-Newton"}
_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def lam(i: int) -> str:
    """λ with a subscript index: λ₁, λ₂, … (one spelling in every figure)."""
    return "λ" + str(i).translate(_SUB)
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")


def _eig_panel(ax, traj: dict, op: str, label_prefix: str = "", colors=_COLORS, alpha=1.0):
    """Top-k eigenvalues of ``op`` at the tracked steps, each with a ± residual band."""
    t = np.nonzero(traj["tracked"])[0]
    e, r = traj[f"{op}_eigs"][t], traj[f"{op}_residuals"][t]
    for i in range(e.shape[1]):
        c = colors[i % len(colors)]
        ax.plot(t, e[:, i], color=c, alpha=alpha, lw=0.9, label=f"{label_prefix}{lam(i + 1)}", zorder=3)
        ax.fill_between(t, e[:, i] - r[:, i], e[:, i] + r[:, i], color=c, alpha=0.25 * alpha, lw=0)


def edge_label(traj) -> str:
    """The edge's formula for the trajectory's optimizer (from ``traj.meta``), e.g. 2(1+β)/η."""
    meta = getattr(traj, "meta", {})
    return EDGE_LABELS.get(meta.get("optimizer", "gd"), "edge")


#: The dashed line's label per optimizer (see docs/optimizers.md).
EDGE_LABELS = {"gd": "2/η", "heavy_ball": "2(1+β)/η", "nesterov": "2(1+β)/((1+2β)η)", "rmsprop": "2/η",
               "adam": "(2+2β₁)/((1−β₁)η)"}


def _edge(ax, edge, label: str = "edge"):
    """The optimizer's edge, dashed: a constant (a line) or one value per step (a schedule)."""
    e = np.asarray(edge, float)
    if e.ndim == 0 or np.nanmin(e) == np.nanmax(e):  # drawn under the measured curves, its value named
        value = float(np.nanmax(e))
        name = label if label.startswith("edge") else f"edge {label}"
        ax.axhline(value, color=EDGE_COLOR, ls="--", lw=1.0, zorder=1, label=f"{name} = {value:.4g}")
    else:
        name = label if label.startswith("edge") else f"edge {label}"
        ax.plot(np.arange(e.size), e, color=EDGE_COLOR, ls="--", lw=1.0, zorder=1, label=name)


def plot_training(traj: dict, path, title: str = "") -> list:
    """Loss (and accuracy) plus one panel per tracked operator (top-k eigenvalues, bands =
    residual norms, dashed = the optimizer's edge: 2/η for GD, 2(1+β)/η heavy-ball, … on the
    Hessian, or Adam's / RMSProp's on the preconditioned Hessian). Writes PNG and SVG; returns the paths."""
    ops = [op for op in _NAMES if f"{op}_eigs" in traj]
    pre = "preconditioned_eigs" in traj
    fig, axes = figure(ncols=1 + len(ops), width=4.0, height=3.0)
    axes = np.atleast_1d(axes)
    steps = np.arange(traj["loss"].shape[0])
    ax = axes[0]
    ax.semilogy(steps, traj["loss"], color="k", lw=0.9, label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if not np.all(np.isnan(traj["accuracy"])):
        ax2 = ax.twinx()
        ax2.plot(steps, traj["accuracy"], color="#7f7f7f", lw=0.8)
        ax2.set_ylabel("accuracy", color="#7f7f7f")
        ax2.set_ylim(0, 1)
    meta = getattr(traj, "meta", {})
    ax.set_title(title or meta.get("optimizer", "gd") + (" (full batch)" if not meta.get("batch_size")
                                                          else f" (batch {meta['batch_size']})"))
    for ax, op in zip(axes[1:], ops):
        _eig_panel(ax, traj, op)
        if op == "hessian" and pre:
            _eig_panel(ax, traj, "preconditioned", label_prefix="P⁻¹H ", colors=("#d62728", "#e377c2"))
        if op == "hessian" and "batch_sharpness" in traj:
            t = np.nonzero(traj["tracked"])[0]
            ax.errorbar(t, traj["batch_sharpness"][t], yerr=traj["batch_sharpness_se"][t], fmt=".", ms=2,
                        color="#8c564b", lw=0.5, label="batch sharpness")
        quantity = meta.get("quantity", "hessian")
        if quantity == "hessian" or (quantity == "preconditioned" and op == "hessian" and pre):
            _edge(ax, traj["edge"], edge_label(traj))
        ax.set_xlabel("step")
        ax.set_ylabel(f"top {_NAMES[op]} eigenvalues")
        ax.set_title(f"{_NAMES[op]} (band: residual norm)")
        ax.legend(loc="lower right")
    return save(fig, path)


def plot_taylor(cmp: dict, path, title: str = "") -> list:
    """Network vs its second-order Taylor model (from
    :func:`eoslab.dynamics.train.compare_taylor`): loss, top Hessian eigenvalue with 2/η,
    and the non-linear dynamical contribution ‖½Q(δ, δ)‖ / ‖Jδ‖ of every step."""
    net, tay = cmp["network"], cmp["taylor"]
    fig, axes = figure(ncols=3, width=4.0, height=3.0)
    steps = np.arange(net["loss"].shape[0])
    ax = axes[0]
    ax.semilogy(steps, net["loss"], color="k", lw=0.9, label="network")
    ax.semilogy(steps, tay["loss"], color=_COLORS[1], lw=0.9, ls="--", label="Taylor model")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title or "network vs second-order Taylor model")
    ax.legend()
    ax = axes[1]
    if "hessian_eigs" in net:
        t = np.nonzero(net["tracked"])[0]
        ax.plot(t, net["hessian_eigs"][t, 0], color="k", lw=0.9, label="network λ₁")
        ax.plot(t, tay["hessian_eigs"][t, 0], color=_COLORS[1], lw=0.9, ls="--", label="Taylor λ₁")
        if net["hessian_eigs"].shape[1] > 1:
            ax.plot(t, net["hessian_eigs"][t, 1], color="k", lw=0.6, alpha=0.5, label="network λ₂")
            ax.plot(t, tay["hessian_eigs"][t, 1], color=_COLORS[1], lw=0.6, ls="--", alpha=0.5, label="Taylor λ₂")
        _edge(ax, net["edge"], edge_label(net))
        ax.legend(loc="lower right")
    ax.set_xlabel("step")
    ax.set_ylabel("top Hessian eigenvalues")
    ax = axes[2]
    for traj, c, ls, name in ((net, "k", "-", "network"), (tay, _COLORS[1], "--", "Taylor model")):
        ratio = traj["nonlinear_norm"] / traj["linear_norm"]
        ax.semilogy(steps, ratio, color=c, ls=ls, lw=0.8, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("‖½Q(δ,δ)‖ / ‖Jδ‖")
    ax.set_title("non-linear dynamical contribution")
    for key, ls in (("loss_divergence_step", ":"), ("sharpness_divergence_step", "-.")):
        s = cmp.get(key, -1)
        if s is not None and s >= 0:
            for a in axes:
                a.axvline(s, color="#7f7f7f", ls=ls, lw=0.8)
    ax.legend()
    return save(fig, path)


def eos_panels(a: dict, lr: float):
    """The ``networks.eos`` figure of one run's stored arrays ``a``: training loss (and the Taylor
    model's), the top-2 Hessian eigenvalues at the tracked steps with 2/η, and, when the Taylor model
    was trained, ‖½Q(δ,δ)‖ / ‖Jδ‖ of each step for both. Returns the figure."""
    has_t = "taylor_loss" in a
    fig, axes = figure(ncols=3 if has_t else 2, width=4.0, height=3.0)
    steps = np.arange(len(a["loss"]))
    axes[0].semilogy(steps, a["loss"], color="k", lw=0.9, label="network")
    if has_t:
        axes[0].semilogy(steps, a["taylor_loss"], color="#ff7f0e", ls="--", lw=0.9, label="Taylor model")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss")
    axes[0].legend()
    t = np.nonzero(a["tracked"])[0]
    for i, c in zip(range(a["hessian_eigs"].shape[1]), ("#1f77b4", "#2ca02c")):
        axes[1].plot(t, a["hessian_eigs"][t, i], color=c, lw=0.9, zorder=3, label=f"network {lam(i + 1)}")
    if has_t:
        axes[1].plot(t, a["taylor_hessian_eigs"][t, 0], color="#ff7f0e", ls="--", lw=0.8, label="Taylor λ₁")
    _edge(axes[1], a["edge"] if "edge" in a else 2.0 / lr, f"2/η (η = {lr:g})")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("top Hessian eigenvalues")
    axes[1].set_title(f"full-batch GD, η = {lr:g}")
    legend_below(axes[1], ncol=2, fontsize=7)  # the eigenvalues fill the panel
    if has_t:
        axes[2].semilogy(steps, a["nonlinear_norm"] / a["linear_norm"], color="k", lw=0.8, label="network")
        axes[2].semilogy(steps, a["taylor_nonlinear_norm"] / a["taylor_linear_norm"], color="#ff7f0e",
                         ls="--", lw=0.8, label="Taylor model")
        axes[2].set_xlabel("step")
        axes[2].set_ylabel("‖½Q(δ,δ)‖ / ‖Jδ‖")
        axes[2].legend()
    return fig


def plot_density(traj: dict, path, op: str = "hessian", sigma: float | None = None, bins: int = 300) -> list:
    """Spectral density of ``op`` against the step (stochastic Lanczos quadrature rows of a
    :func:`~eoslab.dynamics.train.train` run with ``density=(op,)``): log₁₀ of the density smoothed by
    a Gaussian of width ``sigma`` (default 1 % of the spectral range), with the tracked λ₁ and the edge;
    next to it the Hutch++ trace with its ±2 standard-error band. Writes PNG and SVG."""
    rows = np.nonzero(np.isfinite(traj[f"{op}_trace"]))[0]
    nodes, w = traj[f"{op}_density_nodes"][rows], traj[f"{op}_density_weights"][rows]
    probes = max(1, int(round(float(np.sum(w[0])))))
    lo, hi = float(np.min(nodes)), float(np.max(nodes))
    pad = 0.02 * (hi - lo)
    grid = np.linspace(lo - pad, hi + pad, bins)
    sigma = 0.01 * (hi - lo) if sigma is None else sigma
    g = np.exp(-0.5 * ((grid[None, :, None] - nodes[:, None, :]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    dens = np.sum(g * w[:, None, :], axis=2) / probes                  # (rows, bins)
    fig, axes = figure(ncols=2, width=4.4, height=3.2)
    ax = axes[0]
    im = ax.pcolormesh(rows, grid, np.log10(np.maximum(dens.T, 1e-8)), shading="nearest", cmap="magma_r",
                       vmin=-6, vmax=max(-5.0, float(np.log10(dens.max()))))
    fig.colorbar(im, ax=ax, label="log₁₀ density")
    if f"{op}_eigs" in traj:
        t = np.nonzero(traj["tracked"])[0]
        ax.plot(t, traj[f"{op}_eigs"][t, 0], color="#1f77b4", lw=0.8, label="tracked λ₁")
    _edge(ax, traj["edge"] if "edge" in traj else 2.0 / float(traj.meta["lr"]), edge_label(traj))
    ax.set_xlabel("step")
    ax.set_ylabel(f"{_NAMES.get(op, op)} eigenvalue")
    ax.legend(loc="upper left", fontsize=7)
    ax = axes[1]
    tr, se = traj[f"{op}_trace"][rows], traj[f"{op}_trace_stderr"][rows]
    ax.plot(rows, tr, color="k", lw=0.9, label="Hutch++ trace")
    ax.fill_between(rows, tr - 2 * se, tr + 2 * se, color="k", alpha=0.2, lw=0, label="± 2 s.e.")
    ax.set_xlabel("step")
    ax.set_ylabel(f"tr({_NAMES.get(op, op)})")
    ax.legend(fontsize=7)
    return save(fig, path)
