"""eoslab: progressive sharpening and the edge of stability of gradient descent.

Importing eoslab enables JAX's float64 mode: every comparison with theory in this
package is made in double precision. Networks may still use float32 arrays
explicitly (their dtype is kept).
"""

import jax

jax.config.update("jax_enable_x64", True)

from eoslab.errors import EoslabError  # noqa: E402
from eoslab.problem import Problem  # noqa: E402


def load(path):
    """Stored results as a pandas DataFrame (see :func:`eoslab.experiments.store.load`)."""
    from eoslab.experiments.store import load as _load

    return _load(path)


__all__ = ["EoslabError", "Problem", "load"]
__version__ = "0.1.0"
