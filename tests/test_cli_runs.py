"""``--runs ROOT`` on the commands whose results are data: each stores its result as a run of
``ROOT/<command>`` (content-addressed by the options that define it), and ``eoslab.load_dataset``
reads it back as xarray with named dimensions; the stored numbers are the ones the command
printed as JSON. Tiny sizes: one small run per command family."""

import json

import numpy as np
import pytest

import eoslab
from eoslab.cli import main


def _cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    assert exc.value.code == 0, out.err[-2000:]
    return out


def _json_and_run(args, capsys):
    """Run with --json: stdout is the JSON only, the 'run: PATH' line goes to stderr."""
    out = _cli([*args, "--json"], capsys)
    lines = [ln for ln in out.err.splitlines() if ln.startswith("run: ")]
    assert len(lines) == 1, out.err
    return json.loads(out.out), lines[0][5:].strip()


def test_run_and_theory_store_runs(tmp_path, capsys):
    root = tmp_path / "runs"
    res, path = _json_and_run(["run", "quadratic2d", "--eps", "0.05", "--lr", "1", "--inits", "5", "--steps", "300",
                               "--tail", "10", "--runs", root], capsys)
    ds = eoslab.load_dataset(root / "run-quadratic2d")
    assert ds.sizes["run"] == 1 and ds.sizes["init"] == 5 and ds.sizes["coord"] == 2
    assert str(root / "run-quadratic2d") in path
    assert int(ds["n_eos"][0]) == res["n_eos"] and float(ds["lr"][0]) == 1.0
    assert np.isclose(float(ds["median_ratio"][0]), res["median_ratio"], equal_nan=True)
    # the per-start limits are the ones the counts were made from
    assert int(ds["run_diverged"].sum()) == res["n_diverged"]
    # same options again: the same content-addressed run (kept, not duplicated); new options: a second run
    _, again = _json_and_run(["run", "quadratic2d", "--eps", "0.05", "--lr", "1", "--inits", "5", "--steps", "300",
                              "--tail", "10", "--runs", root], capsys)
    assert again == path
    _cli(["theory", "eos-limit", "--eps", "0.02", "--lr", "1", "--runs", root], capsys)
    _cli(["theory", "eos-limit", "--eps", "0.01", "--lr", "1", "--runs", root], capsys)
    lim = eoslab.load_dataset(root / "theory-eos-limit").sortby("eps")
    assert lim.sizes["run"] == 2
    np.testing.assert_allclose(lim["eta_lambda"].values, [1.99491440796, 1.98965258142], atol=1e-10)


def test_companions_store_runs(tmp_path, capsys):
    root = tmp_path / "runs"
    res, _ = _json_and_run(["two-layer", "--lr", "4", "--steps", "60", "--runs", root], capsys)
    ds = eoslab.load_dataset(root / "two-layer")
    assert ds.sizes["step"] == 60 and ds["params"].dims == ("run", "step", "param")
    assert int(ds["phases_eos_start"][0]) == res["phases"]["eos_start"]
    res, _ = _json_and_run(["linear-net", "--lrs", "0.5,1.5", "--inits", "8", "--steps", "50", "--runs", root],
                           capsys)
    ds = eoslab.load_dataset(root / "linear-net")
    assert list(ds["lr"].values) == [0.5, 1.5]
    assert ds["converged_fraction"].dims == ("run", "lr")
    np.testing.assert_array_equal(ds["converged_fraction"].values[0], res["converged_fraction"])
    assert float(ds["threshold"][0]) == res["threshold"] == 1.0


@pytest.mark.slow  # three compilations of the second-order programs (~40 s under load)
def test_second_order_commands_store_runs(tmp_path, capsys):
    root = tmp_path / "runs"
    rows, _ = _json_and_run(["highdim-sweep", "--datapoints", "6", "--params", "6", "--lrs", "0.5,1", "--sigma-z",
                             "0.5,1", "--seeds", "1", "--steps", "12", "--runs", root], capsys)
    ds = eoslab.load_dataset(root / "highdim-sweep").isel(run=0)
    assert dict(ds["loss"].sizes) == {"sigma_z": 2, "model": 1, "lr": 2, "step": 12}
    assert ds["ntk_eigs"].dims[-2:] == ("step", "eig")
    for r in rows:
        point = ds.sel(sigma_z=r["sigma_z"], lr=r["lr"]).isel(model=r["seed"])
        assert str(point["outcome"].values) == r["outcome"]
        assert np.isclose(float(point["final_eta_ntk_half"]), r["final_eta_ntk_half"])
    res, _ = _json_and_run(["nonlinear", "--datapoints", "6", "--params", "6", "--steps", "10", "--runs", root],
                           capsys)
    ds = eoslab.load_dataset(root / "nonlinear")
    assert ds["nonlinear_norm"].dims == ("run", "step") and ds.sizes["step"] == 10
    assert int(ds["events_peak"][0]) == res["events"]["peak"]
    res, _ = _json_and_run(["theorem2", "--datapoints", "4", "--params", "6", "--samples", "4", "--runs", root],
                           capsys)
    ds = eoslab.load_dataset(root / "theorem2")
    assert float(ds["ratio"][0]) == res["ratio"] and int(ds["datapoints"][0]) == 4


@pytest.mark.slow  # the central flow's compilation (~15 s under load)
def test_flow_stores_a_run(tmp_path, capsys):
    root = tmp_path / "runs"
    _cli(["flow", "--model", "quadratic2d", "--lr", "1", "--eps", "0.05", "--steps", "15", "--runs", root], capsys)
    ds = eoslab.load_dataset(root / "flow")
    assert ds.sizes["step"] == 15 and "gd_loss" in ds and "dist_gd_cf" in ds
    assert ds["eigs"].dims == ("run", "step", "eig")
    assert str(ds["model"].values[0]) == "quadratic2d"
