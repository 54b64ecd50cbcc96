"""The digits loader against scikit-learn's own arrays, and `eoslab train --data digits`."""

import json

import numpy as np
import pytest

sklearn_datasets = pytest.importorskip("sklearn.datasets")

from eoslab import EoslabError  # noqa: E402
from eoslab.data import load, load_digits  # noqa: E402


def test_digits_shapes_standardisation_labels():
    ref = sklearn_datasets.load_digits()
    ds = load_digits(n=300, dtype="float64")
    assert ds.x.shape == (300, 64) and ds.y.shape == (300, 10) and ds.image_shape == (1, 8, 8)
    np.testing.assert_array_equal(ds.labels, ref.target[:300])
    np.testing.assert_array_equal(ds.y, np.eye(10)[ref.target[:300]])
    raw = ref.data[:300].astype(np.float64)
    np.testing.assert_allclose(ds.x, (raw - raw.mean()) / raw.std(), rtol=1e-12, atol=1e-12)
    assert abs(ds.x.mean()) < 1e-12 and ds.x.std() == pytest.approx(1.0, rel=1e-12)
    feat = load_digits(n=300, standardization="feature", dtype="float64").x
    sd = raw.std(axis=0)
    np.testing.assert_allclose(feat[:, sd > 0], ((raw - raw.mean(0)) / np.where(sd > 0, sd, 1))[:, sd > 0],
                               atol=1e-12)
    np.testing.assert_allclose(load_digits(n=5, standardization="none", dtype="float64").x, ref.data[:5] / 16.0)
    assert load("digits").n == 1797 and load("digits", n=10).name.startswith("digits")


def test_digits_class_subset_and_refusals():
    ref = sklearn_datasets.load_digits()
    ds = load_digits(n=40, classes=[7, 1])
    keep = np.flatnonzero(np.isin(ref.target, [7, 1]))[:40]
    np.testing.assert_array_equal(ds.labels, np.where(ref.target[keep] == 7, 0, 1))
    assert ds.y.shape == (40, 2) and ds.label_names == ("7", "1")
    for bad in ({"n": 1798}, {"n": 0}, {"classes": [10]}, {"classes": [1, 1]}, {"classes": ["cat"]},
                {"n": 400, "classes": [0]}):
        with pytest.raises(EoslabError):
            load_digits(**bad)


def test_network_problem_digits():
    """What `eoslab train --data digits` trains on (the CLI's own builder, no training)."""
    from eoslab.models.mlp import network_problem

    p, ds, _ = network_problem("mlp", 1, 8, "tanh", "standard", "digits", None, 50, [3, 5], "cross_entropy", 0,
                               "float64")
    np.testing.assert_array_equal(np.asarray(p.data), load_digits(n=50, classes=[3, 5], dtype="float64").x)
    assert p.targets.shape == (50, 2) and ds.image_shape == (1, 8, 8)
    assert np.isfinite(float(p.loss_fn(p.params)))


@pytest.mark.slow  # a compile of the train program (~25 s on a loaded 2-core machine)
def test_cli_train_digits(tmp_path):
    from typer.testing import CliRunner

    from eoslab.cli import _load_commands, app

    _load_commands()
    out = tmp_path / "run.json"
    args = ["train", "--data", "digits", "--n", "32", "--classes", "0,1,2", "--depth", "1", "--width", "8",
            "--lr", "0.1", "--steps", "3", "--track", "hessian", "--k", "1", "--no-progress",
            "--json-out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "digits (n=32, 3 classes)" in r.output
    res = json.loads(out.read_text())
    assert len(res["curves"]["loss"]) == 3 and np.all(np.isfinite(res["curves"]["loss"]))
    r = CliRunner().invoke(app, ["train", "--data", "digits", "--n", "2000"])
    assert r.exit_code != 0 and "--n" in str(r.exception if r.exception else r.output)
