"""Reproduction experiments: TOML configs, kinds (the code behind a config), the results
store, the runner and claim evaluation. See ``docs/experiments.md``.

To add an experiment: a config in ``configs/`` (shipped) or a user's ``./experiments/`` and, if no existing kind fits, a module in
``eoslab/experiments/kinds/`` that calls :func:`register` with a :class:`Kind`.
"""

from eoslab.experiments.registry import KINDS, Kind, Measurement, discover, get_kind, register
from eoslab.experiments.schema import REQUIRED, Claim, Experiment, Field, load_config
from eoslab.experiments.store import Run, Store, load

__all__ = ["Kind", "Field", "Measurement", "REQUIRED", "register", "discover", "get_kind", "KINDS",
           "Claim", "Experiment", "load_config", "Run", "Store", "load"]
