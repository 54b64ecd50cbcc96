"""Sweeps on a Dask LocalCluster (loopback only): a worker killed mid-sweep, two sweeps at
once on one store, and the numbers against a serial run."""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dask.distributed")

from eoslab.experiments.runner import Shard, execute  # noqa: E402
from eoslab.experiments.store import Store, run_id  # noqa: E402
from eoslab.experiments.sweeps import load_sweep, run_sweep  # noqa: E402
from toy_kind import GD_SWEEP  # noqa: E402

TESTS = Path(__file__).parent

DELAY = "0.4"  # seconds per run on the workers, so a worker can be killed while it computes


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client, LocalCluster

    env = {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "EOSLAB_TOY_DELAY": DELAY}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the nannies (and the workers they restart) inherit this
    try:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                               host="127.0.0.1")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def _sweep(tmp_path, name, seeds):
    p = tmp_path / f"{name}.toml"
    p.write_text(GD_SWEEP.format(name=name, seeds=list(seeds)))
    return load_sweep(p)


def _check_store(folder: Path, rids: list[str]) -> None:
    """Every run of the sweep present exactly once and valid, nothing else but the manifest."""
    finals = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert finals == sorted(rids)
    for r in rids:
        assert Store.invalid_reason(folder / r) is None
        run = Store(folder.parent).read(folder / r)
        assert run is not None and run_id(run.config) == r
    assert not (folder / ".corrupt").exists()


def _serial(tmp_path, exp):
    res = execute(exp, "full", Store(tmp_path / "serial"))
    return {pr.rid: pr.run.arrays for pr in res}


@pytest.mark.slow  # run by .ci/run on its own line
def test_worker_killed_mid_sweep(client, tmp_path):
    exp = _sweep(tmp_path, "kill", range(3))  # 6 runs of 0.4 s on 2 workers
    folder = tmp_path / "runs" / "kill"
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("res", run_sweep(exp, tmp_path / "runs", executor="dask",
                                                                        dask=client.scheduler.address)))
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline and not (folder.is_dir() and any(
            p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())):
        time.sleep(0.05)
    os.kill(sorted(pids)[0], signal.SIGKILL)  # both workers are busy: one task is lost with it
    t.join(120)
    res = out["res"]
    assert res.missing == 0
    Store(tmp_path / "runs").clean_stale_tmp("kill")  # the killed worker's temporary folder, if any
    _check_store(folder, [pr.rid for pr in res.planned])
    assert not list(folder.glob(".tmp-*"))
    assert {pr.run.meta["executor"] for pr in res.planned} == {"dask"}
    ref = _serial(tmp_path, exp)  # bit for bit the numbers of a serial run
    for pr in res.planned:
        for k, a in ref[pr.rid].items():
            np.testing.assert_array_equal(pr.run.arrays[k], a, strict=True)


def test_two_sweeps_at_once_on_one_store(client, tmp_path):
    """Two Dask clients and a `--shard 0/2` job on the same grid at once, plus a reader polling
    the store: no run lost, none duplicated, no half-written run ever visible."""
    exp = _sweep(tmp_path, "both", range(3))
    root = tmp_path / "runs"
    folder = root / "both"
    seen_bad, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.is_dir() and not p.name.startswith(".") and Store.invalid_reason(p) is not None:
                        seen_bad.append((p.name, Store.invalid_reason(p)))
            time.sleep(0.01)

    results = {}
    threads = [threading.Thread(target=reader),
               threading.Thread(target=lambda: results.setdefault("dask", run_sweep(
                   exp, root, executor="dask", dask=client.scheduler.address))),
               threading.Thread(target=lambda: results.setdefault("dask2", run_sweep(
                   exp, root, executor="dask", dask=client.scheduler.address))),
               threading.Thread(target=lambda: results.setdefault("shard", run_sweep(exp, root, shard=Shard(0, 2))))]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join(120)
    stop.set()
    threads[0].join()
    assert not seen_bad
    rids = [pr.rid for pr in results["dask"].planned]
    assert results["dask"].missing == 0 and results["dask2"].missing == 0
    assert all(pr.run is not None for pr in results["shard"].planned if Shard(0, 2).owns(pr.rid))
    _check_store(folder, rids)
    again = run_sweep(exp, root)  # a third, serial pass finds everything done
    assert [pr.run.meta["written_utc"] for pr in again.planned] == [
        pr.run.meta["written_utc"] for pr in results["dask"].planned]


def test_a_task_per_chunk_for_kinds_that_vectorise(client, tmp_path):
    """A kind with chunk = 3: one Dask task per chunk of the in-process runner (its runs stored
    with chunk_size 3, 3, 2), every run stored once and equal to a serial run bit for bit."""
    p = tmp_path / "chunked.toml"
    p.write_text(GD_SWEEP.format(name="chunked", seeds=list(range(4))).replace('"test.gd"', '"test.gd3"'))
    exp = load_sweep(p)
    res = run_sweep(exp, tmp_path / "runs", executor="dask", dask=client.scheduler.address)
    rids = [pr.rid for pr in res.planned]
    assert res.missing == 0 and len(rids) == 8
    _check_store(tmp_path / "runs" / "chunked", rids)
    assert sorted(pr.run.meta["chunk_size"] for pr in res.planned) == [2, 2, 3, 3, 3, 3, 3, 3]
    assert all(pr.run.meta["executor"] == "dask" for pr in res.planned)
    serial = _serial(tmp_path, exp)
    for pr in res.planned:
        for key, a in serial[pr.rid].items():
            np.testing.assert_array_equal(pr.run.arrays[key], a, strict=True)
