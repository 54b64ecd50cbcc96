"""One style for every eoslab figure."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: Colour of the 2/η (edge of stability) reference line.
EDGE_COLOR = "#d62728"
#: Colour of a theoretical prediction.
PREDICTED_COLOR = "#2ca02c"

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 130,
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "lines.linewidth": 1.2,
}


def figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.2, **kw):
    """``(fig, axes)`` in eoslab's style; ``width``/``height`` are per panel, inches."""
    # Artists read rcParams when created, so the style is applied for the figure's lifetime.
    plt.rcParams.update(STYLE)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             layout="constrained", **kw)
    return fig, axes


def legend_below(ax, ncol: int = 2, **kw):
    """A legend under the axes, outside the data (constrained layout makes room for it)."""
    kw.setdefault("fontsize", 7)
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, frameon=False, **kw)


def save(fig, path: str | os.PathLike, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix in ``formats`` (the given suffix is replaced),
    close it, and return the written paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        p = path.with_suffix("." + fmt)
        # Fixed metadata: the same figure gives the same bytes (no creation date).
        fig.savefig(p, metadata={"Date": None} if fmt == "svg" else None)
        out.append(p)
    plt.close(fig)
    return out
