"""The store's robustness edges: unreadable files, a renamed run, a corruption whose checksum
was recomputed, concurrent quarantines, a results root that fails mid-sweep, and reports
naming every incomplete experiment."""

import hashlib
import json
import pathlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from eoslab.errors import EoslabError
from eoslab.experiments.runner import check_complete, execute, load_experiments, plan
from eoslab.experiments.store import FILES, MARKER, Store

from toy_kind import write_config



def _stored(tmp_path, seeds=(0, 1)):
    e = load_experiments(write_config(tmp_path / "cfg", seeds=seeds).parent)[0]
    store = Store(tmp_path / "runs")
    execute(e, "quick", store)
    return e, store, [pr.run.path for pr in plan(e, "quick", store)]


def _reseal(path: Path) -> None:
    """Recompute COMPLETE over the (damaged) files, as a careless tool would."""
    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode())
        h.update((path / name).read_bytes())
    (path / MARKER).write_text(json.dumps({"sha256": h.hexdigest(), "files": list(FILES)}))


def test_unreadable_arrays_are_reported_then_redone(tmp_path, monkeypatch):
    e, store, paths = _stored(tmp_path)
    victim = paths[0]
    real = pathlib.Path.read_bytes

    def deny(self):
        if self == victim / "arrays.npz":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", deny)
    why = Store.invalid_reason(victim)
    assert why.startswith("unreadable: Permission denied") and "arrays.npz" in why
    with pytest.raises(EoslabError, match="Permission denied"):
        store.find(victim.name)
    execute(e, "quick", store)  # the runner moves it aside and recomputes it
    monkeypatch.undo()
    assert store.read(victim) is not None
    assert len(list((victim.parent / ".corrupt").iterdir())) == 1


def test_a_renamed_run_says_why(tmp_path):
    _, store, paths = _stored(tmp_path)
    other = paths[0].parent / ("0" * 16)
    shutil.copytree(paths[0], other)
    with pytest.raises(EoslabError, match="does not hash to the folder name") as exc:
        store.find(str(other))
    assert "None" not in str(exc.value)


def test_corruption_with_a_recomputed_checksum_is_caught(tmp_path):
    e, store, paths = _stored(tmp_path)
    victim = paths[1]
    data = bytearray((victim / "arrays.npz").read_bytes())
    mid = len(data) // 3
    data[mid:mid + 8] = b"\x00" * 8 if data[mid:mid + 8] != b"\x00" * 8 else b"\xff" * 8
    (victim / "arrays.npz").write_bytes(bytes(data))
    _reseal(victim)
    assert "arrays.npz" in Store.invalid_reason(victim)
    with pytest.raises(EoslabError, match="arrays.npz"):
        store.find(victim.name)
    execute(e, "quick", store)
    assert store.read(victim) is not None  # redone


def test_concurrent_quarantine_is_safe(tmp_path):
    _, store, paths = _stored(tmp_path)
    victim = paths[0]
    (victim / MARKER).unlink()
    first = store.quarantine(victim, "test")
    assert first is not None and first.is_dir()
    # a second process that saw the same bad run finds it already moved: no error
    assert store.quarantine(victim, "test") is None


def test_failed_store_write_keeps_the_run_and_says_where(tmp_path, monkeypatch):
    e = load_experiments(write_config(tmp_path / "cfg", seeds=(0, 1)).parent)[0]
    store = Store(tmp_path / "runs")
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    real = Store.write

    def failing(self, config, arrays, meta):
        if self.root == store.root:
            raise OSError(28, "No space left on device")
        return real(self, config, arrays, meta)

    monkeypatch.setattr(Store, "write", failing)
    with pytest.raises(EoslabError, match="No space left on device.*kept in") as exc:
        execute(e, "quick", store)
    kept = Path(str(exc.value).split("kept in ")[1].split(";")[0])
    assert (kept / "arrays.npz").is_file()
    np.testing.assert_equal(Store(kept.parents[1]).read(kept).arrays["mean"].shape, ())


def test_report_names_every_incomplete_experiment(tmp_path):
    a = load_experiments(write_config(tmp_path / "a", seeds=(0, 1)).parent)[0]
    cfg_b = write_config(tmp_path / "b", seeds=(0, 1, 2))
    text = cfg_b.read_text().replace(f'name = "{a.name}"', 'name = "toy-b"')
    cfg_b.write_text(text)
    b = load_experiments(cfg_b.parent)[0]
    assert a.name != b.name
    store = Store(tmp_path / "runs")
    with pytest.raises(EoslabError) as exc:
        check_complete([a, b], "quick", store)
    msg = str(exc.value)
    assert a.name in msg and "toy-b" in msg and "(2 of 2)" in msg and "(3 of 3)" in msg
    execute(a, "quick", store)
    with pytest.raises(EoslabError) as exc:
        check_complete([a, b], "quick", store)
    assert "toy (2 of 2)" not in str(exc.value) and "toy-b (3 of 3)" in str(exc.value)
