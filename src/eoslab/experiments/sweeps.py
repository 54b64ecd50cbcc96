"""User sweeps: a grid over any kind's parameters, each point a run in the results store.

A sweep file is an experiment config (``docs/experiments.md``) in which only
``[experiment] name`` and ``kind`` are required (``docs/sweeps.md``)::

    [experiment]
    name = "mlp-lr"
    kind = "networks.train"
    [dynamics]
    steps = 100
    [sweep]
    lr = [0.05, 0.1, 0.2]
    seed = [0, 1]

:func:`run_sweep` validates it (before any work), writes the sweep's manifest
``<root>/<name>/sweep.json`` (its dimensions and the run id of every grid point, in grid
order) and computes the missing runs: in this process (:func:`eoslab.experiments.runner.execute`,
a chunk of runs per vectorised call), on a Dask cluster (:mod:`eoslab.experiments.distributed`),
or only one shard's part. Runs are content-addressed and written atomically, so a sweep
resumes where it stopped and several sweeps (or shards) can share one results root.

:func:`sweep_dataset` (``eoslab.load`` on a sweep folder) reads the manifest and the runs into
one :class:`xarray.Dataset` whose dimensions are the sweep's (a zipped group of axes is one
dimension, named after its first axis, the others its coordinates), then each run's own
(``step``, ``eig``); missing runs are NaN.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
from pathlib import Path
from typing import Callable

import numpy as np

from eoslab.errors import EoslabError
from eoslab.experiments.runner import PlannedRun, Shard, execute, plan
from eoslab.experiments.schema import Experiment, load_config
from eoslab.experiments.store import Run, Store

MANIFEST = "sweep.json"

#: Scalars shown in the summary table when a kind stores them (in this order).
SUMMARY_SCALARS = ("final_loss", "max_edge_ratio", "late_edge_ratio", "max_sharpness", "crossings", "diverged",
                   "eta_ntk_limit", "median_ratio", "mean")


def load_sweep(source, *, mode: str = "full") -> Experiment:
    """A validated sweep from a TOML file path or a dict of tables (the file's content as
    Python: ``{"experiment": {"name": ..., "kind": ...}, "dynamics": {...}, "sweep": {...}}``).
    ``mode`` only checks that the mode resolves; it is chosen again in :func:`run_sweep`."""
    if isinstance(source, dict):
        name = source.get("experiment", {}).get("name", "sweep") if isinstance(source.get("experiment"), dict) \
            else "sweep"
        exp = load_config(Path(f"<sweep {name}>"), raw=source, user_sweep=True)
    else:
        exp = load_config(Path(source), user_sweep=True)
    exp.resolved(mode)
    return exp


def dimensions(exp: Experiment, mode: str) -> list[dict]:
    """The sweep's dimensions: ``[{"name": first axis, "axes": {axis: values}}, ...]``, in
    the order of the product (the last varies fastest)."""
    _, sweep, _ = exp.resolved(mode)
    return [{"name": g[0], "axes": {a: list(sweep[a]) for a in g}} for g in exp.groups(mode)]


def manifest(exp: Experiment, mode: str, planned: list[PlannedRun]) -> dict:
    params, _, _ = exp.resolved(mode)
    base = {k: v for sec in params.values() for k, v in sec.items()}
    base["seed"] = exp.seed
    dims = dimensions(exp, mode)
    swept = {a for d in dims for a in d["axes"]}
    return {"name": exp.name, "kind": exp.kind, "mode": mode, "title": exp.title, "config_file": str(exp.path),
            "dims": dims, "fixed": {k: v for k, v in base.items() if k not in swept},
            "runs": [pr.rid for pr in planned]}


def write_manifest(store: Store, info: dict) -> Path:
    """Write ``<root>/<name>/sweep.json`` atomically (a concurrent reader sees the old or the
    new file). The last sweep started under a name defines its grid; runs are shared."""
    d = store.root / info["name"]
    d.mkdir(parents=True, exist_ok=True)
    final = d / MANIFEST
    tmp = d / f".{MANIFEST}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp.write_text(json.dumps(info, indent=1, allow_nan=True))
    os.replace(tmp, final)
    return final


def read_manifest(folder) -> dict:
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EoslabError(f"{folder}: not a sweep folder (no {MANIFEST}; run `eoslab sweep FILE.toml`)") from None
    except ValueError as e:
        raise EoslabError(f"{path}: unreadable sweep manifest ({e})") from None


@dataclasses.dataclass
class SweepResult:
    """A sweep after :func:`run_sweep`: its config, mode, store and plan (one entry per grid
    point, in grid order, with its stored run attached when it is complete)."""

    experiment: Experiment
    mode: str
    store: Store
    planned: list[PlannedRun]

    @property
    def folder(self) -> Path:
        return self.store.root / self.experiment.name

    @property
    def missing(self) -> int:
        return sum(pr.run is None for pr in self.planned)

    def dataset(self):
        """The sweep as one :class:`xarray.Dataset` (see :func:`sweep_dataset`)."""
        return sweep_dataset(self.folder)

    def rows(self) -> list[dict]:
        """One dict per grid point: its swept values and the kind's summary scalars."""
        return summary_rows(manifest(self.experiment, self.mode, self.planned),
                            [pr.run for pr in self.planned])


def run_sweep(source, runs: str | os.PathLike = "eoslab-runs", *, mode: str = "full", executor: str = "local",
              dask: str | None = None, workers: int | None = None, shard: Shard | str | None = None,
              resources: dict | None = None, on_progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Run a sweep (a TOML path or a dict, see :func:`load_sweep`) into the results root
    ``runs`` and return its :class:`SweepResult`.

    Args:
      mode: ``"full"`` (the file's values) or ``"quick"`` (with its ``[quick.*]`` overrides).
      executor: ``"local"``: this process, a chunk of runs per vectorised call of the kind;
        ``"dask"``: one task per run on a Dask cluster (``dask``: a scheduler address
        ``tcp://HOST:PORT``, or None for a new ``LocalCluster`` of ``workers`` processes,
        default one per core); ``resources``: worker resources each task needs (``{"GPU": 1}``).
      shard: compute only the runs of shard ``i/N`` (no coordination needed between shards).
      on_progress: ``on_progress(done, total)`` after each chunk or task.
    """
    exp = source if isinstance(source, Experiment) else load_sweep(source, mode=mode)
    part = shard if isinstance(shard, Shard) else Shard.parse(shard)
    if executor not in ("local", "dask"):
        raise EoslabError(f"executor must be 'local' or 'dask', got {executor!r}")
    if workers is not None and (int(workers) != workers or workers < 1):
        raise EoslabError(f"workers must be a positive integer, got {workers!r}")
    store = Store(runs)
    planned = plan(exp, mode, store)
    write_manifest(store, manifest(exp, mode, planned))
    if executor == "dask":
        from eoslab.experiments.distributed import execute_dask

        planned = execute_dask(exp, mode, store, address=dask, workers=workers, shard=part, resources=resources,
                               on_progress=on_progress)
    else:
        planned = execute(exp, mode, store, part, on_progress=on_progress)
    return SweepResult(exp, mode, store, planned)


# ---- the sweep as one labelled dataset ------------------------------------------------------
def run_dataset(run: Run):
    """One stored run as an :class:`xarray.Dataset`: 0-d results become scalar variables;
    an array whose first axis has the run's largest length T gets the dimension ``step``
    (coordinate 0 … T−1), a second axis of ``*_eigs`` / ``*_residuals`` arrays ``eig``;
    other axes ``<name>_dim<i>``. Parameters are in ``attrs["params"]``.

    The one per-run conversion of :func:`sweep_dataset` (swap it for the store's own when
    that exists)."""
    import xarray as xr

    arrays = run.arrays
    lengths = [a.shape[0] for a in arrays.values() if a.ndim >= 1]
    T = max(lengths) if lengths else 0
    data, coords = {}, {}
    for k, a in arrays.items():
        dims = []
        for i, size in enumerate(a.shape):
            if i == 0 and size == T:
                dims.append("step")
                coords["step"] = np.arange(T)
            elif i == 1 and k.endswith(("_eigs", "_residuals")) and a.shape[0] == T:
                dims.append("eig")
                coords["eig"] = np.arange(size)
            else:
                dims.append(f"{k}_dim{i}")
                coords[f"{k}_dim{i}"] = np.arange(size)
        data[k] = (tuple(dims), a)
    return xr.Dataset(data, coords=coords, attrs={"run_id": run.id, "params": json.dumps(run.params)})


def sweep_dataset(folder, run_to_dataset: Callable | None = None):
    """The sweep stored in ``folder`` (``<root>/<name>``, holding ``sweep.json``) as one
    :class:`xarray.Dataset`.

    Dimensions: one per sweep dimension (a zipped group is one dimension named after its
    first axis, its other axes extra coordinates along it), then the runs' own (``step``,
    ``eig``, ...; runs of different lengths are padded with NaN). Grid points whose run is
    missing or invalid are NaN (``attrs["missing"]`` counts them). Variables: every stored
    result; coordinate ``run_id`` gives each point's run. Attributes: ``name``, ``kind``,
    ``mode``, the fixed parameters (``attrs["fixed"]``, JSON). Reading never changes the
    store (an invalid run is reported missing, not moved).
    """
    try:
        import xarray as xr
    except ImportError:
        raise EoslabError("loading a sweep as a Dataset needs xarray: pip install 'eoslab[analysis]'") from None
    convert = run_to_dataset or run_dataset
    folder = Path(folder)
    info = read_manifest(folder)
    store = Store(folder.parent)
    dims = info["dims"]
    shape = tuple(len(next(iter(d["axes"].values()))) for d in dims)
    n = math.prod(shape)
    if len(info["runs"]) != n:
        raise EoslabError(f"{folder / MANIFEST}: {len(info['runs'])} run ids for a grid of {n} points")
    parts, where = [], []
    for i, rid in enumerate(info["runs"]):
        r = store.read(folder / rid, repair=False)
        if r is not None:
            parts.append(convert(r).assign_attrs({}))
            where.append(i)
    if not parts:
        raise EoslabError(f"{folder}: none of the sweep's {n} runs is stored yet")
    missing = n - len(parts)
    ds = xr.concat(parts, dim="point", join="outer", fill_value=np.nan, combine_attrs="drop")
    ds = ds.assign_coords(point=np.asarray(where))
    if missing:
        ds = ds.reindex(point=np.arange(n))  # missing points: NaN (ints and flags become float)
    # point → the grid's dimensions (point index = row-major position in the product)
    names = [d["name"] for d in dims]
    if names:
        import pandas as pd

        idx = np.unravel_index(np.arange(n), shape)
        mi = pd.MultiIndex.from_arrays([np.asarray(i) for i in idx], names=names)
        ds = ds.drop_vars("point").assign_coords(xr.Coordinates.from_pandas_multiindex(mi, "point")).unstack("point")
        for d in dims:
            for axis, values in d["axes"].items():
                ds = ds.assign_coords({axis: (d["name"], _coord(values))})
        ds = ds.transpose(*names, ...)
        ids = np.asarray(info["runs"], dtype=object).reshape(shape)
        ds = ds.assign_coords(run_id=(tuple(names), ids))
    else:
        ds = ds.isel(point=0, drop=True).assign_coords(run_id=info["runs"][0])
    ds.attrs.update({"name": info["name"], "kind": info["kind"], "mode": info["mode"], "title": info.get("title", ""),
                     "fixed": json.dumps(info["fixed"]), "missing": missing})
    return ds


def _coord(values: list):
    if values and all(isinstance(v, list) for v in values):
        return np.asarray([json.dumps(v) for v in values], dtype=object)
    return np.asarray(values)


def is_sweep_folder(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


# ---- summary -------------------------------------------------------------------------------
def summary_rows(info: dict, runs: list[Run | None]) -> list[dict]:
    """One dict per grid point: the swept values, the run id and the kind's summary scalars
    (:data:`SUMMARY_SCALARS` that it stores; None for a missing run)."""
    dims = info["dims"]
    shape = tuple(len(next(iter(d["axes"].values()))) for d in dims)
    rows = []
    for i, (rid, r) in enumerate(zip(info["runs"], runs)):
        row = {}
        pos = np.unravel_index(i, shape) if shape else ()
        for d, j in zip(dims, pos):
            row.update({a: values[int(j)] for a, values in d["axes"].items()})
        row["run_id"] = rid
        if r is None:
            row["missing"] = True
        else:
            s = r.scalars()
            row.update({k: s[k] for k in SUMMARY_SCALARS if k in s})
        rows.append(row)
    return rows


def sweep_rows(folder) -> list[dict]:
    """:func:`summary_rows` of the sweep stored in ``folder`` (read-only)."""
    folder = Path(folder)
    info = read_manifest(folder)
    store = Store(folder.parent)
    return summary_rows(info, [store.read(folder / rid, repair=False) for rid in info["runs"]])

