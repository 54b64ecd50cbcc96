"""The results store: identity, atomic writes, validation on read, corruption repair, load."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import eoslab
from eoslab.errors import EoslabError
from eoslab.experiments.runner import execute, load_experiments, plan
from eoslab.experiments.store import Store, run_config, run_id

from toy_kind import write_config



def _toy(tmp_path, **kw):
    return load_experiments(write_config(tmp_path / "cfg", **kw).parent)[0]


def test_run_identity():
    a = run_config("x", "k", {"eps": 0.02, "seed": 0})
    assert run_id(a) == run_id(run_config("x", "k", {"seed": 0, "eps": 0.02}))  # key order irrelevant
    assert run_id(a) != run_id(run_config("x", "k", {"eps": 0.02, "seed": 1}))
    assert run_id(a) != run_id(run_config("x", "k", {"eps": 0.0200001, "seed": 0}))
    assert run_id(a) != run_id({**a, "eoslab_version": eoslab.__version__ + ".post1"})


def test_write_read_roundtrip_and_metadata(tmp_path):
    store = Store(tmp_path)
    cfg = run_config("exp", "k", {"seed": 3, "a": [1.0, 2.0]})
    arrays = {"x": np.arange(5.0), "flag": np.bool_(True), "m": np.float64(0.5)}
    path = store.write(cfg, arrays, {"seed": 3, "wall_s": 0.1})
    assert path == tmp_path / "exp" / run_id(cfg)
    assert sorted(p.name for p in path.iterdir()) == ["COMPLETE", "arrays.npz", "config.json", "meta.json"]
    assert not list((tmp_path / "exp").glob(".tmp-*"))
    run = store.read(path)
    np.testing.assert_array_equal(run.arrays["x"], arrays["x"])
    assert run.scalars() == {"flag": True, "m": 0.5}
    assert run.params == {"a": [1.0, 2.0], "seed": 3}
    assert run.meta["versions"]["numpy"] == np.__version__ and run.meta["machine"]["cpu_count"] == os.cpu_count()
    # Writing the same run again (e.g. a second shard) keeps the first copy.
    before = (path / "arrays.npz").stat().st_mtime_ns
    assert store.write(cfg, {"x": np.zeros(1)}, {}) == path
    assert (path / "arrays.npz").stat().st_mtime_ns == before and store.read(path).arrays["x"].size == 5
    with pytest.raises(EoslabError, match="numeric"):
        store.write(run_config("exp", "k", {"seed": 4}), {"s": np.array([{"a": 1}], dtype=object)}, {})
    # labels (e.g. an outcome per run) are stored as strings and read back without pickling
    labelled = store.write(run_config("exp", "k", {"seed": 5}), {"s": np.array(["eos", "converged"])}, {})
    assert store.read(labelled).arrays["s"].tolist() == ["eos", "converged"]


@pytest.mark.parametrize("damage", ["flip_byte", "no_marker", "truncate", "config_edit"])
def test_corrupt_run_is_detected_and_redone(tmp_path, damage):
    e = _toy(tmp_path, seeds=(0, 1, 2))
    store = Store(tmp_path / "runs")
    execute(e, "quick", store)
    victim = plan(e, "quick", store)[1].run
    good = victim.arrays["samples"].copy()
    f = victim.path / "arrays.npz"
    if damage == "flip_byte":
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "no_marker":
        (victim.path / "COMPLETE").unlink()
    elif damage == "truncate":
        f.write_bytes(f.read_bytes()[:100])
    else:
        c = json.loads((victim.path / "config.json").read_text())
        c["params"]["scale"] = 9.0
        (victim.path / "config.json").write_text(json.dumps(c))
    assert store.invalid_reason(victim.path) is not None
    assert store.read(victim.path) is None                  # never silently read ...
    assert victim.path.is_dir() and not (tmp_path / "runs" / "toy" / ".corrupt").exists()  # a read moves nothing
    progress = []
    with pytest.warns(UserWarning, match="is invalid"):     # said through `warnings`, not print
        execute(e, "quick", store, on_progress=lambda d, t: progress.append((d, t)))
    assert progress[0] == (2, 3)                             # ... but recomputed by the runner,
    quarantined = list((tmp_path / "runs" / "toy" / ".corrupt").iterdir())  # which quarantines the bad copy
    assert len(quarantined) == 1 and (quarantined[0] / "REASON").read_text()
    redone = store.read(victim.path)
    np.testing.assert_array_equal(redone.arrays["samples"], good)  # deterministic given the seed


def test_stale_tmp_of_dead_process_is_removed_live_one_kept(tmp_path):
    import socket
    import subprocess

    store = Store(tmp_path)
    d = tmp_path / "exp"
    d.mkdir()
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    host = socket.gethostname()
    dead = d / f".tmp-0000000000000000.{host}.{p.pid}.ab12"
    live = d / f".tmp-0000000000000001.{host}.{os.getpid()}.ab12"
    other = d / f".tmp-0000000000000002.some-other-host.{p.pid}.ab12"
    for x in (dead, live, other):
        x.mkdir()
    assert store.clean_stale_tmp("exp") == 1
    assert not dead.exists() and live.exists() and other.exists()


def test_find_and_show_errors(tmp_path):
    e = _toy(tmp_path, seeds=(0, 1))
    store = Store(tmp_path / "runs")
    execute(e, "quick", store)
    rid = plan(e, "quick", store)[0].rid
    assert store.find(rid[:8]).id == rid
    assert store.find(str(store.run_dir("toy", rid))).id == rid
    with pytest.raises(EoslabError, match="no run"):
        store.find("ffffffffffff")
    # not an id: a glob pattern matched some run (or, "**", was a glob error with a traceback)
    for ref in ("", "*", "**", f"{rid[0]}*", "/", "../toy"):
        with pytest.raises(EoslabError, match="no run .*give a run id"):
            store.find(ref)
    assert store.find(rid[:8].upper()).id == rid


def test_load_dataframe(tmp_path):
    pd = pytest.importorskip("pandas")
    e = _toy(tmp_path, seeds=(0, 1, 2))
    store = Store(tmp_path / "runs")
    execute(e, "quick", store)
    df = eoslab.load(tmp_path / "runs" / "toy")
    assert isinstance(df, pd.DataFrame) and len(df) == 3
    assert {"run_id", "seed", "scale", "n", "shift[0]", "shift[1]", "mean", "wall_s"} <= set(df.columns)
    for _, row in df.iterrows():
        x = np.random.default_rng(int(row["seed"])).normal(0, 1, 500)
        assert row["mean"] == pytest.approx(x.mean(), rel=1e-15)
    one = eoslab.load(tmp_path / "runs" / "toy" / df["run_id"][0])
    assert len(one) == 500 and "samples" in one.columns and one.attrs["params"]["n"] == 500


def _tree(root):
    """Every path under ``root`` with its bytes (files) or None (folders)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_load_is_read_only_on_every_kind_of_folder(tmp_path):
    """eoslab.load on a results root, an experiment folder, a run folder and a store with a
    corrupt run and a dead process's temporary folder: right answers, and the tree afterwards is
    byte-identical (nothing created, moved, renamed or deleted)."""
    pytest.importorskip("pandas")
    import socket
    import warnings

    e = _toy(tmp_path, seeds=(0, 1, 2))
    root = tmp_path / "runs"
    store = Store(root)
    execute(e, "quick", store)
    e2 = _toy(tmp_path / "b", seeds=(5,))
    execute(dataclasses_replace(e2, name="toy2"), "quick", store)
    runs = plan(e, "quick", store)
    before = _tree(root)
    everything = eoslab.load(root)
    assert sorted(everything["experiment"]) == ["toy", "toy", "toy", "toy2"]
    assert len(eoslab.load(root / "toy")) == 3
    assert len(eoslab.load(runs[0].run.path)) == 500
    assert _tree(root) == before
    # Damage one run, leave a temporary folder of a dead process: load still reads the rest.
    (runs[1].run.path / "COMPLETE").unlink()
    (root / "toy" / f".tmp-0000000000000000.{socket.gethostname()}.999999999.ab12").mkdir()
    before = _tree(root)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        df = eoslab.load(root / "toy")
        assert len(eoslab.load(root)) == 3
    assert len(df) == 2 and runs[1].rid not in set(df["run_id"])
    assert any(runs[1].rid in str(x.message) and "COMPLETE" in str(x.message) for x in w)
    with pytest.raises(EoslabError, match="not a valid run"):
        eoslab.load(runs[1].run.path)
    with pytest.raises(EoslabError, match="no runs here"):
        eoslab.load(tmp_path / "cfg")
    # The other read paths (eoslab list/show/report use these) are read-only too.
    assert plan(e, "quick", store)[1].run is None and store.runs("toy") and store.find(runs[0].rid)
    assert _tree(root) == before


def dataclasses_replace(exp, **kw):
    import dataclasses

    return dataclasses.replace(exp, **kw)


def test_save_a_trajectory_and_load_it_as_xarray(tmp_path):
    """gd's trajectory saved with eoslab.save, read back with eoslab.load_dataset: dims step and
    eig, values bit-identical, parameters as attributes; several runs stack along run."""
    xr = pytest.importorskip("xarray")
    import json as _json

    from eoslab.dynamics import gd
    from eoslab.models import quadratic2d

    p = quadratic2d.problem(eps=0.1, theta0=[0.1, 3.0])
    paths = []
    for lr in (0.5, 1.0):
        traj, _ = gd(p, lr=lr, steps=50, k=2)
        before = _tree(tmp_path) if paths else None
        paths.append(eoslab.save(traj, tmp_path / "runs", "q2d", lr=lr, steps=50, theta0=[0.1, 3.0]))
        if before is not None:
            assert eoslab.save(traj, tmp_path / "runs", "q2d", lr=lr, steps=50, theta0=[0.1, 3.0]) == paths[-1]
    ds = eoslab.load_dataset(paths[1])
    assert isinstance(ds, xr.Dataset) and ds.sizes["step"] == 50 and ds.sizes["eig"] == 2
    assert ds["hessian_eigs"].dims == ("step", "eig") and ds["loss"].dims == ("step",)
    np.testing.assert_array_equal(ds["hessian_eigs"].values, np.asarray(traj["hessian_eigs"]))
    assert _json.loads(ds.attrs["params"])["lr"] == 1.0
    both = eoslab.load_dataset(tmp_path / "runs" / "q2d")
    assert both.sizes["run"] == 2 and sorted(both["lr"].values.tolist()) == [0.5, 1.0]
    assert both["loss"].dims == ("run", "step")
    df = eoslab.load(paths[0])                              # pandas still available
    assert len(df) == 50 and df.attrs["params"]["lr"] == 0.5
