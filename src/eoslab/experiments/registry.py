"""Kinds: the code behind an experiment config, registered by name.

A kind is a few pure functions (see ``docs/experiments.md``):

* ``run(points) -> list[dict[str, array]]``: compute a chunk of runs in one vectorised call.
  Each point is a flat dict of every parameter of the config (all sections merged) plus
  ``seed``; the runner only groups points whose ``static`` parameters are equal. Return one
  dict of NumPy/JAX arrays per point (0-d arrays are the run's scalars).
* ``measures[name](runs) -> Measurement``: a measured value with its uncertainty from the
  stored runs a claim selects (``where``).
* ``predictions[name](runs) -> float | Measurement``: the theory value for those runs.
* ``figures(results) -> list[(name, matplotlib figure, caption)]``.

Kinds live in ``eoslab/experiments/kinds/<module>.py`` and call :func:`register` at import;
every module of that package is imported on first use, so adding a file is all it takes.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
from typing import Callable, Protocol

from eoslab.errors import EoslabError
from eoslab.experiments.schema import RESERVED


@dataclasses.dataclass(frozen=True)
class Measurement:
    """A number with its standard uncertainty (``0.0`` when exact, e.g. a count)."""

    value: float
    uncertainty: float = 0.0
    note: str = ""

    def __post_init__(self):
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "uncertainty", float(self.uncertainty))
        if not (self.uncertainty >= 0 or math.isnan(self.uncertainty)):
            raise EoslabError(f"uncertainty must be ≥ 0, got {self.uncertainty}")


class Measure(Protocol):
    """A claim's measure or prediction: the selected runs (a list of
    :class:`~eoslab.experiments.store.Run`) → a :class:`Measurement` or a plain number (exact).
    Raises :class:`~eoslab.errors.MeasureError` when it cannot be computed from these runs."""

    def __call__(self, runs: list, /) -> "Measurement | float": ...


class RunFn(Protocol):
    """A kind's ``run``: the resolved parameters of up to ``chunk`` runs → one dict of arrays each."""

    def __call__(self, points: list[dict], /) -> list[dict]: ...


@dataclasses.dataclass(frozen=True)
class Kind:
    """The code behind a config ``kind = "<name>"``.

    Attributes:
      name: what configs write in ``[experiment] kind``; by convention ``<model>.<what>``.
      schema: section -> {parameter name -> :class:`~eoslab.experiments.schema.Field`}.
        Parameter names must be unique across sections.
      run: ``run(points: list[dict]) -> list[dict[str, array]]`` (see module docstring).
      measures, predictions: name -> function of the selected runs (list of
        :class:`~eoslab.experiments.store.Run`).
      figures: ``figures(results: ExperimentResults) -> list[(name, fig, caption)]``.
      chunk: the largest number of runs passed to ``run`` at once.
      doc: one paragraph for ``docs``/``eoslab list``.
      check_point: ``check_point(point) -> str | None``: an error for a combination of
        parameters that each field accepts alone (e.g. a batch larger than the data); every
        point to compute is checked before the first is computed.
      version: part of every run's identity: bump it when ``run`` changes what it computes
        or stores, so stored runs of the old code are not reused.
    """

    name: str
    schema: dict
    run: RunFn
    measures: dict[str, Measure] = dataclasses.field(default_factory=dict)
    predictions: dict[str, Measure] = dataclasses.field(default_factory=dict)
    figures: Callable | None = None
    chunk: int = 64
    doc: str = ""
    version: int = 1
    check_point: Callable | None = None

    def __post_init__(self):
        seen = {}
        for sec, fields in self.schema.items():
            if sec in RESERVED:
                raise EoslabError(f"kind {self.name}: section name '{sec}' is reserved")
            for k in fields:
                if k == "seed" or k in seen:
                    raise EoslabError(f"kind {self.name}: parameter '{k}' appears in [{seen.get(k, 'experiment')}] "
                                      f"and [{sec}]; parameter names must be unique")
                seen[k] = sec

    @property
    def static(self) -> tuple[str, ...]:
        """Names of parameters that must be equal within one chunk."""
        return tuple(k for fields in self.schema.values() for k, f in fields.items() if f.static)


KINDS: dict[str, Kind] = {}
#: Kind modules that failed to import: module name -> error (reported when a config needs a kind).
BROKEN: dict[str, str] = {}
_discovered = False


def register(kind: Kind) -> Kind:
    """Add ``kind`` to the registry (at import of its module). Returns it."""
    if kind.name in KINDS and KINDS[kind.name] is not kind:
        raise EoslabError(f"kind '{kind.name}' is registered twice")
    KINDS[kind.name] = kind
    return kind


def discover() -> dict[str, Kind]:
    """Import every module of :mod:`eoslab.experiments.kinds` (once) and return the registry."""
    global _discovered
    if not _discovered:
        from eoslab.experiments import kinds

        for mod in sorted(pkgutil.iter_modules(kinds.__path__), key=lambda m: m.name):
            if not mod.name.startswith("_"):
                # One broken module must not take the other experiments down with it.
                try:
                    importlib.import_module(f"{kinds.__name__}.{mod.name}")
                except Exception as e:  # noqa: BLE001
                    BROKEN[mod.name] = f"{type(e).__name__}: {e}"
        _discovered = True
    return KINDS


def get_kind(name: str, kinds: dict | None = None, where: str = "") -> Kind:
    kinds = discover() if kinds is None else kinds
    try:
        return kinds[name]
    except KeyError:
        prefix = f"{where}: " if where else ""
        broken = "".join(f"; kind module '{m}' failed to import ({err})" for m, err in BROKEN.items())
        raise EoslabError(f"{prefix}unknown kind '{name}'; known kinds: {', '.join(sorted(kinds)) or 'none'}"
                          f"{broken}") from None
