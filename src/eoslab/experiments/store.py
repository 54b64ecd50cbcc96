"""The on-disk results store: one directory per run, written atomically.

Layout under the results root (default ``./eoslab-runs``)::

    <root>/<experiment name>/<run id>/
        config.json   the resolved run: experiment, kind, every parameter, seed, eoslab version
        arrays.npz    the run's arrays (0-d arrays are its scalars)
        meta.json     package versions, seed, wall time, machine, start/end times (UTC)
        COMPLETE      written last: SHA-256 of the three files above

* **Identity.** The run id is the first 16 hex digits of the SHA-256 of the canonical JSON of
  ``config.json`` (which holds the eoslab version and the kind's version): the same config,
  seed and sweep point always map to the same directory, and a changed parameter or version
  to a new one.
* **Atomic.** A run is written into ``.tmp-<id>.<host>.<pid>.<rand>`` next to its final
  place, fsynced, then renamed: a reader sees a complete run or none. If two processes (e.g.
  cluster shards) finish the same run, the second rename fails and its copy is dropped.
* **Partial runs.** While a run computes, ``<experiment>/.partial-<run id>/`` holds what it has
  produced so far (:mod:`eoslab.partial`: ``config.json``, ``arrays.npz``, ``progress.json``,
  ``checkpoint.npz``; each file rewritten atomically): :meth:`Store.partial` writes it,
  :meth:`Store.partial_runs` lists them, and :meth:`Store.write` of the finished run removes it.
  A partial run is never a run: listing, loading, validation and the quarantine skip it.
* **Validated on every read.** A run directory is used only if ``COMPLETE`` exists and the
  checksum of the files matches; otherwise it is never silently read. Reading is read-only
  (``eoslab.load``, ``list``, ``show``, ``report`` skip an invalid run and say why); only
  ``reproduce``, which recomputes it, moves it to ``<experiment>/.corrupt/`` (``repair=True``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import platform
import secrets
import re
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from eoslab.errors import EoslabError
from eoslab.partial import PartialFolder, utc_now

FILES = ("config.json", "arrays.npz", "meta.json")
MARKER = "COMPLETE"
PARTIAL = ".partial-"
DEFAULT_ROOT = "eoslab-runs"


def canonical_json(obj) -> str:
    """Key-sorted, whitespace-free JSON: equal configs give equal strings (TOML allows inf/nan:
    written as Infinity/NaN)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def run_config(experiment: str, kind: str, params: dict, kind_version: int = 1) -> dict:
    """The resolved config that identifies one run (``params``: flat, including ``seed``)."""
    import eoslab

    return {"experiment": experiment, "kind": kind, "kind_version": kind_version,
            "params": dict(sorted(params.items())), "eoslab_version": eoslab.__version__}


def run_id(config: dict) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def _versions() -> dict:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("eoslab", "jax", "jaxlib", "numpy", "scipy", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def machine_info() -> dict:
    info = {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": os.cpu_count()}
    try:
        import jax

        info["jax_backend"] = jax.default_backend()
        info["jax_devices"] = [str(d) for d in jax.devices()]
    except Exception:  # noqa: BLE001 - metadata must never break a run
        pass
    return info


def _checksum(directory: Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode())
        h.update((directory / name).read_bytes())
    return h.hexdigest()


def _npz_problem(path: Path) -> str | None:
    """Why an ``arrays.npz`` does not read back (a zip CRC or member error), or None. A stored
    checksum proves the file is the one written, not that it was written well, so the archive
    is opened and tested too."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        return f"arrays.npz is not a readable archive ({e})"
    return f"arrays.npz member {bad} is corrupt" if bad else None


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _to_numpy(arrays: dict) -> dict:
    out = {}
    for k, v in arrays.items():
        a = np.asarray(v)
        if a.dtype == object or a.dtype.kind not in "biufcU":  # U: labels (e.g. an outcome per run)
            raise EoslabError(f"result '{k}' must be a numeric, boolean or string array, got dtype {a.dtype}")
        out[k] = a
    return out


@dataclasses.dataclass
class Run:
    """A stored, validated run. ``arrays`` is loaded on first access."""

    path: Path
    config: dict
    meta: dict
    _arrays: dict | None = None

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def params(self) -> dict:
        """Flat parameters of the run, including ``seed``."""
        return self.config["params"]

    @property
    def arrays(self) -> dict:
        if self._arrays is None:
            try:
                with np.load(self.path / "arrays.npz", allow_pickle=False) as z:
                    self._arrays = {k: z[k] for k in z.files}
            except OSError as e:
                raise EoslabError(f"run {self.path}: cannot read arrays.npz ({e.strerror or e})") from None
            except Exception as e:  # noqa: BLE001 - zipfile/numpy raise many types for a bad archive
                raise EoslabError(f"run {self.path}: arrays.npz is corrupt ({type(e).__name__}: {e})") from None
        return self._arrays

    def scalars(self) -> dict:
        """The run's 0-d results as Python numbers."""
        return {k: v.item() for k, v in self.arrays.items() if v.ndim == 0}


class PartialRun(PartialFolder):
    """A run still computing (or interrupted): the folder ``<root>/<experiment>/.partial-<id>``.

    Reading: ``id`` (the final run's id), ``config``, ``params``, ``done`` / ``total`` steps and
    ``updated`` (UTC ISO time) as of when it was listed, ``arrays`` (the per-step arrays so far,
    read from disk on first access: at least ``done`` rows). Writing (:meth:`Store.partial`):
    :meth:`update`, and :meth:`finish` to store the finished run and remove this folder."""

    def __init__(self, path, config: dict, store: "Store | None" = None, write: bool = False):
        super().__init__(path, config if write else None)
        self.config = config
        self._store = store
        self._arrays = None
        self._progress = self.read_progress()

    @property
    def id(self) -> str:
        return self.path.name[len(PARTIAL):]

    @property
    def params(self) -> dict:
        return self.config["params"]

    @property
    def done(self) -> int:
        return self._progress["done"] if self._progress else 0

    @property
    def total(self) -> int | None:
        return self._progress["total"] if self._progress else None

    @property
    def updated(self) -> str | None:
        return self._progress["updated"] if self._progress else None

    @property
    def arrays(self) -> dict:
        if self._arrays is None:
            self._arrays = self.read_arrays()
        return self._arrays

    def update(self, arrays: dict, done: int, total: int, checkpoint: dict | None = None) -> None:
        super().update(_to_numpy(arrays), done, total, checkpoint)
        self._progress, self._arrays = self.read_progress(), None

    def finish(self, arrays: dict, meta: dict) -> Path:
        """Store the finished run (:meth:`Store.write`, which removes this folder); its path."""
        store = self._store if self._store is not None else Store(self.path.parent.parent)
        return store.write(self.config, arrays, meta)

    def __repr__(self) -> str:
        return f"PartialRun({str(self.path)!r}, done={self.done}, total={self.total})"


class Store:
    """A results root. All paths derive from ``root / experiment / run_id``."""

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT):
        self.root = Path(root)

    def run_dir(self, experiment: str, rid: str) -> Path:
        return self.root / experiment / rid

    def partial_dir(self, experiment: str, rid: str) -> Path:
        return self.root / experiment / f"{PARTIAL}{rid}"

    # ---- writing -----------------------------------------------------------------------
    def write(self, config: dict, arrays: dict, meta: dict) -> Path:
        """Write one run atomically and return its directory. ``meta`` is completed with
        versions, machine and the run id. An existing complete copy wins (returned as is).
        The run's partial folder (``.partial-<id>``, :meth:`partial`), if any, is removed once
        the complete run is in place."""
        rid = run_id(config)
        final = self.run_dir(config["experiment"], rid)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{rid}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            buf = io.BytesIO()
            np.savez(buf, **_to_numpy(arrays))
            meta = {**meta, "run_id": rid, "versions": _versions(), "machine": machine_info(),
                    "written_utc": utc_now()}
            _write(tmp / "config.json", json.dumps(config, indent=1, sort_keys=True).encode())
            _write(tmp / "arrays.npz", buf.getvalue())
            _write(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True, default=str).encode())
            _write(tmp / MARKER, json.dumps({"sha256": _checksum(tmp), "files": list(FILES)}).encode())
            _fsync_dir(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                if self.read(final, repair=False) is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process stored the same run first
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        partial = self.partial_dir(config["experiment"], rid)
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        return final

    # ---- partial runs --------------------------------------------------------------------
    def partial(self, config: dict) -> PartialRun:
        """The partial-run folder of the run ``config`` (created with its ``config.json`` if
        new; an existing one, e.g. to resume, is kept as it is): a :class:`PartialRun` to
        :meth:`~PartialRun.update` as the run goes and :meth:`~PartialRun.finish` at the end."""
        path = self.partial_dir(config["experiment"], run_id(config))
        return PartialRun(path, config, store=self, write=True)

    def read_partial(self, path: Path) -> PartialRun | None:
        """The partial run at ``path`` (a ``.partial-<id>`` folder whose config.json reads and
        hashes to ``<id>``), or None. Read-only."""
        path = Path(path)
        if not path.name.startswith(PARTIAL) or not path.is_dir():
            return None
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(config, dict) or run_id(config) != path.name[len(PARTIAL):]:
            return None
        return PartialRun(path, config, store=self)

    def partial_runs(self, experiment: str) -> list[PartialRun]:
        """The partial runs of ``experiment`` (runs computing now, or interrupted), sorted by id.
        Read-only: a folder that does not read (no config yet, edited) is left out."""
        d = self.root / experiment
        if not d.is_dir():
            return []
        out = [self.read_partial(p) for p in sorted(d.glob(f"{PARTIAL}*"))]
        return [r for r in out if r is not None]

    # ---- reading -----------------------------------------------------------------------
    @staticmethod
    def invalid_reason(path: Path) -> str | None:
        """Why ``path`` is not a valid run (missing marker, missing or unreadable file, bad
        checksum, a config that does not hash to the folder's name, an arrays file that does not
        open), or None. Never raises for a bad run."""
        path = Path(path)
        if path.name.startswith(PARTIAL):
            return "a partial run (still computing or interrupted; Store.partial_runs lists it), not a stored run"
        marker = path / MARKER
        try:
            if not marker.is_file():
                return "no COMPLETE marker (interrupted write)"
            for name in FILES:
                if not (path / name).is_file():
                    return f"missing {name}"
            try:
                expected = json.loads(marker.read_text())["sha256"]
            except (ValueError, KeyError, TypeError):
                return "unreadable COMPLETE marker"
            if _checksum(path) != expected:
                return "checksum mismatch (files changed or corrupt)"
            try:
                config = json.loads((path / "config.json").read_text())
                json.loads((path / "meta.json").read_text())
            except ValueError:
                return "unreadable JSON in config.json or meta.json"
            if not isinstance(config, dict) or run_id(config) != path.name:
                return "its config does not hash to the folder name (renamed or edited run)"
            return _npz_problem(path / "arrays.npz")
        except OSError as e:
            return f"unreadable: {e.strerror or e} ({Path(e.filename).name if e.filename else path.name})"

    def read(self, path: Path, repair: bool = False) -> Run | None:
        """The run at ``path`` if it exists and is valid; otherwise None. Nothing on disk is
        touched unless ``repair`` (only the runner, which then recomputes the run): an invalid
        directory is then moved to ``.corrupt/``."""
        path = Path(path)
        if not path.is_dir():
            return None
        why = self.invalid_reason(path)
        if why is None:
            try:
                config = json.loads((path / "config.json").read_text())
                meta = json.loads((path / "meta.json").read_text())
                return Run(path, config, meta)
            except (OSError, ValueError) as e:  # changed since problem() looked
                why = f"unreadable: {e}"
        if repair and not path.name.startswith(PARTIAL):  # a partial run is not corrupt: never moved
            self.quarantine(path, why)
        return None

    def quarantine(self, path: Path, why: str) -> Path | None:
        """Move an invalid run to ``.corrupt/`` (a unique name per process, so concurrent
        runners never collide); None when another process moved it first. A partial run
        (``.partial-<id>``) is never moved (None)."""
        if Path(path).name.startswith(PARTIAL):
            return None
        dest = path.parent / ".corrupt" / f"{path.name}.{int(time.time() * 1000)}.{os.getpid()}.{secrets.token_hex(2)}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return None  # another process quarantined (or rewrote) it first
        except OSError as e:
            raise EoslabError(f"run {path} is invalid ({why}) and cannot be moved aside: {e.strerror or e}; "
                              f"remove it by hand") from None
        try:
            (dest / "REASON").write_text(why + "\n")
        except OSError:
            pass
        warnings.warn(f"run {path} is invalid ({why}); moved to {dest} and it will be recomputed", stacklevel=2)
        return dest

    def clean_stale_tmp(self, experiment: str) -> int:
        """Remove this host's temporary directories left by dead processes (a killed run).
        Those of live processes or other hosts (shards on a shared file system) are kept."""
        d = self.root / experiment
        n = 0
        if not d.is_dir():
            return 0
        host = socket.gethostname()
        for p in d.glob(".tmp-*"):
            parts = p.name[len(".tmp-"):].split(".")
            if len(parts) < 4 or ".".join(parts[1:-2]) != host:
                continue
            try:
                pid = int(parts[-2])
                os.kill(pid, 0)
                continue  # alive
            except ProcessLookupError:
                pass
            except (ValueError, PermissionError):
                continue
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        return n

    def runs(self, experiment: str, repair: bool = False, skipped: list | None = None) -> list[Run]:
        """Every valid run of ``experiment`` (any mode). Invalid ones are left where they are
        (appended to ``skipped`` as ``(path, why)`` when given), or quarantined if ``repair``."""
        d = self.root / experiment
        if not d.is_dir():
            return []
        out = []
        for p in sorted(d.iterdir()):
            if p.is_dir() and not p.name.startswith("."):
                r = self.read(p, repair=repair)
                if r is not None:
                    out.append(r)
                elif skipped is not None:
                    skipped.append((p, self.invalid_reason(p) or "config does not match the directory"))
        return out

    def find(self, ref: str) -> Run:
        """A run by path, id or unique id prefix (searched under every experiment)."""
        p = Path(ref)
        if p.is_dir() and (p / "config.json").exists():
            run = self.read(p, repair=False)
            if run is None:
                raise EoslabError(f"{p} is not a valid run: {self.invalid_reason(p)}")
            return run
        # an id is hexadecimal: anything else ("", "*", "5*", "/") would be a glob pattern matching
        # some other run, or none, or (``**``) a glob error
        if not re.fullmatch(r"[0-9a-fA-F]+", str(ref)):
            raise EoslabError(f"no run {str(ref)!r} under {self.root}: give a run id, a unique prefix of one, or a "
                              "run folder")
        hits = [q for q in self.root.glob(f"*/{str(ref).lower()}*") if q.is_dir() and not q.name.startswith(".")]
        if not hits:
            raise EoslabError(f"no run '{ref}' under {self.root}")
        if len(hits) > 1:
            raise EoslabError(f"run prefix '{ref}' is ambiguous: {', '.join(sorted(h.name for h in hits)[:5])}")
        run = self.read(hits[0], repair=False)
        if run is None:
            raise EoslabError(f"{hits[0]} is not a valid run: {self.invalid_reason(hits[0])}")
        return run


# ---- analysis ------------------------------------------------------------------------------
def _flatten_param(name, value) -> dict:
    if isinstance(value, list):
        return {f"{name}[{i}]": v for i, v in enumerate(value)}
    return {name: value}


def _is_run_dir(p: Path) -> bool:
    return p.is_dir() and any((p / n).exists() for n in (*FILES, MARKER))


def folder_kind(path: str | os.PathLike) -> str:
    """What ``path`` is: ``"run"`` (a run folder, valid or not), ``"experiment"`` (holds run
    folders), ``"root"`` (a results root: holds experiment folders) or ``"empty"`` (a folder with
    none of those). An error if it is not a folder."""
    path = Path(path)
    if not path.is_dir():
        raise EoslabError(f"{path}: no such results folder")
    if _is_run_dir(path):  # a .partial-<id> folder too: load() then says what it is
        return "run"
    children = [c for c in sorted(path.iterdir()) if c.is_dir() and not c.name.startswith(".")]
    if any(_is_run_dir(c) for c in children):
        return "experiment"
    if any(_is_run_dir(g) for c in children for g in c.iterdir() if not g.name.startswith(".")):
        return "root"
    return "empty"


def _read_run_folder(path: Path) -> Run:
    if path.name.startswith(PARTIAL):
        raise EoslabError(f"{path} is a partial run (still computing or interrupted), not a stored run: read it "
                          f"with Store({str(path.parent.parent)!r}).partial_runs({path.parent.name!r})")
    run = Store(path.parent).read(path)
    if run is None:
        raise EoslabError(f"{path} is not a valid run: {Store.invalid_reason(path) or 'config does not hash to its name'}")
    return run


def _warn_skipped(skipped) -> None:
    for p, why in skipped:
        warnings.warn(f"skipped invalid run {p} ({why}); left in place (`eoslab reproduce` recomputes it)",
                      stacklevel=3)


def _run_frame(pd, run: Run):
    arrays = {k: v for k, v in run.arrays.items() if v.ndim >= 1}
    if not arrays:
        df = pd.DataFrame([run.scalars()])
    else:
        T = max(v.shape[0] for v in arrays.values())
        cols = {}
        for k, v in arrays.items():
            if v.shape[0] != T:
                continue
            if v.ndim == 1:
                cols[k] = v
            else:
                flat = v.reshape(T, -1)
                for j in range(flat.shape[1]):
                    cols[f"{k}[{j}]"] = flat[:, j]
        df = pd.DataFrame(cols)
    df.attrs["params"] = run.params
    df.attrs["run_id"] = run.id
    df.attrs["scalars"] = run.scalars()
    return df


def _experiment_rows(store: Store, name: str, skipped: list) -> list[dict]:
    rows = []
    for r in store.runs(name, skipped=skipped):
        row = {"experiment": r.config.get("experiment", name), "run_id": r.id}
        for k, v in r.params.items():
            row.update(_flatten_param(k, v))
        row.update(r.scalars())
        row["mode"] = r.meta.get("mode")  # the mode that computed it (a run can serve both)
        row["wall_s"] = r.meta.get("wall_s")
        rows.append(row)
    return rows


def load(path: str | os.PathLike):
    """Load stored results for analysis as a :class:`pandas.DataFrame` (needs pandas:
    ``pip install 'eoslab[analysis]'``). Read-only: nothing under ``path`` is created, moved or
    deleted; an invalid run is skipped with a warning naming it and why.

    * a results root (the ``--runs`` folder, default ``./eoslab-runs``): one row per valid run of
      every experiment, as below, the column ``experiment`` telling them apart;
    * an experiment folder (``<root>/<experiment>``): one row per valid run: ``experiment``,
      ``run_id``, every parameter (list parameters split into ``name[i]``), every scalar result,
      ``mode`` and ``wall_s``;
    * a sweep folder (``eoslab sweep``; holds ``sweep.json``): the whole sweep as one
      :class:`xarray.Dataset` with the sweep's axes as dimensions
      (:func:`eoslab.experiments.sweeps.sweep_dataset`);
    * a run folder: one row per step of its per-step arrays (those whose first axis has the
      largest length T; ``(T, k)`` arrays become columns ``name[0] … name[k-1]``), with the
      run's parameters in ``DataFrame.attrs["params"]`` and its scalars in ``attrs["scalars"]``.

    Dependency-free access: :meth:`Store.read` / :attr:`Run.arrays` give NumPy arrays.
    """
    from eoslab.experiments.sweeps import is_sweep_folder, sweep_dataset

    if is_sweep_folder(path):
        return sweep_dataset(path)
    try:
        import pandas as pd
    except ImportError:
        raise EoslabError("eoslab.load needs pandas: pip install 'eoslab[analysis]' (or use "
                          "eoslab.experiments.store.Store(root).runs(name) for NumPy arrays)") from None
    path = Path(path)
    what = folder_kind(path)
    if what == "run":
        return _run_frame(pd, _read_run_folder(path))
    skipped: list = []
    if what == "experiment":
        rows = _experiment_rows(Store(path.parent), path.name, skipped)
    elif what == "root":
        store = Store(path)
        rows = []
        for c in sorted(path.iterdir()):
            if c.is_dir() and not c.name.startswith("."):
                rows += _experiment_rows(store, c.name, skipped)
    else:
        raise EoslabError(f"{path}: no runs here (give a results root such as ./eoslab-runs, an experiment "
                          "folder under it, or a run folder)")
    _warn_skipped(skipped)
    if not rows:
        raise EoslabError(f"{path}: no valid runs ({len(skipped)} invalid, left in place)")
    return pd.DataFrame(rows)


# ---- a user's own results: trajectories of gd / train / any run ------------------------------
def jsonable(value):
    """A parameter value as JSON (numbers, strings, None, short numeric lists), or an error."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    a = np.asarray(value)
    if a.ndim == 0 and a.dtype.kind in "biuf":
        return a.item()
    if a.ndim == 1 and a.dtype.kind in "biuf" and a.size <= 64:
        return a.tolist()
    raise EoslabError(f"parameter value {value!r} cannot be stored (numbers, strings, short lists)")


_jsonable = jsonable


def save_trajectory(traj: dict, root: str | os.PathLike = DEFAULT_ROOT, name: str = "trajectories", *,
                    params: dict | None = None, kind: str = "user", dims: dict | None = None,
                    coords: Sequence[str] = ()) -> Path:
    """Store a trajectory (the dict of arrays of :func:`eoslab.dynamics.gd`, ``train``,
    ``gd_output``, a sweep's batched output …) as one run of experiment ``name`` under ``root``:
    atomic, checksummed, identified by ``name``, ``kind`` and ``params`` (e.g. ``lr``, ``steps``,
    ``seed``: what makes the run; saving the same again keeps the first copy). Non-numeric
    entries of ``traj`` (strings, None) are kept in ``meta.json``. Returns the run folder, which
    :func:`load` / :func:`load_dataset` read back.

    ``dims`` names the axes of arrays for :func:`load_dataset` (``{"theta0": ("init", "coord")}``;
    unnamed arrays get ``step`` / ``eig`` / ``<name>_dim<i>``); ``coords`` lists the 1-d arrays
    that become coordinates of their dimension (``"lr"`` along ``lr``) instead of variables."""
    params = {k: _jsonable(v) for k, v in (params or {}).items()}
    params.setdefault("seed", 0)
    arrays, extra = {}, {}
    for k, v in traj.items():
        a = np.asarray(v) if not isinstance(v, (str, type(None))) else None
        if a is not None and a.dtype != object and a.dtype.kind in "biufcU":
            arrays[k] = a
        else:
            extra[k] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
    if not arrays:
        raise EoslabError("save_trajectory: the trajectory holds no numeric arrays")
    dims = {k: list(v) for k, v in (dims or {}).items() if k in arrays}
    for k, d in dims.items():
        if len(d) != arrays[k].ndim:
            raise EoslabError(f"save_trajectory: dims of {k!r} name {len(d)} axes, the array has {arrays[k].ndim}")
    for k in coords:
        if k not in arrays or arrays[k].ndim != 1:
            raise EoslabError(f"save_trajectory: coordinate {k!r} must be a stored 1-d array")
    meta = {"mode": "user", "seed": params["seed"], "extra": extra}
    if dims:
        meta["dims"] = dims
    if coords:
        meta["coords"] = list(coords)
    config = run_config(name, kind, params)
    return Store(root).write(config, arrays, meta)


def run_dataset(run: Run):
    """One run as an :class:`xarray.Dataset`: the axes named at save time (``meta["dims"]``,
    ``meta["coords"]``, see :func:`save_trajectory`) and, for the others, the sweeps' convention
    (:func:`eoslab.experiments.sweeps.run_dataset`: ``step``, ``eig``, ``<name>_dim<i>``)."""
    import xarray as xr

    from eoslab.experiments.sweeps import run_dataset as guessed

    named = run.meta.get("dims") or {}
    coord_names = run.meta.get("coords") or []
    if not named and not coord_names:
        return guessed(run)
    arrays = run.arrays
    rest = {k: v for k, v in arrays.items() if k not in named}
    base = guessed(dataclasses.replace(run, _arrays=rest)) if rest else xr.Dataset(attrs={"run_id": run.id})
    data = {k: (tuple(named[k]), arrays[k]) for k in named}
    ds = base.assign(data) if data else base
    sizes = dict(ds.sizes)
    ds = ds.assign_coords({k: (k if k in sizes else ds[k].dims, ds[k].values) for k in coord_names if k in ds})
    ds.attrs.update({"run_id": run.id, "params": json.dumps(run.params)})
    return ds


def load_dataset(path: str | os.PathLike):
    """Stored results as an :class:`xarray.Dataset` (needs xarray: ``pip install 'eoslab[analysis]'``).
    Read-only, like :func:`load`.

    * a run folder: its arrays with dimensions ``step`` (first axis of the per-step arrays) and
      ``eig`` (second axis of ``*_eigs`` / ``*_residuals``), scalars as 0-d variables, the run's
      parameters in ``attrs["params"]`` (JSON), ``attrs["run_id"]``, ``attrs["experiment"]`` and the
      run's own attributes (a stored training's ``optimizer``, ``lr`` and ``edge``);
    * an experiment folder: its valid runs stacked along a dimension ``run`` (coordinate: the
      run id; every parameter a coordinate along ``run``, named ``param_<name>`` where a result has
      its name; runs of different lengths NaN-padded);
    * a sweep folder (``eoslab sweep``): the sweep with its axes as dimensions.
    """
    try:
        import xarray as xr
    except ImportError:
        raise EoslabError("eoslab.load_dataset needs xarray: pip install 'eoslab[analysis]'") from None
    from eoslab.experiments.sweeps import is_sweep_folder, sweep_dataset

    path = Path(path)
    if is_sweep_folder(path):
        return sweep_dataset(path)
    what = folder_kind(path)
    if what == "run":
        run = _read_run_folder(path)
        ds = run_dataset(run)
        ds.attrs["experiment"] = run.config.get("experiment", path.parent.name)
        extra = run.meta.get("attrs")  # e.g. a stored training's optimizer, η and edge
        if isinstance(extra, dict):
            ds.attrs.update({k: v for k, v in extra.items() if isinstance(v, (bool, int, float, str))})
        return ds
    if what != "experiment":
        raise EoslabError(f"{path}: give an experiment folder, a run folder or a sweep folder "
                          f"(this is a {what} folder)")
    skipped: list = []
    runs = Store(path.parent).runs(path.name, skipped=skipped)
    _warn_skipped(skipped)
    if not runs:
        raise EoslabError(f"{path}: no valid runs ({len(skipped)} invalid, left in place)")
    ds = xr.concat([run_dataset(r) for r in runs], dim="run", join="outer", fill_value=np.nan,
                   combine_attrs="drop")
    coords = {"run": [r.id for r in runs]}
    for k in sorted({k for r in runs for k in r.params}):
        vals = [r.params.get(k) for r in runs]
        if all(isinstance(v, (int, float, bool, str)) for v in vals):
            # a parameter named like a result (a training's `loss` = "mse") must not replace it
            coords[f"param_{k}" if k in ds.data_vars else k] = ("run", np.asarray(vals))
    ds = ds.assign_coords(coords)
    ds.attrs.update({"experiment": path.name, "runs": len(runs)})
    return ds
