"""Figures (matplotlib, Agg backend). Every module draws from a trajectory/result dict and
saves through :func:`eoslab.plots.style.save` so all figures share one style."""

from eoslab.plots.style import EDGE_COLOR, PREDICTED_COLOR, figure, save

__all__ = ["figure", "save", "EDGE_COLOR", "PREDICTED_COLOR"]
