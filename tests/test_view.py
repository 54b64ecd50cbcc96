"""``eoslab view``: the explorer's numbers against eoslab's API and independent references, the
run browser's read-only access, and the app in a real (headless Chromium) browser.

The browser tests need Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them)
and skip with a message where they are missing. Screenshots go to ``ci-artifacts/`` at the
repository root (or ``$EOSLAB_CI_ARTIFACTS``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eoslab.dynamics import gd, summarize
from eoslab.errors import EoslabError
from eoslab.experiments.store import Store, run_config
from eoslab.models import quadratic2d
from eoslab.theory import eos2d
from eoslab.view import compute, runs

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("EOSLAB_CI_ARTIFACTS", REPO / "ci-artifacts"))


# --------------------------------------------------------------------------- compute
def test_trajectory_is_eoslab_gd():
    eps, lr, th0 = 0.1, 1.0, [0.2, 2.2 / math.sqrt(0.1)]
    tr = compute.trajectory2d(eps, lr, 0.0, th0, 2000)
    ref, _ = gd(quadratic2d.problem(eps, th0), lr, 2000, k=1, spectra="dense", record_params=True)
    np.testing.assert_array_equal(tr["theta"], np.asarray(ref["params"]))
    np.testing.assert_array_equal(tr["ratio"], np.asarray(ref["eta_ntk_half"]))
    assert tr["final_ratio"] == float(summarize(ref)["final_eta_ntk_half"])
    # Theorem 1's λ is the NTK θ₁² + ε²θ₂² (closed form, independent of gd's eigh).
    np.testing.assert_allclose(tr["ratio"], lr * (tr["theta"][:, 0] ** 2 + eps**2 * tr["theta"][:, 1] ** 2) / 2,
                               rtol=1e-12)
    assert tr["outcome"] == "edge of stability"
    assert tr["predicted_ratio"] == eos2d.eos_limit(eps, lr).ratio
    assert abs(tr["final_ratio"] - tr["predicted_ratio"]) < 1e-4
    # Fewer steps are cut from the same compiled scan: the rows do not depend on its length,
    # the summary is over the last rows kept.
    short = compute.trajectory2d(eps, lr, 0.0, th0, 700)
    np.testing.assert_array_equal(short["theta"], tr["theta"][:700])
    assert abs(short["final_ratio"] - float(np.mean(tr["ratio"][600:700]))) < 1e-14


def test_outcomes_and_bad_inputs():
    th0 = [0.2, 2.2 / math.sqrt(0.1)]
    assert compute.trajectory2d(0.1, 0.3, 0.0, [0.2, 1.0], 300)["outcome"] == "below the edge"
    div = compute.trajectory2d(0.1, 3.0, 0.0, [1.0, 10.0], 300)
    assert div["outcome"] == "diverged" and div["diverged_at"] > 0 and math.isnan(div["final_ratio"])
    assert math.isnan(compute.trajectory2d(0.1, 1.0, 2.0, th0, 50)["predicted_ratio"])  # ηE ≥ 1: no limit
    for bad, match in [((1.5, 1.0, 0.0, th0, 10), "eps"), ((0.1, -1.0, 0.0, th0, 10), "step size"),
                       ((0.1, 1.0, math.inf, th0, 10), "E"), ((0.1, 1.0, 0.0, th0, 0), "steps"),
                       ((0.1, 1.0, 0.0, [math.nan, 1.0], 10), "θ₀")]:
        with pytest.raises(EoslabError, match=match):
            compute.trajectory2d(*bad)


def test_phase_diagram_agrees_with_single_runs():
    eps, lr, E, theta1, steps = 0.1, 1.0, 0.0, 0.2, 2000
    window = compute.box(eps, lr, (theta1, 7.0))
    lrs, theta2s = compute.phase_axes(lr, window)  # the explorer's grid: one compilation shared with the app
    assert lrs[len(lrs) // 2] == lr
    ph = compute.phase_diagram(eps, E, theta1, lrs, theta2s, steps)
    assert ph["code"].shape == (48, 49)
    seen = set()
    rng = np.random.default_rng(0)
    cells = [(int(i), int(j)) for i, j in zip(rng.integers(0, 48, 6), rng.integers(0, 49, 6))]
    for code in range(3):  # at least one cell of each outcome
        cells.append(tuple(int(v) for v in np.argwhere(ph["code"] == code)[len(cells) % 3]))
    for i, j in cells:
        tr = compute.trajectory2d(eps, lrs[j], E, [theta1, theta2s[i]], steps)
        assert compute.OUTCOMES[ph["code"][i, j]] == tr["outcome"], (lrs[j], theta2s[i])
        seen.add(tr["outcome"])
        if tr["outcome"] != "diverged":  # exact (z, λ) map vs parameter-space GD: rounding only
            np.testing.assert_allclose(ph["ratio"][i, j], tr["final_ratio"], rtol=1e-9)
    assert seen == set(compute.OUTCOMES)


def test_second_order_run_is_eoslab_gd_output():
    from eoslab.dynamics import gd_output
    from eoslab.models import second_order

    r = compute.second_order_run(4, 6, 1.0, 1.0, 1.0, 0.3, 40, 3)
    ref, _ = gd_output(second_order.random(jax.random.PRNGKey(3), 4, 6, 1.0, 1.0, 1.0), 0.3, 40, k=2)
    np.testing.assert_array_equal(r["loss"], np.asarray(ref["loss"]))
    np.testing.assert_array_equal(r["ratio"], np.asarray(ref["eta_ntk_half"]))
    np.testing.assert_array_equal(r["ntk2_ratio"], 0.3 * np.asarray(ref["ntk_eigs"])[:, 1] / 2)
    with pytest.raises(EoslabError, match="D and P"):
        compute.second_order_run(500, 6, 1.0, 1.0, 1.0, 0.3, 40, 3)
    with pytest.raises(EoslabError, match="seed"):
        compute.second_order_run(4, 6, 1.0, 1.0, 1.0, 0.3, 40, -1)


@pytest.mark.parametrize("E", [0.0, 0.3, -0.2])
def test_minimiser_curve_is_the_minima_with_their_sharpness(E):
    eps, lr = 0.1, 1.0
    mc = compute.minimiser_curve(eps, lr, E, compute.box(eps, lr), n=50)
    f = lambda x, y: 0.5 * (x**2 - eps * y**2)
    np.testing.assert_allclose(f(mc["x0"], mc["y0"]), E, atol=1e-12)
    np.testing.assert_allclose(f(mc["x1"], mc["y1"]), E, atol=1e-12)
    # Reference for the sharpness: the top eigenvalue of the dense Hessian of L at the minimum.
    x0, y0 = mc["x0"][[3, 40]], mc["y0"][[3, 40]]
    hess = jax.jit(jax.hessian(quadratic2d.problem(eps, [0.0, 0.0], E).loss_fn))
    for x, y in zip(x0, y0):
        top = float(np.linalg.eigvalsh(np.asarray(hess(jnp.array([x, y]))))[-1])
        assert abs(lr * top / 2 - lr * (x**2 + eps**2 * y**2) / 2) < 1e-9
    assert np.array_equal(mc["stable"], mc["ratio"] < 1)


# --------------------------------------------------------------------------- runs (store, read-only)
def _make_store(root: Path, T: int = 60) -> list[str]:
    """A results root with a train-like run (eigs + residuals + edge + a central flow + an
    unknown array), a quadratic2d-like run and an interrupted one (no COMPLETE marker)."""
    store = Store(root)
    t = np.arange(T)
    eigs = np.stack([10 + 0.1 * t, 5 + 0.05 * t], 1)
    a = store.write(run_config("net", "train", {"lr": 0.1, "steps": T, "seed": 0}),
                    {"loss": np.exp(-0.05 * t), "hessian_eigs": eigs, "hessian_residuals": 1e-3 * np.ones_like(eigs),
                     "edge": np.full(T, 20.0), "central_flow_sharpness": 10 + 0.1 * t, "grad_norm": np.sqrt(t + 1.0),
                     "diverged": np.zeros(T, bool), "final_loss": np.float64(0.01)}, {"wall_s": 1.0})
    b = store.write(run_config("q2d", "quadratic2d", {"eps": 0.1, "lr": 2.0, "seed": 1}),
                    {"t": 3 * t, "eta_ntk_half": np.linspace(0.5, 0.97, T), "loss": np.exp(-t / 9.0),
                     "eta_ntk_limit": np.float64(0.97)}, {"wall_s": 0.5})
    bad = root / "net" / "0123456789abcdef"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    return [f"{p.parent.name}/{p.name}" for p in (a, b)]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def test_resolve_refuses_paths_outside_the_root(tmp_path):
    root = tmp_path / "runs"
    refs = _make_store(root)
    assert runs.resolve(root, refs[0]) == (root / refs[0]).resolve()
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", root / "net" / "link")
    for ref in ["../secret", "net/../../secret", str(tmp_path / "secret"), "/etc/passwd", "net/link",
                "~/x", "", "net//x", "a\x00b", "C:/Windows"]:
        with pytest.raises(EoslabError, match="refused|absolute|non-empty"):
            runs.resolve(root, ref)
    assert all(e.ref != "net/link" for e in runs.scan(root))  # a link out of the root is not listed


def test_scan_series_and_nothing_changes(tmp_path):
    root = tmp_path / "runs"
    refs = _make_store(root)
    before = _tree(root)
    entries = runs.scan(root)
    assert [e.ref for e in entries] == sorted(refs + ["net/0123456789abcdef"])
    bad = next(e for e in entries if e.run_id == "0123456789abcdef")
    assert "COMPLETE" in bad.problem
    rows = [runs.table_row(root, e) for e in entries]
    train = next(r for r in rows if r["ref"] == refs[0])
    assert train["kind"] == "train" and "lr=0.1" in train["params"] and "final_loss=0.01" in train["outcomes"]
    s = runs.series(runs.read(root, refs[0]))
    assert [n for n, *_ in s["eigs"]] == ["hessian_eigs[0]", "hessian_eigs[1]"]
    np.testing.assert_array_equal(s["eigs"][1][2], 1e-3 * np.ones(60))  # residuals as error bars
    np.testing.assert_array_equal(s["edge"], np.full(60, 20.0))
    assert [n for n, _ in s["flow_eigs"]] == ["central_flow_sharpness"]
    assert [n for n, _ in s["other"]] == ["grad_norm"] and [n for n, _ in s["loss"]] == ["loss"]
    (rname, ry), = s["ratio"]  # the top eigenvalue over the edge
    assert rname == "hessian_eigs[0] / edge" and np.allclose(ry, (10 + 0.1 * np.arange(60)) / 20.0)
    q = runs.series(runs.read(root, refs[1]))
    np.testing.assert_array_equal(q["x"], 3 * np.arange(60))  # the stored step index is the x axis
    assert [n for n, _ in q["ratio"]] == ["eta_ntk_half"] and np.all(q["edge"] == 1.0)  # 2/η from params
    with pytest.raises(EoslabError, match="not a valid run"):
        runs.read(root, "net/0123456789abcdef")
    assert runs.writing(root) == 0
    assert _tree(root) == before  # nothing moved (the invalid run is not quarantined), nothing written


def test_series_of_a_central_flow_run_and_standard_errors(tmp_path):
    T, store = 20, Store(tmp_path)
    flow = store.write(run_config("flow", "central_flow", {"lr": 0.5, "seed": 0}),
                       {"loss": np.ones(T), "gd_loss": np.ones(T), "sharpness": np.full(T, 4.0),
                        "gd_sharpness": np.full(T, 4.1), "trace_sigma": np.zeros(T), "n_active": np.ones(T, np.int64)},
                       {})
    s = runs.series(runs.read(tmp_path, f"flow/{flow.name}"))
    assert [n for n, _ in s["flow_loss"]] == ["loss"] and [n for n, _ in s["loss"]] == ["gd_loss"]
    assert [n for n, _ in s["flow_eigs"]] == ["sharpness"]
    assert [(n, e) for n, _, e in s["eigs"]] == [("gd_sharpness", None)]
    assert [n for n, _ in s["other"]] == ["trace_sigma"] and np.all(s["edge"] == 4.0)
    sgd = store.write(run_config("sgd", "train", {"lr": 0.5, "seed": 0}),
                      {"loss": np.ones(T), "batch_sharpness": np.full(T, 3.0), "batch_sharpness_se": np.full(T, 0.1)},
                      {})
    lrs = store.write(run_config("thr", "linear_net.threshold", {"seed": 0}),
                      {"lr": np.linspace(0.5, 1.5, 5), "converged_fraction": np.ones(5)}, {})
    s_lr = runs.series(runs.read(tmp_path, f"thr/{lrs.name}"))
    assert s_lr["x_name"] == "lr" and np.array_equal(s_lr["x"], np.linspace(0.5, 1.5, 5))
    assert [n for n, _ in s_lr["other"]] == ["converged_fraction"] and s_lr["edge"] is None
    (name, _, err), = runs.series(runs.read(tmp_path, f"sgd/{sgd.name}"))["eigs"]
    assert name == "batch_sharpness"
    np.testing.assert_array_equal(err, np.full(T, 0.1))  # the _se array as error bars


def _write_partial(root: Path, config: dict, arrays: dict, done: int, total: int) -> Path:
    """A run being written, through the store's writer (``Store.partial``: arrays then progress,
    each replaced atomically), as a training does while it runs; the folder's path."""
    part = Store(root).partial(config)
    part.update({k: v[:done] for k, v in arrays.items()}, done, total)
    return part.path


def _growing(T=30):
    t = np.arange(T)
    config = run_config("live", "train", {"lr": 0.1, "steps": T, "seed": 7})
    arrays = {"loss": np.exp(-0.1 * t), "hessian_eigs": np.stack([5 + 0.5 * t, 2 + 0.1 * t], 1),
              "hessian_residuals": np.full((T, 2), 1e-3), "edge": np.full(T, 20.0)}
    return config, arrays


def test_a_run_being_written_is_listed_and_grows(tmp_path):
    pytest.importorskip("bokeh", reason="eoslab view needs the [view] extra (bokeh)")
    from eoslab.view.app import RunBrowser

    root = tmp_path / "runs"
    refs = _make_store(root)
    config, arrays = _growing()
    part = _write_partial(root, config, arrays, 10, 30)
    ref = f"live/{part.name}"
    # A folder whose config does not hash to its name is not a run being written (the store's rule).
    bad = root / "live" / ".partial-0000000000000000"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "progress.json").write_text('{"done": 1, "total": 2, "updated": "x"}')
    updated = json.loads((part / "progress.json").read_text())["updated"]
    entries = {e.ref: e for e in runs.scan(root)}
    assert entries[ref].progress == (10, 30, updated) and entries[ref].problem is None
    assert "live/.partial-0000000000000000" not in entries and f"live/{part.name[9:]}" not in entries
    row = runs.table_row(root, entries[ref])
    assert row["status"] == "running 10/30" and row["steps"] == "10" and "lr=0.1" in row["params"]
    assert updated in row["outcomes"]
    s = runs.series(runs.read(root, ref))
    np.testing.assert_array_equal(s["x"], np.arange(10))
    np.testing.assert_array_equal(s["eigs"][0][1], arrays["hessian_eigs"][:10, 0])
    with pytest.raises(EoslabError, match="refused"):
        runs.read(root, "live/.partial-x/../../../etc")
    with pytest.raises(EoslabError, match="not a run being written"):
        runs.read(root, "live/.partial-0000000000000000")
    before = _tree(root)

    br = RunBrowser(root, None, preselect=[ref, refs[0]])
    assert br.selected == [ref, refs[0]] and "1 running" in br.status.text

    def curve(name, r=None):
        return br.curves()[("runs_eigs", r or ref, name)][1]

    np.testing.assert_array_equal(curve("hessian_eigs[0]"), arrays["hessian_eigs"][:10, 0])
    other = curve("hessian_eigs[0]", refs[0])
    assert len(br.bars["runs_eigs"].data["x"]) == 2 * 10 + 2 * 60  # both eigenvalues of both runs
    assert not br.refresh()  # nothing changed: nothing redrawn
    # The writer adds rows: the page gets them, the other run's curves are unchanged.
    _write_partial(root, config, arrays, 25, 30)
    assert br.refresh()
    np.testing.assert_array_equal(curve("hessian_eigs[0]"), arrays["hessian_eigs"][:25, 0])
    b = br.bars["runs_eigs"].data
    assert len(b["x"]) == 2 * 25 + 2 * 60
    mine = [hi for hi, c in zip(b["hi"], b["colour"]) if c == b["colour"][0]]  # the first run's bars
    np.testing.assert_allclose(sorted(mine),
                               sorted(np.concatenate([arrays["hessian_eigs"][:25, 0], arrays["hessian_eigs"][:25, 1]]) + 1e-3))
    np.testing.assert_array_equal(curve("hessian_eigs[0]", refs[0]), other)
    assert br.src_table.data["status"][br.src_table.data["ref"].index(ref)] == "running 25/30"
    # The run is stored and its partial folder removed: the browser follows it to the stored run.
    final = Store(root).partial(config).finish(arrays, {})  # Store.write, which removes the partial folder
    assert not part.exists()
    assert br.refresh()
    assert br.selected == [f"live/{final.name}", refs[0]] and ref not in br.src_table.data["ref"]
    np.testing.assert_array_equal(curve("hessian_eigs[0]", f"live/{final.name}"), arrays["hessian_eigs"][:, 0])
    assert "running" not in br.status.text
    # Read-only: the only changes are the test's own (the stored run written, the partial removed).
    after = _tree(root)
    assert {k: v for k, v in after.items() if not k.startswith(f"live/{final.name}")} == \
        {k: v for k, v in before.items() if not k.startswith(f"live/{part.name}")}


@pytest.mark.slow
def test_a_real_central_flow_run_is_overlaid_on_gd(tmp_path):
    """A stored run of the kind central_flow.network (tiny: 40 steps of a width-4 MLP; about a
    minute of compilation on a loaded 2-core machine, hence slow): the flow's predictions are
    dashed over GD's solid curves, and the edge is 2/η from the η the kind derived and stored."""
    pytest.importorskip("bokeh", reason="eoslab view needs the [view] extra (bokeh)")
    from eoslab.experiments.sweeps import run_sweep
    from eoslab.view.app import RunBrowser

    run_sweep({"experiment": {"name": "cf", "kind": "central_flow.network"}, "model": {"width": 4},
               "data": {"n": 20, "d": 4}, "dynamics": {"steps": 40, "start": 5, "k": 1, "k_max": 1, "window": 5},
               "sweep": {"seed": [0]}}, runs=tmp_path)
    (entry,) = runs.scan(tmp_path)
    run = runs.read(tmp_path, entry.ref)
    s = runs.series(run)
    a = run.arrays
    assert [n for n, _ in s["flow_loss"]] == ["loss", "avg_loss"] and "gd_loss" in [n for n, _ in s["loss"]]
    assert [n for n, _ in s["flow_eigs"]] == ["sharpness"] and [n for n, *_ in s["eigs"]] == ["gd_sharpness"]
    np.testing.assert_array_equal(s["edge"], np.full(40, 2 / float(a["lr"])))
    br = RunBrowser(tmp_path, None, preselect=[entry.ref])
    style = {(ref, name): dash for f in ("runs_loss", "runs_eigs") for ref, name, dash in
             zip(br.lines[f].data["ref"], br.lines[f].data["curve"], br.lines[f].data["dash"])}
    # GD solid; the flow's loss and time-averaged loss dashed, its sharpness dot-dashed.
    assert style[(entry.ref, "gd_loss")] == "solid" and style[(entry.ref, "gd_sharpness")] == "solid"
    assert style[(entry.ref, "loss")] == style[(entry.ref, "avg_loss")] == "dashed"
    assert style[(entry.ref, "sharpness")] == "dotdash"


# --------------------------------------------------------------------------- the Bokeh document (no browser)
def test_app_document(tmp_path):
    pytest.importorskip("bokeh", reason="eoslab view needs the [view] extra (bokeh)")
    from bokeh.document import Document

    from eoslab.view import make_app
    from eoslab.view.app import build

    root = tmp_path / "runs"
    refs = _make_store(root)
    (root / "net" / ".tmp-feedfacefeedface.host.1.ab").mkdir()  # a run being written by someone
    before = _tree(root)
    make_app(root)  # builds without serving
    parts = build(Document(), root)
    ex = parts["explorer"]
    ex.w_lr.value = 1.2
    tag = ex.src_traj.tags[0]
    tr = compute.trajectory2d(0.1, 1.2, 0.0, tag["theta0"], 2000)
    np.testing.assert_array_equal(ex.src_traj.data["x"], tr["theta"][:, 0])
    assert tag["final_ratio"] == tr["final_ratio"] and tag["outcome"] in ex.outcome.text
    ex._update_phase()
    assert ex.src_phase.data["image"][0].shape == (48, 49)
    ex.w_eps.value = 1.5  # refused with a message, nothing redrawn
    assert "eps must lie in (0, 1)" in ex.error.text and ex.src_traj.tags[0]["lr"] == 1.2
    br = parts["runs"]
    assert "1 being stored now" in br.status.text
    assert sorted(br.src_table.data["ref"]) == sorted(refs + ["net/0123456789abcdef"])
    br.src_table.selected.indices = [br.src_table.data["ref"].index(r) for r in refs]
    drawn = br.curves()
    assert ("runs_eigs", refs[0], "central_flow_sharpness") in drawn and ("runs_eigs", refs[0], "edge") in drawn
    assert ("runs_ratio", refs[1], "eta_ntk_half") in drawn and ("runs_loss", refs[1], "loss") in drawn
    np.testing.assert_array_equal(drawn[("runs_eigs", refs[0], "hessian_eigs[1]")][1], 5 + 0.05 * np.arange(60))
    bars = br.bars["runs_eigs"].data  # error bars: hessian_eigs ± hessian_residuals
    np.testing.assert_allclose(sorted(bars["hi"] - bars["lo"]), np.full(120, 2e-3))
    assert br.other_choice.options == ["grad_norm"]
    br._preselect(["../x", "/etc", refs[1]])
    assert "refused" in br.message.text and "absolute" in br.message.text
    assert br.selected == [refs[1]]
    assert _tree(root) == before


@pytest.mark.parametrize("args, match", [(["--port", "70000"], "--port"), (["--host", "bad host"], "--host"),
                                         (["--runs", "FILE"], "not a folder"),
                                         # an address that does not resolve: was socket.gaierror's traceback
                                         (["--host", "999.1.1.1", "--port", "0"], "cannot listen on 999.1.1.1")])
def test_cli_refuses_bad_options_before_any_work(args, match, tmp_path, capsys, monkeypatch):
    pytest.importorskip("bokeh", reason="eoslab view needs the [view] extra (bokeh)")
    from eoslab.cli import main
    from eoslab.view import app as view_app

    (tmp_path / "FILE").write_text("x")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(view_app, "build", lambda *a: pytest.fail("built the app despite a bad option"))
    with pytest.raises(SystemExit) as exc:
        main(["view", *args])
    assert exc.value.code == 2 and match in capsys.readouterr().err


# --------------------------------------------------------------------------- in a real browser
def _browser():
    pytest.importorskip("bokeh", reason="eoslab view needs the [view] extra (bokeh)")
    pytest.importorskip("selenium", reason="the browser tests need selenium (in the [test] extra)")
    chrome = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver) to run the eoslab view browser tests")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1280,1150", f"--user-data-dir={tempfile.mkdtemp(prefix='eoslab-chromium-')}"):
        opts.add_argument(a)
    opts.binary_location = chrome
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``eoslab view`` on a free loopback port, in a thread of this process (so it reuses the
    programs the tests above compiled), with headless Chromium."""
    import asyncio
    import threading

    browser = _browser()
    from tornado.ioloop import IOLoop

    from eoslab.view import start_server

    root = tmp_path_factory.mktemp("view") / "runs"
    refs = _make_store(root)
    box = {}
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(asyncio.new_event_loop())
        try:
            box["server"], box["url"] = start_server(root, port=0, host="127.0.0.1", io_loop=IOLoop.current())
        except BaseException as e:  # noqa: BLE001 - reported by the test
            box["error"] = e
            ready.set()
            return
        ready.set()
        box["server"].io_loop.start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(60)
    if "error" in box:
        browser.quit()
        raise box["error"]
    try:
        yield {"url": box["url"], "root": root, "refs": refs, "browser": browser}
    finally:
        browser.quit()
        loop = box["server"].io_loop
        loop.add_callback(lambda: (box["server"].stop(), loop.stop()))
        thread.join(10)


def _wait(browser, js, timeout=30.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = browser.execute_script(js)
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {js}")


def _model(name):
    return f"Bokeh.documents[0].get_model_by_name({json.dumps(name)})"


def _severe(browser):
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_browser_explorer_redraws_with_eoslab_values(served):
    b = served["browser"]
    b.get(served["url"])
    _wait(b, f"return window.Bokeh && Bokeh.documents.length && {_model('traj')} && "
             f"{_model('traj')}.data.x.length > 0")
    # Offline: every script, style and resource came from this server.
    urls = b.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"
                            ".concat([...document.scripts].map(s => s.src).filter(s => s))"
                            ".concat([...document.querySelectorAll('link[href]')].map(l => l.href))")
    origin = served["url"].rstrip("/")
    assert urls and all(u.startswith(origin) or u.startswith(("ws://127.0.0.1", "data:", "blob:")) for u in urls), urls
    # Change η by typing into its input, as a user does.
    inp = b.execute_script(f"const m = {_model('lr')}; "
                           "for (const v of Bokeh.index.all_views()) if (v.model === m) return v.input_el;")
    inp.clear()
    inp.send_keys("1.3\n")
    _wait(b, f"return {_model('traj')}.tags[0].lr === 1.3")
    tag = b.execute_script(f"return {_model('traj')}.tags[0]")
    x = np.array(b.execute_script(f"return Array.from({_model('traj')}.data.x)"))
    y = np.array(b.execute_script(f"return Array.from({_model('traj')}.data.y)"))
    ratio = np.array(b.execute_script(f"return Array.from({_model('ratio')}.data.ratio)"))
    # The same inputs through eoslab's Python API.
    ref, _ = gd(quadratic2d.problem(tag["eps"], tag["theta0"], tag["E"]), 1.3, tag["steps"], k=1,
                spectra="dense", record_params=True)
    th = np.asarray(ref["params"])
    np.testing.assert_array_equal(x, th[:, 0])
    np.testing.assert_array_equal(y, th[:, 1])
    np.testing.assert_array_equal(ratio, np.asarray(ref["eta_ntk_half"]))
    assert tag["final_ratio"] == float(summarize(ref)["final_eta_ntk_half"])
    assert tag["predicted_ratio"] == eos2d.eos_limit(tag["eps"], 1.3, tag["E"]).ratio
    text = b.execute_script(f"return {_model('outcome')}.text")
    assert tag["outcome"] in text and f"{tag['final_ratio']:.7g}" in text
    # A click on the landscape sets θ₀ there (the data point under the pointer, from Bokeh).
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    x_px, y_px = b.execute_script(f"const m = {_model('landscape')}; for (const v of Bokeh.index.all_views()) "
                                  "if (v.model === m) { const r = v.el.getBoundingClientRect(), f = v.frame.bbox; "
                                  "return [r.left + f.left + 0.75 * f.width, r.top + f.top + 0.3 * f.height]; }")
    clicker = ActionBuilder(b)
    clicker.pointer_action.move_to_location(int(x_px), int(y_px))
    clicker.pointer_action.click()
    clicker.perform()
    _wait(b, f"return {_model('traj')}.tags[0].theta0[0] !== {tag['theta0'][0]}")
    tapped = b.execute_script(f"return {_model('traj')}.tags[0]")
    assert tapped["theta0"][0] > 0 and tapped["theta0"][1] > 0 and tapped["lr"] == 1.3
    ref, _ = gd(quadratic2d.problem(tapped["eps"], tapped["theta0"], tapped["E"]), 1.3, tapped["steps"], k=1,
                spectra="dense", record_params=True)
    np.testing.assert_array_equal(np.array(b.execute_script(f"return Array.from({_model('traj')}.data.x)")),
                                  np.asarray(ref["params"])[:, 0])
    # Drag the θ₀ marker (Bokeh's point-drag tool, the landscape's active drag) with real mouse
    # input (Chrome DevTools' Input.dispatchMouseEvent: press on the marker, four moves, release).
    start = b.execute_script(f"return {_model('traj')}.tags[0].theta0")
    target = (0.3, 5.5)  # at η = 1.3: sharpens to the edge of stability
    to_px = (f"const m = {_model('landscape')}; for (const v of Bokeh.index.all_views()) if (v.model === m) {{ "
             "const r = v.canvas_view.el.getBoundingClientRect(), f = v.frame; "
             "return [r.left + f.x_scale.compute(arguments[0]), r.top + f.y_scale.compute(arguments[1]), "
             "Math.abs(f.x_scale.invert(1) - f.x_scale.invert(0)), Math.abs(f.y_scale.invert(1) - f.y_scale.invert(0))]; }")
    (x0, y0, _, _), (x1, y1, dx, dy) = b.execute_script(to_px, *start), b.execute_script(to_px, *target)

    def mouse(kind, x, y, buttons):
        b.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                       "buttons": buttons, "clickCount": 1})

    mouse("mouseMoved", x0, y0, 0)
    mouse("mousePressed", x0, y0, 1)
    for k in range(1, 5):
        mouse("mouseMoved", x0 + (x1 - x0) * k / 4, y0 + (y1 - y0) * k / 4, 1)
    mouse("mouseReleased", x1, y1, 0)
    _wait(b, f"return {_model('traj')}.tags[0].theta0[1] !== {start[1]}")
    dragged = b.execute_script(f"return {_model('traj')}.tags[0]")
    # Where the pointer was let go, to the pixel (one pixel = dx, dy in θ).
    assert abs(dragged["theta0"][0] - target[0]) <= 1.5 * dx and abs(dragged["theta0"][1] - target[1]) <= 1.5 * dy
    assert b.execute_script(f"const d = {_model('theta0')}.data; return [d.x[0], d.y[0]]") == dragged["theta0"]
    ref, _ = gd(quadratic2d.problem(dragged["eps"], dragged["theta0"], dragged["E"]), 1.3, dragged["steps"], k=1,
                spectra="dense", record_params=True)
    np.testing.assert_array_equal(np.array(b.execute_script(f"return Array.from({_model('traj')}.data.y)"), float),
                                  np.asarray(ref["params"])[:, 1])
    np.testing.assert_array_equal(np.array(b.execute_script(f"return Array.from({_model('ratio')}.data.ratio)"), float),
                                  np.asarray(ref["eta_ntk_half"]))
    assert dragged["final_ratio"] == float(summarize(ref)["final_eta_ntk_half"])
    assert dragged["outcome"] == "edge of stability"
    # The phase diagram follows, computed for the new η (its middle column).
    _wait(b, f"return Math.abs({_model('phase_data')}.data.x[0] - 1.3 * 0.1 + (1.3 * 1.8 / 48) / 2) < 1e-9")
    time.sleep(0.5)
    assert not _severe(b)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    b.save_screenshot(str(ARTIFACTS / "view-explorer.png"))


def test_browser_runs_read_only_and_live(served):
    b, root, refs = served["browser"], served["root"], served["refs"]
    before = _tree(root)
    b.get(served["url"] + f"?run={refs[0]},../../etc,/etc/passwd,{refs[1]}")
    _wait(b, f"return window.Bokeh && Bokeh.documents.length && {_model('runs_table')}.data.ref.length === 3")
    msg = b.execute_script(f"return {_model('runs_message')}.text")
    assert "../../etc" in msg and "refused" in msg and "/etc/passwd" in msg and "absolute" in msg
    table = b.execute_script(f"return {_model('runs_table')}.data.ref")
    assert sorted(b.execute_script(f"return {_model('runs_table')}.selected.indices")) == \
        sorted(table.index(r) for r in refs)
    drawn = b.execute_script(f"const d = {_model('runs_eigs_lines')}.data; return d.ref.map((r, i) => [r, d.curve[i]])")
    assert [refs[0], "hessian_eigs[0]"] in drawn and [refs[0], "central_flow_sharpness"] in drawn
    assert b.execute_script(f"return {_model('runs_eigs_bars')}.data.x.length") == 120  # error bars
    # A run stored while the page is open appears without a reload.
    new = Store(root).write(run_config("net", "train", {"lr": 0.2, "steps": 10, "seed": 5}),
                            {"loss": np.linspace(1, 0.1, 10)}, {})
    _wait(b, f"return {_model('runs_table')}.data.ref.includes('net/{new.name}')", timeout=15)
    # A run being written: listed as running, selected, its curves grow, then it is stored.
    config, arrays = _growing()
    part = _write_partial(root, config, arrays, 10, 30)
    pref = f"live/{part.name}"
    table = _model("runs_table")
    _wait(b, f"const t = {table}.data; const i = t.ref.indexOf('{pref}'); return i >= 0 && t.status[i] === 'running 10/30'",
          timeout=15)
    b.execute_script(f"const t = {table}; t.selected.indices = [t.data.ref.indexOf('{pref}')];")
    top = lambda ref: (f"((d) => {{ const i = d.ref.findIndex((r, k) => r === '{ref}' && d.curve[k] === 'hessian_eigs[0]'); "
                       f"return i < 0 ? [] : d.ys[i]; }})({_model('runs_eigs_lines')}.data)")
    _wait(b, f"return {top(pref)}.length === 10")
    _write_partial(root, config, arrays, 25, 30)
    _wait(b, f"return {top(pref)}.length === 25", timeout=15)
    np.testing.assert_array_equal(b.execute_script(f"return Array.from({top(pref)})"), arrays["hessian_eigs"][:25, 0])
    assert b.execute_script(f"const t = {table}.data; return t.status[t.ref.indexOf('{pref}')]") == "running 25/30"
    cells = (f"const m = {_model('runs')}; for (const v of Bokeh.index.all_views()) if (v.model === m) "
             "return [...v.shadow_el.querySelectorAll('.slick-cell')].map(c => c.textContent);")
    t0 = time.time()
    while "running 25/30" not in b.execute_script(cells) and time.time() - t0 < 5:
        time.sleep(0.1)
    assert "running 25/30" in b.execute_script(cells)  # the table as drawn, not only its data
    final = Store(root).partial(config).finish(arrays, {})
    fref = f"live/{final.name}"
    _wait(b, f"return {top(fref)}.length === 30", timeout=15)
    assert b.execute_script(f"const t = {table}; return t.selected.indices.map(i => t.data.ref[i])") == [fref]
    np.testing.assert_array_equal(b.execute_script(f"return Array.from({top(fref)})"), arrays["hessian_eigs"][:, 0])
    time.sleep(0.3)
    assert not _severe(b)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    b.save_screenshot(str(ARTIFACTS / "view-runs.png"))
    after = _tree(root)
    assert {k: v for k, v in after.items() if new.name not in k and not k.startswith("live")} == before  # the app changed nothing
