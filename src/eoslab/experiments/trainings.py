"""Trainings kept in the results store as they go: ``eoslab train --runs ROOT``.

A training is one run of the experiment ``train`` (``<root>/train/<run id>/``), identified by the
parameters that define it (model, data, optimizer and its hyperparameters, steps, tracking
options, seed, dtype): the same parameters map to the same run, and storing it again keeps the
first copy. While it trains, its partial run ``<root>/train/.partial-<run id>/`` holds the
per-step arrays so far and a checkpoint every ``checkpoint_every`` steps
(:meth:`eoslab.experiments.store.Store.partial`, :func:`eoslab.dynamics.train.train`); an
interrupted training continues from it bit-identically (``resume=True``), and the folder is removed
once the finished run is stored.

The stored run holds the trajectory's per-step arrays (:data:`eoslab.dynamics.train.TRAIN_KEYS`),
the numeric scalars of :func:`eoslab.dynamics.train.summarize` that are not per-step keys
(``final_loss``, ``max_sharpness``, ``crossings``, …), and in ``meta.json`` the trajectory's
metadata (``train``: η, optimizer, hyperparameters, wall time, ``resumed_from``), the summary and
``attrs`` (optimizer, η, edge: the attributes :func:`eoslab.load_dataset` puts on the Dataset).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from eoslab.experiments.store import PartialRun, Run, Store, jsonable, run_config, run_id

EXPERIMENT = "train"
KIND = "cli.train"

#: Summary entries that are not results of the run (kept in meta.json only).
_NOT_RESULTS = ("seconds", "lr", "steps", "batch_size")


@dataclasses.dataclass
class Lookup:
    """What the store holds for one training: its ``config``, the finished ``run`` (or None)
    and its ``partial`` run (None when there is none or it holds no checkpoint yet)."""

    store: Store
    config: dict
    run: Run | None
    partial: PartialRun | None

    @property
    def partial_path(self):
        return self.store.partial_dir(self.config["experiment"], self.config_id)

    @property
    def config_id(self) -> str:
        return run_id(self.config)


def lookup(root: str | os.PathLike, params: dict, experiment: str = EXPERIMENT) -> Lookup:
    """The store's state for the training ``params`` (read-only; nothing is created)."""
    store = Store(root)
    params = {k: jsonable(v) for k, v in params.items() if v is not None}  # "not given" (as cli.save_run)
    params.setdefault("seed", 0)
    config = run_config(experiment, KIND, params)
    look = Lookup(store, config, None, None)
    look.run = store.read(store.run_dir(experiment, look.config_id))
    partial = store.read_partial(look.partial_path)
    if partial is not None and partial.read_checkpoint() is not None:
        look.partial = partial
    return look


def trajectory(run: Run):
    """A stored training as a :class:`eoslab.dynamics.train.Trajectory` (its per-step arrays,
    with the training's metadata in ``.meta``)."""
    from eoslab.dynamics.train import Trajectory

    return Trajectory({k: v for k, v in run.arrays.items() if v.ndim >= 1}, run.meta.get("train", {}))


class _Saying:
    """The partial run, telling ``on_checkpoint(done, total)`` after each checkpoint."""

    def __init__(self, writer, on_checkpoint):
        self.writer, self.on_checkpoint, self.path = writer, on_checkpoint, writer.path

    def update(self, arrays, done, total, checkpoint=None):
        self.writer.update(arrays, done, total, checkpoint)
        if checkpoint is not None:
            self.on_checkpoint(done, total)

    def read_checkpoint(self):
        return self.writer.read_checkpoint()


def train_stored(look: Lookup, problem, *, resume: bool = False, checkpoint_every: int | None = 100,
                 on_checkpoint=None, **train_kw):
    """Train ``problem`` (:func:`eoslab.dynamics.train.train` with ``train_kw``) keeping the partial
    run of ``look`` up to date, checkpointed every ``checkpoint_every`` steps (rounded up to chunk
    boundaries), continuing from its last checkpoint if ``resume``; then store the finished run
    (which removes the partial run). ``on_checkpoint(done, total)`` is called after each
    checkpoint. Returns ``(trajectory, final_params, run_folder)``."""
    from eoslab.dynamics.train import summarize, train

    writer = look.store.partial(look.config)
    saver = writer if on_checkpoint is None else _Saying(writer, on_checkpoint)
    traj, params = train(problem, checkpoint=saver, checkpoint_every=checkpoint_every, resume=resume, **train_kw)
    op = train_kw.get("track", ("hessian",))
    op = None if "hessian" in op else (op[0] if op else "hessian")
    s = summarize(traj, op)
    arrays = dict(traj)
    for k, v in s.items():
        if k not in arrays and k not in _NOT_RESULTS and isinstance(v, (bool, int, float)):
            arrays[k] = np.asarray(v)
    attrs = {"optimizer": traj.meta.get("optimizer"), "lr": traj.meta.get("lr"), "edge": s.get("edge"),
             "quantity": traj.meta.get("quantity")}
    meta = {"mode": "cli", "seed": look.config["params"].get("seed", 0), "wall_s": traj.meta.get("seconds"),
            "train": traj.meta, "summary": s, "attrs": attrs}
    path = writer.finish(arrays, meta)
    return traj, params, path
