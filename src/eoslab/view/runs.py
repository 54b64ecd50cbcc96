"""Read-only browsing of a results root (the store of ``eoslab reproduce``, ``train``, sweeps).

Nothing here writes, moves or deletes: runs are read with ``Store.read(path, repair=False)``
(an invalid run is listed as invalid, never quarantined), and every path is resolved inside
the root (:func:`resolve`): ``..``, absolute paths and symbolic links that lead outside it
are refused.

Arrays are classified generically, so kinds this module does not know still show:

* per-step arrays: those whose first axis has the run's largest length T (as ``eoslab.load``);
  an array named ``step``, ``steps`` or ``t`` of that length gives the x axis (else ``lr``,
  ``lrs`` or ``eta``, for a run that is a sweep over the step size; else the row index);
* ``loss`` and ``*_loss`` → the loss panel;
* ``*_eigs`` (T,) or (T, k), names containing ``sharpness`` and the tracker's ``tracked`` →
  the spectrum panel, with error bars from ``*_residuals`` (for ``X_eigs``: ``X_residuals``,
  ‖Hv − λv‖, a rigorous error bar for a symmetric operator; for ``tracked``: ``residuals``) or
  ``<name>_se`` (a standard error, e.g. ``batch_sharpness_se``) of the same shape;
* ``eta_*_half*`` (η·λ/2, the edge at 1) → the ratio panel; without them, the first spectral
  curve divided by the edge goes there;
* ``edge`` → the optimizer's edge (dashed) on the spectrum panel; without it, 2/η from the
  run's parameter ``lr`` when it has one;
* a central-flow prediction: a loss-like or spectral name that contains ``central`` or ``flow``,
  or any such name in a run whose kind contains ``flow``/``central`` except ``gd_*`` and
  ``gf_*`` (the discrete GD and gradient-flow curves stored beside it) → drawn dashed;
* any other float per-step array → "other" (chosen by name in the page).

A run being written (the store's partial runs: ``<experiment>/.partial-<run id>/`` with the
rows so far and ``progress.json``, see ``docs/experiments.md``) is listed with its progress
(:attr:`Entry.progress`, from ``Store.partial_runs``), read as the store's
:class:`~eoslab.experiments.store.PartialRun` (the same :func:`series` apply) and referred to as
``"<experiment>/.partial-<run id>"``; once the final run is stored (and the folder removed) the
browser follows ``"<experiment>/<run id>"``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from eoslab.errors import EoslabError
from eoslab.experiments.store import FILES, MARKER, PARTIAL, Store

#: x-axis array names, in order of preference.
STEP_KEYS = ("step", "steps", "t")
#: x-axis arrays of runs that are sweeps over the step size inside one run (e.g. linear_net.threshold).
LR_KEYS = ("lr", "lrs", "eta")
#: Parameters shown as table columns when a run has them (others are in the details).
KEY_PARAMS = ("lr", "eps", "optimizer", "model", "D", "P", "width", "depth", "steps", "seed")


def resolve(root: str | os.PathLike, ref: str) -> Path:
    """The directory ``root / ref`` if it lies inside ``root`` after resolving ``..`` and links.

    ``ref`` is a relative path such as ``"<experiment>/<run id>"``. Absolute paths, ``..``
    components, NUL bytes and anything whose real path leaves the root raise
    :class:`EoslabError` (before touching the file system beyond ``realpath``)."""
    if not isinstance(ref, str) or not ref or "\x00" in ref:
        raise EoslabError(f"run reference must be a non-empty relative path, got {ref!r}")
    if os.path.isabs(ref) or ref.startswith(("/", "\\", "~")) or (len(ref) > 1 and ref[1] == ":"):
        raise EoslabError(f"run reference {ref!r} is absolute: only paths inside the results root are allowed")
    parts = ref.replace("\\", "/").split("/")
    if any(p in ("..", "") for p in parts):
        raise EoslabError(f"run reference {ref!r} has '..' or empty components: refused")
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(base / ref))
    if target != base and base not in target.parents:
        raise EoslabError(f"run reference {ref!r} leads outside the results root: refused")
    return target


def _inside(base: Path, p: Path) -> bool:
    real = Path(os.path.realpath(p))
    return base in real.parents


@dataclasses.dataclass(frozen=True)
class Entry:
    """One run directory of the root: ``ref`` = "<experiment>/<run id>"; ``problem`` is None
    for a valid run, else why it is not readable (listed, never repaired)."""

    ref: str
    experiment: str
    run_id: str
    problem: str | None
    stamp: tuple  # (mtime_ns, size) of its files: changes when the run changes
    #: For a run being written: (done, total, updated) from its progress.json; None for a stored run.
    progress: tuple | None = None

    @property
    def final_ref(self) -> str:
        """Where the run will be once stored (its own ref for a stored run)."""
        return f"{self.experiment}/{self.run_id}"


def _stamp(d: Path, names) -> tuple:
    """(mtime_ns, size) of each of ``names`` in ``d`` that exists: cheap (stat only), and it
    changes whenever a writer replaces one of them."""
    out = []
    for n in names:
        try:
            st = (d / n).stat()
            out.append((n, st.st_mtime_ns, st.st_size))
        except OSError:
            pass
    return tuple(out)


#: Validity of stored runs by (path, stamp): the checksum is recomputed only when a file changed.
_VALID: dict[tuple, str | None] = {}


def _invalid_reason(d: Path, stamp: tuple) -> str | None:
    key = (str(d), stamp)
    if key not in _VALID:
        if len(_VALID) > 10_000:
            _VALID.clear()
        _VALID[key] = Store.invalid_reason(d)
    return _VALID[key]


def scan(root: str | os.PathLike) -> list[Entry]:
    """Every run directory under ``root`` (``<root>/<experiment>/<run id>``) and every run being
    written (``<root>/<experiment>/.partial-<run id>``, with its progress; skipped once the
    final run exists), sorted by experiment and id; other hidden folders (``.corrupt``,
    ``.tmp-*``) are skipped. Read-only."""
    base = Path(os.path.realpath(root))
    if not base.is_dir():
        return []
    out = []
    for exp in sorted(base.iterdir()):
        if exp.name.startswith(".") or not exp.is_dir() or not _inside(base, exp):
            continue
        try:
            children = sorted(exp.iterdir())
        except OSError:
            continue
        stored = {d.name for d in children if not d.name.startswith(".")}
        for p in Store(base).partial_runs(exp.name):  # those whose config reads and hashes to the id
            if p.id in stored or not _inside(base, p.path):
                continue
            stamp = _stamp(p.path, ("progress.json", "arrays.npz", "config.json"))
            out.append(Entry(f"{exp.name}/{p.path.name}", exp.name, p.id, None, stamp,
                             (p.done, p.total, p.updated or "")))
        for d in children:
            if d.name.startswith(".") or not d.is_dir() or not _inside(base, d):
                continue
            if not (d / "config.json").exists() and not (d / MARKER).exists():
                continue
            stamp = _stamp(d, (*FILES, MARKER))
            if not stamp:
                continue
            out.append(Entry(f"{exp.name}/{d.name}", exp.name, d.name, _invalid_reason(d, stamp), stamp))
    return sorted(out, key=lambda e: (e.experiment, e.run_id, e.progress is not None))


def writing(root: str | os.PathLike) -> int:
    """How many runs are being stored now (the store's ``.tmp-*`` folders: a run appears whole
    once its writer renames the folder)."""
    base = Path(os.path.realpath(root))
    if not base.is_dir():
        return 0
    n = 0
    for exp in base.iterdir():
        if exp.is_dir() and not exp.name.startswith(".") and _inside(base, exp):
            n += sum(1 for d in exp.glob(".tmp-*") if d.is_dir())
    return n


def read(root: str | os.PathLike, ref: str):
    """The valid run at ``ref`` (a :class:`eoslab.experiments.store.Run`, or a
    :class:`PartialRun` for ``"<experiment>/.partial-<run id>"``), read without repair."""
    path = resolve(root, ref)
    if path.name.startswith(PARTIAL):
        run = Store(path.parent.parent).read_partial(path)
        if run is None:
            raise EoslabError(f"{ref} is not a run being written (stored since, removed, or its config does not read)")
        return run
    run = Store(path.parent.parent).read(path, repair=False)
    if run is None:
        raise EoslabError(f"{ref} is not a valid run: {Store.invalid_reason(path)}")
    return run


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v[:6]) + (", …" if len(v) > 6 else "") + "]"
    return str(v)


def table_row(root, entry: Entry) -> dict:
    """A row of the runs table: experiment, kind, id, key parameters, scalar outcomes (strings)."""
    row = {"ref": entry.ref, "experiment": entry.experiment, "run_id": entry.run_id[:10], "kind": "",
           "params": "", "outcomes": "", "steps": "", "status": "ok" if entry.problem is None else entry.problem}
    if entry.problem is not None:
        return row
    try:
        run = read(root, entry.ref)
        arrays = {} if entry.progress is not None else run.arrays  # a growing run's rows: not read here
    except (EoslabError, OSError, ValueError) as e:
        row["status"] = f"unreadable: {e}"
        return row
    row["kind"] = str(run.config.get("kind", ""))
    params = run.params
    shown = [k for k in KEY_PARAMS if k in params] + [k for k in sorted(params) if k not in KEY_PARAMS]
    row["params"] = ", ".join(f"{k}={_fmt(params[k])}" for k in shown[:8])
    if entry.progress is not None:
        done, total, updated = entry.progress
        row["steps"] = str(done)
        row["status"] = f"running {done}/{total}" if total is not None else "starting"
        row["outcomes"] = f"being written · updated {updated}" if updated else "being written"
        return row
    scal = {k: v.item() for k, v in arrays.items() if v.ndim == 0}
    row["outcomes"] = ", ".join(f"{k}={_fmt(v)}" for k, v in list(scal.items())[:6])
    T = _length(arrays)
    row["steps"] = str(T) if T else ""
    return row


def _length(arrays: dict) -> int:
    lens = [v.shape[0] for v in arrays.values() if v.ndim >= 1]
    return max(lens) if lens else 0


def _columns(a: np.ndarray) -> list[np.ndarray]:
    a = np.asarray(a, np.float64)
    return [a] if a.ndim == 1 else [c for c in a.reshape(a.shape[0], -1).T]


def _error_key(k: str, step: dict) -> str | None:
    """The array holding ``k``'s error bars: ``X_residuals`` for ``X_eigs``, ``residuals`` for
    ``tracked``, ``k_se`` or ``k_residuals`` otherwise (same shape required)."""
    low = k.lower()
    cands = [k[: -len("_eigs")] + "_residuals"] if low.endswith("_eigs") else []
    cands += ["residuals"] if low == "tracked" else []
    cands += [k + "_se", k + "_residuals"]
    return next((c for c in cands if c in step and step[c].shape == step[k].shape), None)


def series(run) -> dict:
    """Plot-ready per-step curves of a run, by the rules of this module's docstring.

    Returns ``{"x": (T,), "x_name": "step" or the step-size key, "loss": [(name, y)],
    "eigs": [(name, y, err or None)],
    "edge": y or None, "ratio": [(name, y)], "flow_loss": [(name, y)], "flow_eigs": [(name, y)],
    "other": [(name, y)]}`` with y (T,) float arrays (one entry per column of a (T, k) array,
    named ``key[j]``)."""
    arrays = run.arrays
    T = _length(arrays)
    step = {k: v for k, v in arrays.items() if v.ndim >= 1 and v.shape[0] == T and v.dtype.kind in "iuf"}
    x_name = next((k for k in STEP_KEYS + LR_KEYS if k in step and step[k].ndim == 1), None)
    x = np.asarray(step[x_name], np.float64) if x_name else np.arange(T, dtype=np.float64)
    out = {"x": x, "x_name": "step" if x_name in (None, *STEP_KEYS) else x_name, "loss": [], "eigs": [],
           "edge": None, "ratio": [], "flow_loss": [], "flow_eigs": [], "other": []}
    flow_kind = any(w in str(run.config.get("kind", "")).lower() for w in ("flow", "central"))
    errs = {k: _error_key(k, step) for k in step}
    used = set(STEP_KEYS) | {x_name} | {e for e in errs.values() if e}
    for k, v in step.items():
        if k in used or v.dtype.kind != "f":
            continue
        low = k.lower()
        cols = _columns(v)
        items = [(k if len(cols) == 1 else f"{k}[{j}]", c) for j, c in enumerate(cols)]
        spectral = low.endswith("_eigs") or "sharpness" in low or low in ("tracked", "eigs")
        lossy = "loss" in low.split("_")  # loss, gd_loss, avg_loss, gd_loss_smoothed
        flow = "central" in low or "flow" in low or (flow_kind and not low.startswith(("gd_", "gf_")))
        if flow and (lossy or spectral):
            out["flow_loss" if lossy else "flow_eigs"] += items
        elif lossy:
            out["loss"] += items
        elif spectral:
            ev = _columns(step[errs[k]]) if errs[k] else [None] * len(cols)
            out["eigs"] += [(n, c, e) for (n, c), e in zip(items, ev)]
        elif low.startswith("eta_") and "_half" in low:
            out["ratio"] += items
        elif low == "edge":
            out["edge"] = cols[0]
        else:
            out["other"] += items
    if out["edge"] is None:
        lr = run.params.get("lr")
        if not isinstance(lr, (int, float)) or not lr:  # a kind that derives η (stored as a scalar)
            a = arrays.get("lr")
            lr = float(a) if a is not None and a.ndim == 0 and a.dtype.kind == "f" else lr
        if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0:
            out["edge"] = np.full(T, 2.0 / lr)
    if out["edge"] is not None and out["eigs"] and not out["ratio"]:
        # The top tracked eigenvalue over the edge: runs at different step sizes on one scale.
        name, y, _ = out["eigs"][0]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["ratio"].append((f"{name} / edge", y / out["edge"]))
    for key in ("flow_eigs", "flow_loss", "loss", "ratio"):  # a curve stored twice is drawn once
        kept = []
        for item in out[key]:
            if not any(np.array_equal(item[1], k[1], equal_nan=True) for k in kept):
                kept.append(item)
        out[key] = kept
    return out


def details(run) -> str:
    """The run's config and metadata as indented JSON (for the details panel)."""
    meta = getattr(run, "meta", None)
    if meta is None:  # a run being written: its progress
        meta = {"progress": {"done": run.done, "total": run.total, "updated": run.updated}}
    return json.dumps({"config": run.config, "meta": {k: meta.get(k) for k in
                                                      ("mode", "progress", "wall_s", "started_utc", "written_utc",
                                                       "seed") if k in meta},
                       "arrays": {k: list(v.shape) for k, v in run.arrays.items()}}, indent=1, default=str)
