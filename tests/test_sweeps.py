"""User sweeps: the sweep file (products, zips, ranges, errors), runs in the store (resume),
the sweep as one xarray Dataset, the summary, and `eoslab sweep` end to end."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import eoslab
from eoslab.errors import EoslabError
from eoslab.experiments.store import Store
from eoslab.experiments.sweeps import load_sweep, run_sweep, sweep_dataset, sweep_rows

TOY = """\
[experiment]
name = "toy-sweep"
kind = "test.toy"
[dynamics]
n = 50
[sweep]
{axes}
"""


def _file(tmp_path, axes, name="s.toml"):
    p = tmp_path / name
    p.write_text(TOY.format(axes=axes))
    return p


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_products_zips_and_ranges(tmp_path):
    e = load_sweep(_file(tmp_path, 'scale = "1:2:3"\nseed = [0, 1]\nn = [10, 20, 30]\nzip = [["scale", "n"]]'))
    assert e.groups("full") == [("scale", "n"), ("seed",)]
    pts = e.points("full")
    assert [(p["scale"], p["n"], p["seed"]) for p in pts] == [
        (1.0, 10, 0), (1.0, 10, 1), (1.5, 20, 0), (1.5, 20, 1), (2.0, 30, 0), (2.0, 30, 1)]
    e = load_sweep(_file(tmp_path, 'scale = "log:0.01:1:3"\nseed = [0, 1]'))
    assert np.allclose([p["scale"] for p in e.points("full")][::2], [0.01, 0.1, 1.0])
    assert e.groups("full") == [("scale",), ("seed",)] and e.title == ""  # title/source optional
    # the same sweep as a Python dict
    d = load_sweep({"experiment": {"name": "d", "kind": "test.toy"}, "dynamics": {"n": 5},
                    "sweep": {"seed": [3, 4], "mode": "zip", "scale": [1.0, 2.0]}})
    assert [(p["seed"], p["scale"]) for p in d.points("full")] == [(3, 1.0), (4, 2.0)]


@pytest.mark.parametrize("axes, message", [
    ('scale = [1.0, 2.0]\nn = [1]\nzip = [["scale", "n"]]', r"s.toml:\d+: zipped sweep axes have different lengths"),
    ('scale = [1.0]\nzip = [["scale", "nope"]]', r"s.toml:8: \[sweep\] zip: 'nope' is not an axis"),
    ('scale = "1:2"', r"s.toml:7: \[sweep\] scale: a range must look like"),
    ('scael = [1.0]', r"s.toml:7: unknown key 'scael' in \[sweep\]"),
    ('scale = [0.0]', r"s.toml:7: \[sweep\] scale\[0\]: must be > 0"),
    ('n = "1:2:3"', r"s.toml:7: \[sweep\] n: a sweep axis must be a non-empty list"),
])
def test_bad_sweep_files_name_the_line(tmp_path, axes, message):
    with pytest.raises(EoslabError, match=message):
        load_sweep(_file(tmp_path, axes))


def test_sweep_runs_resumes_and_loads_as_one_dataset(tmp_path):
    f = _file(tmp_path, "scale = [1.0, 2.0, 4.0]\nseed = [0, 1]")
    calls = []
    res = run_sweep(f, tmp_path / "runs", on_progress=lambda d, t: calls.append((d, t)))
    assert res.missing == 0 and calls[-1] == (6, 6)
    before = _tree(tmp_path / "runs")
    again = run_sweep(f, tmp_path / "runs")  # resumable: nothing recomputed, nothing rewritten
    assert [pr.run.meta["written_utc"] for pr in again.planned] == [pr.run.meta["written_utc"] for pr in res.planned]
    assert _tree(tmp_path / "runs") == before

    ds = eoslab.load(tmp_path / "runs" / "toy-sweep")
    assert ds.attrs["missing"] == 0 and ds.attrs["kind"] == "test.toy"
    assert ds["mean"].dims == ("scale", "seed") and list(ds.scale.values) == [1.0, 2.0, 4.0]
    assert ds["samples"].dims == ("scale", "seed", "step") and ds.sizes["step"] == 50
    for pr in res.planned:  # every grid cell is its run, independently drawn here
        p = pr.point
        x = np.random.default_rng(p["seed"]).normal(0.0, p["scale"], 50)
        cell = ds.sel(scale=p["scale"], seed=p["seed"])
        assert cell.run_id.item() == pr.rid
        np.testing.assert_array_equal(cell["samples"].values, x)
        assert cell["mean"].item() == x.mean()
    assert json.loads(ds.attrs["fixed"])["n"] == 50
    assert _tree(tmp_path / "runs") == before  # loading is read-only

    rows = sweep_rows(tmp_path / "runs" / "toy-sweep")
    assert [(r["scale"], r["seed"]) for r in rows] == [(s, k) for s in (1.0, 2.0, 4.0) for k in (0, 1)]
    assert rows[3]["mean"] == ds["mean"].sel(scale=2.0, seed=1).item()


def test_missing_and_corrupt_points_are_nan_and_left_alone(tmp_path):
    f = _file(tmp_path, "scale = [1.0, 2.0]\nn = [10, 20]\nzip = [['scale', 'n']]")
    res = run_sweep(f, tmp_path / "runs", shard="0/2")  # only one shard's part
    owned = [pr for pr in res.planned if pr.run is not None]
    folder = tmp_path / "runs" / "toy-sweep"
    if len(owned) == 2:  # both ids landed in shard 0: damage one instead
        (folder / owned[1].rid / "arrays.npz").write_bytes(b"broken")
    before = _tree(folder)
    ds = sweep_dataset(folder)
    assert ds.attrs["missing"] == 1 and _tree(folder) == before
    assert ds["mean"].dims == ("scale",) and list(ds.n.values) == [10, 20]  # n: a coordinate along scale
    assert np.isnan(ds["mean"].values).sum() == 1
    good = ds.sel(scale=owned[0].point["scale"])
    assert good["samples"].count().item() == owned[0].point["n"]  # the shorter run is NaN-padded


def test_cli_sweep_summary_figures_and_json(tmp_path, capsys):
    """`eoslab sweep` end to end on a small GD sweep: JSON rows, summary.json, the final-loss
    figure, the Dataset; and resuming computes nothing."""
    from eoslab.cli import main
    from toy_kind import GD_SWEEP

    f = tmp_path / "gd.toml"
    f.write_text(GD_SWEEP.format(name="gd", seeds=[0]))
    args = ["sweep", str(f), "--json", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ds = eoslab.load(tmp_path / "runs" / "gd")
    assert [(r["seed"], r["lr"]) for r in rows] == [(0, 0.1), (0, 0.2)]
    for r in rows:  # the closed form: loss_t = ½ Σ λ (1 − ηλ)^{2t} for θ₀ = 1 in A's eigenbasis
        assert r["final_loss"] == ds["final_loss"].sel(seed=0, lr=r["lr"]).item()
    import jax

    m = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (8, 8), "float64"))
    lam, vec = np.linalg.eigh(m.T @ m / 8)
    c = vec.T @ np.ones(8)
    t = np.arange(50)
    exact = 0.5 * ((1 - 0.2 * lam[None]) ** (2 * t[:, None]) * lam * c**2).sum(1)
    np.testing.assert_allclose(ds["loss"].sel(seed=0, lr=0.2).values, exact, rtol=1e-10)
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"summary.json", "gd_final_loss_vs_lr.png"}
    before = _tree(tmp_path / "runs" / "gd")
    with pytest.raises(SystemExit):
        main(args)
    assert _tree(tmp_path / "runs" / "gd") == before


def test_networks_train_scalars_from_its_trajectory():
    """The stored scalars of `networks.train` are those of its per-step arrays."""
    from eoslab.experiments.kinds.train import results

    rng = np.random.default_rng(0)
    eigs = np.abs(rng.normal(20.0, 3.0, (40, 2))).astype(np.float32)
    tracked = np.arange(40) % 2 == 0
    eigs[~tracked] = np.nan
    traj = {"loss": np.linspace(1.0, 0.1, 40), "grad_norm": np.ones(40), "accuracy": np.full(40, np.nan),
            "hessian_eigs": eigs, "hessian_residuals": np.zeros((40, 2)), "hessian_products": np.full(40, 3),
            "tracked": tracked, "diverged": np.zeros(40, bool), "seconds": np.asarray(1.0), "lr": np.asarray(0.1)}
    out = results(traj, 0.1)
    r = 0.1 * eigs[tracked, 0].astype(float) / 2
    assert out["max_edge_ratio"] == pytest.approx(r.max()) and out["final_edge_ratio"] == pytest.approx(r[-1])
    assert out["late_edge_ratio"] == pytest.approx(r[-5:].mean())  # last quarter of the 20 tracked steps
    assert out["crossings"] == int(r[0] > 1) + int(np.sum((r[1:] > 1) & (r[:-1] <= 1)))
    assert out["final_loss"] == pytest.approx(0.1) and out["hessian_eigs"].shape == (40, 2)


@pytest.mark.slow
def test_cli_sweep_networks_train(tmp_path, monkeypatch):
    """`eoslab sweep` on a tiny network sweep: summary, figures, and the Dataset."""
    from typer.testing import CliRunner

    from eoslab.cli import _load_commands, app

    _load_commands()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text("""\
[experiment]
name = "net"
kind = "networks.train"
[model]
depth = 1
width = 8
[data]
n = 32
d = 4
[dynamics]
steps = 40
k = 1
[sweep]
lr = [0.05, 0.4]
""")
    r = CliRunner().invoke(app, ["sweep", "net.toml", "--json", "--runs", "runs", "--out", "out"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert [row["lr"] for row in rows] == [0.05, 0.4]
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"summary.json", "net_final_loss_vs_lr.png",
                                                             "net_max_edge_ratio_vs_lr.png"}
    ds = eoslab.load(tmp_path / "runs" / "net")
    assert ds["hessian_eigs"].dims == ("lr", "step", "eig") and ds.sizes["step"] == 40
    for lr in (0.05, 0.4):  # the stored edge ratio is the tracked eigenvalue's
        e = ds["hessian_eigs"].sel(lr=lr, eig=0).values.astype(float)
        assert ds["max_edge_ratio"].sel(lr=lr).item() == pytest.approx(lr * np.nanmax(e) / 2, rel=1e-6)
    # bad input: refused before any work with exit code 2
    (tmp_path / "bad.toml").write_text("[experiment]\nname = 'b'\nkind = 'networks.train'\n[sweep]\nlr = [-1.0]\n")
    r = CliRunner().invoke(app, ["sweep", "bad.toml", "--runs", "runs"])
    assert r.exit_code != 0 and "bad.toml:5" in str(r.exception) + r.output and not (tmp_path / "runs" / "b").exists()


@pytest.mark.parametrize("args, message", [
    (["--workers", "2"], "--workers needs --dask"),
    (["--dask", "localhost:8786"], "scheduler address like tcp://HOST:PORT"),
    (["--dask", "tcp://127.0.0.1:1", "--workers", "2"], "already sized"),
    (["--dask", "--resources", "GPU"], "--resources must look like NAME=AMOUNT"),
    (["--resources", "GPU=1"], "--resources needs --dask"),
])
def test_cli_dask_options_refused_before_work(tmp_path, capsys, args, message):
    from eoslab.cli import main

    f = _file(tmp_path, "seed = [0, 1]")
    with pytest.raises(SystemExit) as e:
        main(["sweep", str(f), "--runs", str(tmp_path / "runs"), *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_cli_sweep_dask_end_to_end(tmp_path, capsys, monkeypatch):
    """`eoslab sweep FILE --dask --workers 1`: a LocalCluster of one worker computes the runs
    (each a task) and the summary equals the in-process sweep's."""
    pytest.importorskip("distributed")
    import os

    from eoslab.cli import main
    from toy_kind import GD_SWEEP

    # the worker processes import the test kind's module
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    f = tmp_path / "gd.toml"
    f.write_text(GD_SWEEP.format(name="toy-sweep", seeds=[0]))
    args = ["sweep", str(f), "--json", "--no-figures", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as e:
        main(args + ["--runs", str(tmp_path / "a"), "--dask", "--workers", "1"])
    assert e.value.code == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    runs = Store(tmp_path / "a").runs("toy-sweep")
    assert len(runs) == 2 and {r.meta["executor"] for r in runs} == {"dask"}
    with pytest.raises(SystemExit):
        main(args + ["--runs", str(tmp_path / "b")])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == rows


def test_point_combinations_refused_before_any_run(tmp_path):
    """A batch larger than the data is refused for the whole sweep before any run is computed."""
    f = tmp_path / "bs.toml"
    f.write_text("[experiment]\nname = 'bs'\nkind = 'networks.train'\n[data]\nn = 16\n[dynamics]\nsteps = 5\n"
                 "[sweep]\nbatch_size = [0, 8, 32]\n")
    with pytest.raises(EoslabError, match=r"batch_size 32 is larger than the number of examples n = 16 "
                                          r"\(at batch_size = 32\)"):
        run_sweep(f, tmp_path / "runs")
    assert not [p for p in (tmp_path / "runs" / "bs").iterdir() if p.is_dir()]
