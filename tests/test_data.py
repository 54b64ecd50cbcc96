"""Datasets: the CIFAR-10 reader on generated files in the exact python-pickle format, and
the synthetic data."""

import pickle

import numpy as np
import pytest

from eoslab import EoslabError
from eoslab.data import load, load_cifar10, one_hot, standardize, synthetic
from eoslab.data.cifar10 import read_batch

NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
PER_BATCH = 20


def _write(path, obj, protocol=2):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """Five training batches, a test batch and batches.meta, as the real dataset stores them
    (dict with bytes keys, b'data' uint8 (N, 3072), b'labels' a list of ints)."""
    root = tmp_path_factory.mktemp("cifar-10-batches-py")
    rng = np.random.default_rng(0)
    raw = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=PER_BATCH)]
        _write(root / name, {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                             b"filenames": [b"img%d.png" % i for i in range(PER_BATCH)]},
               protocol=2 if name.endswith(("1", "3", "5")) else pickle.HIGHEST_PROTOCOL)
        raw[name] = (data, np.asarray(labels))
    _write(root / "batches.meta", {b"label_names": NAMES, b"num_cases_per_batch": PER_BATCH, b"num_vis": 3072})
    return root, raw


def _train_raw(raw):
    data = np.concatenate([raw[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = np.concatenate([raw[f"data_batch_{i}"][1] for i in range(1, 6)])
    return data, labels


def test_cifar_first_n_shapes_and_labels(cifar_dir):
    root, raw = cifar_dir
    data, labels = _train_raw(raw)
    ds = load_cifar10(root, n=50, standardization="none")  # spans three batch files
    assert ds.x.shape == (50, 3072) and ds.y.shape == (50, 10) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.labels, labels[:50])
    np.testing.assert_allclose(ds.x, data[:50] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y, np.eye(10)[labels[:50]])
    assert ds.label_names[3] == "cat" and ds.image_shape == (3, 32, 32)
    # Channel-first layout: pixel (c, i, j) of image 7 is at column c·1024 + 32i + j.
    img = ds.x.reshape(50, 3, 32, 32)
    assert img[7, 2, 5, 9] == pytest.approx(data[7, 2 * 1024 + 5 * 32 + 9] / 255.0, rel=1e-6)
    assert load_cifar10(root).n == 5 * PER_BATCH
    test = load_cifar10(root, split="test", standardization="none")
    np.testing.assert_array_equal(test.labels, raw["test_batch"][1])


def test_cifar_class_subset_renumbers(cifar_dir):
    root, raw = cifar_dir
    data, labels = _train_raw(raw)
    ds = load_cifar10(root, classes=["cat", 1], standardization="none")
    keep = np.isin(labels, [3, 1])
    assert ds.y.shape == (keep.sum(), 2) and ds.label_names == ("cat", "automobile")
    np.testing.assert_array_equal(ds.labels, np.where(labels[keep] == 3, 0, 1))
    np.testing.assert_allclose(ds.x, data[keep] / 255.0, rtol=1e-6)
    first = load_cifar10(root, n=5, classes=[3, 1], standardization="none")
    np.testing.assert_array_equal(first.labels, ds.labels[:5])


def test_cifar_channel_standardisation(cifar_dir):
    root, raw = cifar_dir
    data, _ = _train_raw(raw)
    ds = load_cifar10(root, n=60)
    chans = (data[:60].astype(np.float64) / 255).reshape(60, 3, 1024)
    ref = (chans - chans.mean(axis=(0, 2))[None, :, None]) / chans.std(axis=(0, 2))[None, :, None]
    np.testing.assert_allclose(ds.x, ref.reshape(60, 3072), rtol=1e-5, atol=1e-5)
    per_channel = ds.x.reshape(60, 3, 1024).astype(np.float64)
    np.testing.assert_allclose(per_channel.mean(axis=(0, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(per_channel.std(axis=(0, 2)), 1, rtol=1e-5)
    feat = load_cifar10(root, n=60, standardization="feature").x.astype(np.float64)
    np.testing.assert_allclose(feat.mean(axis=0), 0, atol=1e-5)


def test_cifar_errors(cifar_dir, tmp_path):
    root, _ = cifar_dir
    with pytest.raises(EoslabError, match="folder not found"):
        load_cifar10(tmp_path / "nope")
    with pytest.raises(EoslabError, match="file not found.*data_batch_1"):
        load_cifar10(tmp_path)
    bad = tmp_path / "garbage"
    bad.write_bytes(b"this is not a pickle")
    with pytest.raises(EoslabError, match="corrupt CIFAR-10 file"):
        read_batch(bad)
    _write(tmp_path / "shape", {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]})
    with pytest.raises(EoslabError, match="uint8 of shape"):
        read_batch(tmp_path / "shape")
    _write(tmp_path / "labels", {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1]})
    with pytest.raises(EoslabError, match="labels"):
        read_batch(tmp_path / "labels")
    _write(tmp_path / "keys", {b"images": np.zeros((4, 3072), np.uint8)})
    with pytest.raises(EoslabError, match="b'data' and b'labels'"):
        read_batch(tmp_path / "keys")

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    _write(tmp_path / "evil", {b"data": Evil(), b"labels": []})
    with pytest.raises(EoslabError, match="refusing to load"):
        read_batch(tmp_path / "evil")
    with pytest.raises(EoslabError, match="only 100"):
        load_cifar10(root, n=101)
    with pytest.raises(EoslabError, match="unknown CIFAR-10 class"):
        load_cifar10(root, classes=["cats"])
    with pytest.raises(EoslabError, match="--data-dir"):
        load("cifar10", n=10)


def test_one_hot_and_standardize_errors():
    np.testing.assert_array_equal(one_hot([2, 0], 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(EoslabError):
        one_hot([3], 3)
    with pytest.raises(EoslabError):
        standardize(np.zeros((2, 4)), "pixel")


def test_synthetic_data():
    a, b = synthetic(200, 16, seed=3), synthetic(200, 16, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.x.shape == (200, 16) and a.y.shape == (200, 1) and not a.is_classification
    assert a.image_shape == (1, 4, 4)
    np.testing.assert_allclose(a.y.std(), 4.0, rtol=1e-5)
    # Input covariance spectrum: eigenvalues ∝ k^-1, scaled to total variance d.
    big = synthetic(40000, 8, seed=1, dtype="float64")
    ev = np.linalg.eigvalsh(np.cov(big.x.T))[::-1]
    ref = 1.0 / np.arange(1, 9)
    np.testing.assert_allclose(ev, ref * 8 / ref.sum(), rtol=0.05)
    c = synthetic(100, 16, classes=3)
    assert c.y.shape == (100, 3) and set(np.unique(c.labels)) <= {0, 1, 2}
    np.testing.assert_array_equal(c.y.argmax(1), c.labels)
    with pytest.raises(EoslabError):
        synthetic(10, classes=1)


@pytest.mark.slow
def test_cli_train_on_cifar10_files(cifar_dir, tmp_path):
    """`eoslab train --data cifar10 --data-dir PATH` end to end on the generated files: a small CNN
    and its Taylor model on a two-class subset with cross-entropy; the recorded loss at θ₀ is the
    one of the problem built directly from the reader's data."""
    import json

    from typer.testing import CliRunner

    from eoslab.cli import _load_commands, app
    from eoslab.models.mlp import network_problem

    root, raw = cifar_dir
    _load_commands()
    out = tmp_path / "cifar.json"
    args = ["train", "--model", "cnn", "--depth", "1", "--width", "3", "--data", "cifar10", "--data-dir",
            str(root), "--n", "12", "--classes", "cat,dog", "--loss", "cross_entropy", "--lr", "0.1",
            "--steps", "3", "--k", "1", "--track", "hessian", "--taylor", "--dtype", "float64",
            "--no-progress", "--json-out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    data, labels = _train_raw(raw)
    assert res["config"]["n"] == min(12, int(np.isin(labels, [3, 5]).sum()))
    p, ds, _ = network_problem("cnn", 1, 3, "tanh", "standard", "cifar10", root, 12, ["cat", "dog"],
                             "cross_entropy", 0, "float64")
    assert ds.n == res["config"]["n"] and p.targets.shape == (ds.n, 2)     # one-hot over 2 classes
    np.testing.assert_allclose(res["curves"]["loss"][0], float(p.loss_fn(p.params)), rtol=1e-12)
    assert res["summary"]["steps"] == 3 and np.isfinite(res["summary"]["final_loss"])
    assert res["taylor"]["summary"]["steps"] == 3 and np.isfinite(res["taylor"]["summary"]["final_loss"])
