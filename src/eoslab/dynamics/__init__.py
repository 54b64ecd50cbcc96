"""Full-batch gradient descent as one ``lax.scan``, with per-step diagnostics.

* :func:`gd`: parameter space, any :class:`~eoslab.Problem`.
* :func:`gd_output`: output space (the exact z, J recurrences) for second-order models.
* :func:`sweep`: a ``vmap`` of either over step sizes, initialisations and/or problems.

A trajectory is a dict of arrays indexed by step (see :data:`TRAJECTORY_KEYS`).

All parameter-space dynamics run through one stepper (:mod:`eoslab.dynamics.stepper`:
:func:`init_state`, :func:`make_step`, :func:`scan`) with an optax-shaped optimizer that knows
its edge (:mod:`eoslab.dynamics.optim`).
"""

from eoslab.dynamics import optim
from eoslab.dynamics.gd import EOS_THRESHOLD, TRAJECTORY_KEYS, first_true, gd, summarize, sweep
from eoslab.dynamics.output_space import gd_output, output_step
from eoslab.dynamics.stepper import StepState, init_state, make_step, scan

__all__ = ["EOS_THRESHOLD", "TRAJECTORY_KEYS", "gd", "gd_output", "output_step", "sweep", "summarize", "first_true",
           "optim", "StepState", "init_state", "make_step", "scan"]
