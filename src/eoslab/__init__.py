"""eoslab: progressive sharpening and the edge of stability of gradient descent.

Importing eoslab enables JAX's float64 mode: every comparison with theory in this
package is made in double precision. Networks may still use float32 arrays
explicitly (their dtype is kept).
"""

import sys as _sys

if _sys.argv and _sys.argv[0].replace("\\", "/").rsplit("/", 1)[-1] in ("eoslab", "eoslab.exe"):
    # The eoslab program itself: catch Ctrl-C before the seconds-long JAX import, where a
    # KeyboardInterrupt would be swallowed by JAX's garbage-collection callback.
    from eoslab.progress import install_interrupt_handler

    install_interrupt_handler()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

from eoslab.errors import EoslabError  # noqa: E402
from eoslab.problem import Problem  # noqa: E402


def load(path):
    """Stored results as a pandas DataFrame (see :func:`eoslab.experiments.store.load`)."""
    from eoslab.experiments.store import load as _load

    return _load(path)


__all__ = ["EoslabError", "Problem", "load"]
__version__ = "0.1.0"
