"""Experiment configs (validation with line numbers), sweep expansion, sharding, and resuming a
sweep killed mid-way in a subprocess."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import eoslab  # noqa: F401  (float64)
from eoslab.errors import EoslabError
from eoslab.experiments import load_config
from eoslab.experiments.runner import Shard, execute, load_experiments, plan
from eoslab.experiments.schema import find_line
from eoslab.experiments.store import Store
from toy_kind import TOY, write_config

TESTS = Path(__file__).parent

KINDS = {"test.toy": TOY}

BASE = """\
[experiment]
name = "toy"
kind = "test.toy"
title = "t"
source = "s"

[model]
scale = 2

[dynamics]
n = 10

[sweep]
seed = [0, 1]
"""


def _err(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(EoslabError) as e:
        load_config(p, KINDS)
    return str(e.value)


def _line_of(text, needle):
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_valid_config_coerces_types(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(BASE)
    e = load_config(p, KINDS)
    assert e.params["model"]["scale"] == 2.0 and isinstance(e.params["model"]["scale"], float)
    assert [pt["seed"] for pt in e.points("quick")] == [0, 1]
    assert e.points("full")[0]["shift"] == [0.0, 0.0]


def test_unknown_key_names_key_and_line(tmp_path):
    text = BASE.replace("n = 10\n", "n = 10\nstpes = 3\n")
    msg = _err(tmp_path, text)
    assert "stpes" in msg and "[dynamics]" in msg
    assert f"c.toml:{_line_of(text, 'stpes')}:" in msg


def test_unknown_table_and_claim_key_lines(tmp_path):
    text = BASE + "\n[modle]\nscale = 1\n"
    msg = _err(tmp_path, text)
    assert "[modle]" in msg and f":{_line_of(text, '[modle]')}:" in msg
    claim = ('\n[[claims]]\nid = "a"\nstatement = "s"\nsource = "s"\nmeasure = "grand_mean"\npredicted = 0\n'
             'tolerance = 1\nwhy = "w"\n')
    text = BASE + claim + claim.replace('id = "a"', 'id = "b"').replace("why =", "tolerence = 2\nwhy =")
    msg = _err(tmp_path, text)
    assert "'tolerence'" in msg and f":{_line_of(text, 'tolerence')}:" in msg


def test_wrong_types_are_rejected_with_line(tmp_path):
    for old, new, expect in [("n = 10", "n = 1.5", "expected an integer"),
                             ("n = 10", 'n = "ten"', "expected an integer"),
                             ("scale = 2", "scale = true", "expected a number"),
                             ("scale = 2", "scale = -1", "must be > 0"),
                             ("n = 10", "n = 10\nshift = [1.0]", "list of 2 numbers"),
                             ("seed = [0, 1]", "seed = 3", "non-empty list")]:
        text = BASE.replace(old, new)
        msg = _err(tmp_path, text)
        key = new.split("\n")[-1].split("=")[0].strip()
        assert expect in msg and key in msg, msg
        assert f"c.toml:{_line_of(text, new.splitlines()[-1])}:" in msg, msg


def test_missing_required_and_claim_errors(tmp_path):
    msg = _err(tmp_path, BASE.replace("n = 10\n", ""))
    assert "'n'" in msg and "no value" in msg
    msg = _err(tmp_path, BASE.replace('title = "t"\n', ""))
    assert "missing required key 'title'" in msg
    claim = ('\n[[claims]]\nid = "a"\nstatement = "s"\nsource = "s"\nmeasure = "{m}"\n{pred}\n'
             'tolerance = 1\nwhy = "w"\n{extra}')
    cases = [(dict(m="nope", pred="predicted = 0", extra=""), "unknown measure 'nope'"),
             (dict(m="grand_mean", pred="predict = 'nope'", extra=""), "unknown prediction 'nope'"),
             (dict(m="grand_mean", pred="", extra=""), "exactly one of 'predicted'"),
             (dict(m="grand_mean", pred="predicted = 0", extra="where = { seed = 7 }\n"), "not a value"),
             (dict(m="grand_mean", pred="predicted = 0", extra="relation = 'lt'\n"), "must be one of")]
    for kw, expect in cases:
        assert expect in _err(tmp_path, BASE + claim.format(**kw)), expect


def test_find_line_variants():
    text = textwrap.dedent("""\
        [a]
        x = 1
        [quick.dynamics]
        steps = 2
        [[claims]]
        id = "p"
        [[claims]]
        id = "q"
        where = { eps = 0.1 }
        [quick]
        model.eps = 3
        """)
    assert find_line(text, "a", "x") == 2
    assert find_line(text, "quick.dynamics", "steps") == 4
    assert find_line(text, "claims", "id", occurrence=1) == 8
    assert find_line(text, "claims", "eps", occurrence=1) == 9
    assert find_line(text, "quick.model", "eps") == 11
    assert find_line(text, "missing") == 1


def test_sweep_modes_and_overrides(tmp_path):
    text = BASE.replace("seed = [0, 1]", "seed = [0, 1]\nscale = [1, 2, 3]") + "\n[quick.sweep]\nscale = [5]\n"
    p = tmp_path / "c.toml"
    p.write_text(text)
    e = load_config(p, KINDS)
    assert len(e.points("full")) == 6 and {pt["scale"] for pt in e.points("quick")} == {5.0}
    p.write_text(text.replace("[sweep]", "[sweep]\nmode = 'zip'"))
    assert "different lengths" in str(pytest.raises(EoslabError, load_config, p, KINDS).value)


def test_shipped_configs_validate():
    exps = load_experiments()  # the shipped configs (package data)
    assert {"quadratic2d-eos-limit", "quadratic2d-phase"} <= {e.name for e in exps}
    for e in exps:
        assert e.claims, f"{e.name} has no claim"
        for c in e.claims:
            assert c.why.strip(), f"{e.name}/{c.id}: tolerance without justification"


def test_shards_partition_the_runs(tmp_path):
    e = load_config(write_config(tmp_path / "cfg", seeds=range(12)))
    ids = [pr.rid for pr in plan(e, "quick", Store(tmp_path / "runs"))]
    owned = [[r for r in ids if Shard(i, 3).owns(r)] for i in range(3)]
    assert sorted(sum(owned, [])) == sorted(ids)
    assert Shard.parse("2/3") == Shard(2, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(EoslabError):
            Shard.parse(bad)
    for i in range(3):
        execute(e, "quick", Store(tmp_path / "runs"), Shard(i, 3))
        n_done = len([p for p in (tmp_path / "runs" / "toy").iterdir() if not p.name.startswith(".")])
        assert n_done == sum(len(o) for o in owned[:i + 1])


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")}


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from toy_kind import register_toy
register_toy()
from eoslab.experiments.runner import execute, load_experiments
from eoslab.experiments.store import Store
execute(load_experiments({cfg!r})[0], "quick", Store({root!r}))
"""


def test_killed_sweep_resumes_reusing_completed_runs(tmp_path):
    cfg, root = tmp_path / "cfg", tmp_path / "runs"
    write_config(cfg, seeds=range(40))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(TESTS), cfg=str(cfg), root=str(root)))
    # 0.3 s per run in the subprocess (not part of the runs' identity): ~12 s to finish, killed after 4.
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "EOSLAB_TOY_DELAY": "0.3"})
    exp_dir = root / "toy"
    deadline = time.time() + 180
    try:
        while time.time() < deadline:
            # only renamed (complete) runs: a .tmp-* folder also holds COMPLETE just before its rename
            done = [p for p in exp_dir.glob("*/COMPLETE") if not p.parent.name.startswith(".")] \
                if exp_dir.exists() else []
            if len(done) >= 4 or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = _snapshot(exp_dir)
    n_before = len({k.split("/")[0] for k in before})
    assert 4 <= n_before < 40
    # A killed writer can leave a temporary folder; plant one of a dead process as it would be.
    import socket
    stale = exp_dir / f".tmp-0123456789abcdef.{socket.gethostname()}.{proc.pid}.dead"
    stale.mkdir()
    (stale / "arrays.npz").write_bytes(b"partial")

    e = load_experiments(cfg)[0]
    progress = []
    execute(e, "quick", Store(root), on_progress=lambda d, t: progress.append((d, t)))
    assert progress[0] == (n_before, 40)          # only the missing runs were computed
    after = _snapshot(exp_dir)
    assert {k: after[k] for k in before} == before  # completed runs reused bit-for-bit, untouched
    assert len({k.split("/")[0] for k in after}) == 40
    assert not stale.exists()
    assert all(pr.run is not None for pr in plan(e, "quick", Store(root)))
