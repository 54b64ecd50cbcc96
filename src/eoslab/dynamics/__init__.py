"""Full-batch gradient descent as one ``lax.scan``, with per-step diagnostics.

* :func:`gd`: parameter space, any :class:`~eoslab.Problem`.
* :func:`gd_output`: output space (the exact z, J recurrences) for second-order models.
* :func:`sweep`: a ``vmap`` of either over step sizes, initialisations and/or problems.

A trajectory is a dict of arrays indexed by step (see :data:`TRAJECTORY_KEYS`).
"""

from eoslab.dynamics.gd import EOS_THRESHOLD, TRAJECTORY_KEYS, first_true, gd, summarize, sweep
from eoslab.dynamics.output_space import gd_output, output_step

__all__ = ["EOS_THRESHOLD", "TRAJECTORY_KEYS", "gd", "gd_output", "output_step", "sweep", "summarize", "first_true"]
