"""The store's partial runs: ``<root>/<experiment>/.partial-<id>/`` written as a run goes, listed by
``Store.partial_runs``, removed when the finished run is stored, and never taken for a run (or a
corrupt one) by listing, loading, validation, the quarantine or ``reproduce``."""

import json
import socket

import numpy as np
import pytest

import eoslab
from eoslab.errors import EoslabError
from eoslab.experiments.runner import execute, load_experiments, plan
from eoslab.experiments.store import Store, run_config, run_id
from eoslab.partial import PartialFolder

from toy_kind import write_config


def _tree(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_partial_run_written_listed_and_removed_by_the_final_write(tmp_path):
    store = Store(tmp_path)
    cfg = run_config("exp", "k", {"lr": 0.1, "seed": 0})
    rid = run_id(cfg)
    assert store.partial_runs("exp") == [] and store.partial_runs("missing") == []
    w = store.partial(cfg)
    assert w.path == tmp_path / "exp" / f".partial-{rid}"
    assert json.loads((w.path / "config.json").read_text()) == cfg  # exactly the final run's config
    w.update({"loss": np.arange(3.0)}, 3, 10, checkpoint={"done": np.int64(3)})
    w.update({"loss": np.arange(5.0)}, 5, 10)
    assert sorted(p.name for p in w.path.iterdir()) == ["arrays.npz", "checkpoint.npz", "config.json",
                                                       "progress.json"]  # no temporary file left
    [p] = store.partial_runs("exp")
    assert (p.id, p.params, p.done, p.total) == (rid, {"lr": 0.1, "seed": 0}, 5, 10)
    assert p.updated.endswith("+00:00")
    np.testing.assert_array_equal(p.arrays["loss"], np.arange(5.0))
    assert int(p.read_checkpoint()["done"]) == 3  # the last checkpoint stays until a new one is given
    assert store.runs("exp") == []  # a partial run is not a run
    # reopening it (to resume) keeps what is there
    assert store.partial(cfg).read_progress()["done"] == 5
    final = w.finish({"loss": np.arange(10.0)}, {"seed": 0})
    assert final == tmp_path / "exp" / rid and not w.path.exists()
    assert [r.id for r in store.runs("exp")] == [rid] and store.partial_runs("exp") == []
    # a partial folder whose config does not hash to its name (edited) is not listed
    bad = PartialFolder(tmp_path / "exp" / ".partial-0123456789abcdef", cfg)
    bad.update({"loss": np.zeros(1)}, 1, 2)
    assert store.partial_runs("exp") == []


def test_partial_runs_are_never_runs_nor_corrupt(tmp_path):
    """load, load_dataset, invalid_reason, runs, find, plan and reproduce's execute (which
    quarantines invalid runs and cleans dead temporary folders) leave a partial run alone."""
    pytest.importorskip("pandas")
    pytest.importorskip("xarray")
    e = load_experiments(write_config(tmp_path / "cfg", seeds=(0, 1)).parent)[0]
    root = tmp_path / "runs"
    store = Store(root)
    execute(e, "quick", store)
    w = store.partial(run_config("toy", "toy", {"seed": 7}))
    w.update({"samples": np.arange(4.0)}, 4, 8, checkpoint={"x": np.ones(2)})
    w2 = store.partial(run_config("other", "user", {"seed": 0}))  # an experiment holding only a partial run
    w2.update({"loss": np.ones(2)}, 2, 3)
    before = _tree(root)
    assert len(eoslab.load(root)) == 2 and len(eoslab.load(root / "toy")) == 2
    assert eoslab.load_dataset(root / "toy").sizes["run"] == 2
    for f in (eoslab.load, eoslab.load_dataset):
        with pytest.raises(EoslabError, match="partial run"):
            f(w.path)
    assert "partial run" in Store.invalid_reason(w.path)
    assert store.read(w.path, repair=True) is None and store.quarantine(w.path, "test") is None
    assert len(store.runs("toy", repair=True)) == 2 and store.clean_stale_tmp("toy") == 0
    with pytest.raises(EoslabError, match="no run"):
        store.find(w.id)
    assert [p.id for p in store.partial_runs("toy")] == [w.id]
    assert _tree(root) == before
    # reproduce's path: a finished experiment is not recomputed, nothing is quarantined or removed
    (root / "toy" / f".tmp-0000000000000000.{socket.gethostname()}.999999999.ab12").mkdir()
    execute(e, "quick", store)
    assert not (root / "toy" / ".corrupt").exists() and w.path.is_dir() and w2.path.is_dir()
    assert [p.done for p in store.partial_runs("toy")] == [4] and len(plan(e, "quick", store)) == 2
