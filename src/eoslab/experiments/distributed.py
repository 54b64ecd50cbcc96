"""Runs as Dask tasks: one task per run (per chunk of runs for kinds that vectorise several
points in one call), written by the worker into the shared results store.

Needs the optional extra ``[dask]`` (``dask.distributed``); see ``docs/cluster.md``.

* **Where.** ``address=None`` starts a :class:`~dask.distributed.LocalCluster` of
  ``workers`` processes (default: one per core; one thread each: each run is already a
  vectorised JAX call that uses the core); ``address="tcp://HOST:PORT"`` uses the cluster of an
  existing scheduler (SLURM/PBS through ``dask-jobqueue``, a GPU node per worker, ...). The
  results root must be the same path on every worker (a shared file system).
* **Chunks.** A kind whose ``chunk`` is larger than 1 (e.g. ``networks.train`` when it batches
  trainings) gets one task per chunk of the in-process runner (:func:`~eoslab.experiments.runner.chunks`),
  so a worker trains the chunk's members in one call; otherwise one task per run.
* **Exactly once.** Each task computes its runs and writes each with
  :meth:`~eoslab.experiments.store.Store.write` (a temporary folder renamed into place), then
  returns its id. A task whose worker dies is re-run by the scheduler on another worker; a
  run already stored (by an earlier attempt, another sweep, a ``--shard`` job) is not
  recomputed, and if two copies finish the second rename fails and is dropped. The task key
  is the run id (of a chunk: its runs' ids), so two clients of one scheduler share the task
  instead of computing it twice.
* **Same numbers.** A task runs the kind on its one point in float64 mode, as
  :func:`eoslab.experiments.runner.execute` does, on the same chunks, so its arrays are those
  of a serial run (bit for bit for kinds whose arrays do not depend on the chunk).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import time
from pathlib import Path
from typing import Callable

from eoslab._precision import x64
from eoslab.errors import EoslabError
from eoslab.experiments.registry import get_kind
from eoslab.experiments.runner import PlannedRun, Shard, chunks, pending
from eoslab.experiments.schema import Experiment
from eoslab.experiments.store import Store, utc_now

#: How many times the scheduler may lose a task's worker before the sweep fails.
RETRIES = 3


def _require_distributed():
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise EoslabError("--dask needs dask.distributed: pip install 'eoslab[dask]'") from None


def compute_run(kind_name: str, module: str, point: dict, config: dict, meta: dict, root: str) -> str:
    """The task of one run: :func:`compute_chunk` of that run alone; returns its id."""
    return compute_chunk(kind_name, module, [point], [config], [meta], root)[0]


def compute_chunk(kind_name: str, module: str, points: list[dict], configs: list[dict], metas: list[dict],
                  root: str) -> list[str]:
    """The task: compute the runs of ``points`` that are not stored yet in one call of the kind
    and store each; returns their ids. ``module`` is imported first so that kinds registered
    outside eoslab's own package exist on the worker too."""
    from eoslab.experiments.registry import KINDS
    from eoslab.experiments.store import run_id

    if kind_name not in KINDS:
        importlib.import_module(module)
    kind = get_kind(kind_name)
    store = Store(root)
    rids = [run_id(c) for c in configs]
    todo = [i for i, (c, r) in enumerate(zip(configs, rids)) if store.read(store.run_dir(c["experiment"], r)) is None]
    if not todo:
        return rids
    t0, started = time.perf_counter(), utc_now()
    with x64():  # as the in-process runner (float32 networks keep float32)
        results = kind.run([dict(points[i]) for i in todo])
    wall = time.perf_counter() - t0
    if len(results) != len(todo):
        raise EoslabError(f"kind {kind.name}: run returned {len(results)} results for {len(todo)} points")
    import socket

    for i, arrays in zip(todo, results):
        store.write(configs[i], arrays, {**metas[i], "wall_s": wall / len(todo), "chunk_wall_s": wall,
                                         "chunk_size": len(todo), "started_utc": started, "executor": "dask",
                                         "worker_host": socket.gethostname(), "worker_pid": os.getpid()})
    return rids


def start_client(address: str | None = None, workers: int | None = None):
    """``(client, cluster)``: a client of the scheduler at ``address``, or of a new
    LocalCluster (``cluster`` is then returned for closing; None otherwise)."""
    _require_distributed()
    from dask.distributed import Client, LocalCluster

    if address is None:
        n = workers or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    try:
        return Client(address, timeout="20s"), None
    except (OSError, TimeoutError) as e:
        raise EoslabError(f"--dask {address}: cannot reach the Dask scheduler ({e})") from None


@contextlib.contextmanager
def session(enabled: bool, address: str | None = None, workers: int | None = None):
    """Yield a Dask client for the duration (None when not ``enabled``); a LocalCluster it
    started is closed at the end."""
    if not enabled:
        yield None
        return
    client, cluster = start_client(address, workers)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def execute_dask(exp: Experiment, mode: str, store: Store, *, address: str | None = None,
                 workers: int | None = None, shard: Shard = Shard(), client=None, resources: dict | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> list[PlannedRun]:
    """Compute the missing runs of ``exp`` owned by ``shard`` as Dask tasks (one per run, or per
    chunk of the in-process runner when the kind's ``chunk`` is larger than 1) and
    return the plan with every complete run attached (as :func:`eoslab.experiments.runner.execute`).

    ``client``: an existing :class:`dask.distributed.Client` (kept open); otherwise one is
    made from ``address`` / ``workers`` (:func:`start_client`) and closed at the end.
    ``resources``: worker resources each task needs, e.g. ``{"GPU": 1}`` (workers started
    with ``--resources GPU=1`` then run one run per GPU at a time)."""
    _require_distributed()
    from dask.distributed import as_completed

    kind, planned, todo, done, total = pending(exp, mode, store, shard, on_progress)
    if not todo:
        return planned
    root = str(Path(store.root).resolve())
    own = client is None
    cluster = None
    if own:
        client, cluster = start_client(address, workers)
    try:
        by_key = {}
        futures = []
        for chunk in chunks(kind, todo):
            metas = [{"experiment": exp.name, "kind": kind.name, "mode": mode, "seed": pr.point["seed"],
                      "config_file": str(exp.path)} for pr in chunk]
            if len(chunk) == 1:
                pr = chunk[0]
                f = client.submit(compute_run, kind.name, kind.run.__module__, pr.point, pr.config, metas[0], root,
                                  key=f"eoslab-run-{pr.rid}", retries=RETRIES, pure=False, resources=resources)
            else:
                key = hashlib.sha256(" ".join(pr.rid for pr in chunk).encode()).hexdigest()[:16]
                f = client.submit(compute_chunk, kind.name, kind.run.__module__, [pr.point for pr in chunk],
                                  [pr.config for pr in chunk], metas, root, key=f"eoslab-chunk-{key}",
                                  retries=RETRIES, pure=False, resources=resources)
            by_key[f.key] = chunk
            futures.append(f)
        for f in as_completed(futures):
            chunk = by_key[f.key]
            try:
                f.result()
            except Exception as e:  # noqa: BLE001 - name the run, keep the cause
                pr = chunk[0]
                what = f"run {pr.rid}" if len(chunk) == 1 else f"the chunk of {len(chunk)} runs from {pr.rid}"
                raise EoslabError(f"{what} of {exp.name} ({_describe(pr.point, exp, mode)}) failed on a "
                                  f"Dask worker: {type(e).__name__}: {e}") from e
            for pr in chunk:
                pr.run = store.read(store.run_dir(exp.name, pr.rid))
                if pr.run is None:
                    raise EoslabError(f"run {pr.rid} of {exp.name} was reported done but is not a valid run under "
                                      f"{root} (do the workers see the same results root?)")
            done += len(chunk)
            if on_progress:
                on_progress(done, total)
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
    return planned


def parse_resources(text: str | None) -> dict | None:
    """``"GPU=1,MEM=2"`` → ``{"GPU": 1.0, "MEM": 2.0}`` (None for None/empty)."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        name, eq, amount = item.partition("=")
        try:
            if not eq or not name.strip():
                raise ValueError
            out[name.strip()] = float(amount)
        except ValueError:
            raise EoslabError(f"--resources must look like NAME=AMOUNT[,NAME=AMOUNT...] (e.g. GPU=1), got {text!r}") \
                from None
        if not out[name.strip()] > 0:
            raise EoslabError(f"--resources: the amount of {name.strip()} must be > 0, got {amount!r}")
    return out


def _describe(point: dict, exp: Experiment, mode: str) -> str:
    axes = exp.swept(mode)
    return ", ".join(f"{a} = {point[a]!r}" for a in axes) or "the only point"
