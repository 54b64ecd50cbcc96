"""eoslab: progressive sharpening and the edge of stability of gradient descent.

Importing eoslab changes no global JAX setting. The papers' models and theory compute in
float64 inside a scope (:func:`eoslab.x64`); generic dynamics and spectra follow the dtype of
the problem they are given, so float32 models stay float32 (see ``eoslab._precision`` and the
README's "Precision" section). The ``eoslab`` command turns float64 on for its own process.
"""

import sys as _sys

if _sys.argv and _sys.argv[0].replace("\\", "/").rsplit("/", 1)[-1] in ("eoslab", "eoslab.exe"):
    # The eoslab program itself: catch Ctrl-C before the seconds-long JAX import, where a
    # KeyboardInterrupt would be swallowed by JAX's garbage-collection callback.
    from eoslab.progress import install_interrupt_handler

    install_interrupt_handler()

from eoslab._precision import x64  # noqa: E402
from eoslab.errors import EoslabError  # noqa: E402
from eoslab.problem import Problem  # noqa: E402


def load(path):
    """Stored results as a pandas DataFrame (see :func:`eoslab.experiments.store.load`)."""
    from eoslab.experiments.store import load as _load

    return _load(path)


def load_dataset(path):
    """Stored results as an xarray Dataset (``step``, ``eig``, ``run`` or sweep dimensions; see
    :func:`eoslab.experiments.store.load_dataset`)."""
    from eoslab.experiments.store import load_dataset as _load_dataset

    return _load_dataset(path)


def save(traj, root="eoslab-runs", name="trajectories", **params):
    """Store a trajectory dict (``gd``, ``train``, …) as a run; ``params`` identify it (e.g.
    ``lr=0.1, steps=500``). Returns the run folder (see
    :func:`eoslab.experiments.store.save_trajectory`)."""
    from eoslab.experiments.store import save_trajectory

    return save_trajectory(traj, root, name, params=params)


__all__ = ["EoslabError", "Problem", "load", "load_dataset", "save", "x64"]
__version__ = "0.1.0"
