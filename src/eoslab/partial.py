"""A run that is still computing, kept on disk as it goes: the partial-run folder.

One folder holds what a run has produced so far; every file in it is rewritten atomically
(written to a temporary file in the same folder, fsynced, then ``os.replace``-d), so a reader
sees each file whole, old or new, never half-written::

    <folder>/
        config.json     the run's config (written once, when the folder is created; optional)
        arrays.npz      per-step arrays of steps 0 … done−1 (or a later update: rows ≥ done)
        progress.json   {"done": int, "total": int, "updated": "<UTC ISO 8601>"}, written last
        checkpoint.npz  (trainings) everything needed to resume bit-identically

The results store keeps such a folder at ``<root>/<experiment>/.partial-<run id>/`` while a
run computes and removes it once the finished run is stored
(:meth:`eoslab.experiments.store.Store.partial`); :func:`eoslab.dynamics.train.train` writes its
checkpoints into any object with :meth:`PartialFolder.update` and
:meth:`PartialFolder.read_checkpoint` (this class, or a folder path). Knows no model: the
foundation layer.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Protocol

import numpy as np

from eoslab.errors import EoslabError

CONFIG, ARRAYS, PROGRESS, CHECKPOINT = "config.json", "arrays.npz", "progress.json", "checkpoint.npz"


class Checkpointer(Protocol):
    """Where :func:`eoslab.dynamics.train.train` keeps a run as it goes."""

    def update(self, arrays: dict, done: int, total: int, checkpoint: dict | None = None) -> None: ...

    def read_checkpoint(self) -> dict | None: ...


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (every timestamp of the store and the runner)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically: a reader sees the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def read_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class PartialFolder:
    """The partial-run folder at ``path`` (created on the first write). ``config`` (a JSON
    dict) is written once, as ``config.json``, when given."""

    def __init__(self, path: str | os.PathLike, config: dict | None = None):
        self.path = Path(path)
        if config is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            if not (self.path / CONFIG).is_file():
                write_atomic(self.path / CONFIG, json.dumps(config, indent=1, sort_keys=True).encode())

    # ---- writing -------------------------------------------------------------------------
    def update(self, arrays: dict, done: int, total: int, checkpoint: dict | None = None) -> None:
        """Rewrite ``arrays.npz`` (per-step arrays of steps 0 … done−1), ``checkpoint.npz`` when
        given, then ``progress.json`` (last, so ``done`` never runs ahead of the arrays)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / ARRAYS, npz_bytes(arrays))
        if checkpoint is not None:
            write_atomic(self.path / CHECKPOINT, npz_bytes(checkpoint))
        write_atomic(self.path / PROGRESS, json.dumps({"done": int(done), "total": int(total),
                                                       "updated": utc_now()}).encode())

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # ---- reading (never changes anything) -------------------------------------------------
    def read_progress(self) -> dict | None:
        """``{"done", "total", "updated"}``, or None when nothing was written yet or it does not read."""
        try:
            p = json.loads((self.path / PROGRESS).read_text())
            return {"done": int(p["done"]), "total": int(p["total"]), "updated": str(p["updated"])}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def read_arrays(self) -> dict:
        """The per-step arrays written so far (empty dict if none yet)."""
        try:
            return read_npz(self.path / ARRAYS)
        except FileNotFoundError:
            return {}
        except Exception as e:  # noqa: BLE001 - numpy/zipfile raise many types for a bad archive
            raise EoslabError(f"{self.path / ARRAYS} does not read ({type(e).__name__}: {e})") from None

    def read_checkpoint(self) -> dict | None:
        """The last checkpoint's arrays, or None when there is none."""
        try:
            return read_npz(self.path / CHECKPOINT)
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise EoslabError(f"{self.path / CHECKPOINT} does not read ({type(e).__name__}: {e})") from None
