"""Figures of a user sweep, drawn from its :class:`xarray.Dataset`
(:func:`eoslab.experiments.sweeps.sweep_dataset`): the edge ratio ηλ₁/2 against η and the
final loss against η, one line per combination of the other sweep dimensions (seeds,
widths, ...)."""

from __future__ import annotations

import itertools

import numpy as np

from eoslab.plots.style import EDGE_COLOR, figure

#: (variable, y label, log scale) of the per-η panels, drawn when the sweep stores them.
PANELS = (
    ("max_edge_ratio", "max ηλ₁/2 over the run", False),
    ("late_edge_ratio", "ηλ₁/2, mean over the last quarter", False),
    ("final_loss", "final training loss", True),
)
MAX_LINES = 12


def _x_dim(ds, x: str | None) -> str | None:
    sweep_dims = [d for d in ds.run_id.dims] if "run_id" in ds.coords else []
    if x is not None:
        return x if x in sweep_dims else None
    if "lr" in sweep_dims:
        return "lr"
    for d in sweep_dims:
        if np.issubdtype(ds[d].dtype, np.number) and d != "seed":
            return d
    return None


def sweep_figures(ds, x: str | None = None) -> list[tuple[str, object, str]]:
    """``[(name, figure, caption)]``: ηλ₁/2 and the final loss against the sweep dimension
    ``x`` (default ``lr`` when swept, else the first numeric one), one line per combination
    of the other sweep dimensions (at most :data:`MAX_LINES`). Empty when the sweep has no
    numeric dimension or stores none of :data:`PANELS`."""
    xd = _x_dim(ds, x)
    panels = [p for p in PANELS if p[0] in ds.data_vars]
    if xd is None or not panels:
        return []
    others = [d for d in ds.run_id.dims if d != xd]
    combos = list(itertools.product(*(range(ds.sizes[d]) for d in others)))[:MAX_LINES]
    out = []
    xs = np.asarray(ds[xd].values, float)
    for var, label, log in panels:
        fig, ax = figure()
        for combo in combos:
            sel = dict(zip(others, combo))
            y = np.asarray(ds[var].isel(sel).values, float)
            if "diverged" in ds.data_vars:  # a diverged run's last values say nothing about the edge
                y = np.where(np.asarray(ds["diverged"].isel(sel).values, float) == 1, np.nan, y)
            name = ", ".join(f"{d} = {ds[d].values[i]}" for d, i in sel.items())
            ax.plot(xs, y, "o-", ms=3, lw=1.0, label=name or None)
        if var.endswith("edge_ratio"):
            ax.axhline(1.0, color=EDGE_COLOR, ls="--", lw=1.0, label="edge (ηλ₁/2 = 1)")
        if log:
            finite = np.asarray(ds[var].values, float)
            if np.any(np.isfinite(finite) & (finite > 0)):
                ax.set_yscale("log")
        if xd == "lr" and np.all(xs > 0) and xs.max() / xs.min() > 8:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("step size η" if xd == "lr" else xd)
        ax.set_ylabel(label)
        if others or var.endswith("edge_ratio"):
            ax.legend(fontsize=7)
        title = ds.attrs.get("title") or ds.attrs.get("name", "")
        out.append((f"{ds.attrs.get('name', 'sweep')}_{var}_vs_{xd}", fig,
                    f"{title}: {label} against {xd}" + (f", one line per {', '.join(others)}" if others else "")
                    + "; diverged runs omitted"))
    return out
