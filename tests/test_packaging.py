"""Installable like any package: the experiment configs ship inside the wheel, a user's own
folder adds to or overrides them, and a wheel installed into a fresh venv runs `eoslab list`
from an unrelated directory."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from eoslab.experiments.runner import BUILTIN_CONFIGS, config_dirs, load_experiments

REPO = Path(__file__).resolve().parents[1]
from toy_kind import write_config



def test_shipped_configs_live_in_the_package():
    names = {e.name for e in load_experiments()}
    assert BUILTIN_CONFIGS.parent.name == "experiments" and BUILTIN_CONFIGS.is_dir()
    assert len(list(BUILTIN_CONFIGS.glob("*.toml"))) == len(names) >= 10
    assert {"quadratic2d-eos-limit", "theorem2", "network-eos"} <= names


def test_user_configs_add_to_and_override_the_shipped_ones(tmp_path, monkeypatch):
    shipped = {e.name: e for e in load_experiments()}
    user = tmp_path / "mine"
    write_config(user)                                       # a new experiment, "toy"
    src = (BUILTIN_CONFIGS / "quadratic2d_eos_limit.toml").read_text()
    title = next(line for line in src.splitlines() if line.startswith("title"))
    (user / "my_limit.toml").write_text(src.replace(title, 'title = "my own version"'))
    exps = {e.name: e for e in load_experiments(user, builtin=True)}
    assert set(exps) == set(shipped) | {"toy"}
    assert exps["quadratic2d-eos-limit"].title == "my own version"
    assert exps["quadratic2d-eos-limit"].path == user / "my_limit.toml"
    assert exps["theorem2"].path == shipped["theorem2"].path
    assert [e.name for e in load_experiments(user)] == ["quadratic2d-eos-limit", "toy"]  # library: that folder only
    # With no folder given, ./experiments is the user's folder when it exists.
    monkeypatch.chdir(tmp_path)
    assert config_dirs() == [BUILTIN_CONFIGS]
    shutil.copytree(user, tmp_path / "experiments")
    assert config_dirs() == [BUILTIN_CONFIGS, Path("experiments")]
    assert {e.name: e.title for e in load_experiments()}["quadratic2d-eos-limit"] == "my own version"
    assert [e.name for e in load_experiments(only=["toy"])] == ["toy"]


@pytest.mark.slow  # ~10-20 s (builds a wheel); .ci/run runs it
def test_wheel_in_a_fresh_venv_lists_the_experiments(tmp_path):
    """Build the wheel (pip, build isolation as a user would), install it with --no-deps into a
    new venv whose dependencies come from this interpreter's site-packages (a .pth file, so the
    test does not download jax), and run `eoslab list` from an empty directory."""
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / f, tree / f)
    run = dict(capture_output=True, text=True, timeout=240)
    b = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                        str(tree)], **run)
    assert b.returncode == 0, b.stderr
    (wheel,) = (tmp_path / "dist").glob("eoslab-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, **run)
    py = venv / "bin" / "python"
    i = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                        "--no-index", str(wheel)], **run)
    assert i.returncode == 0, i.stderr
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, **run).stdout.strip()
    (Path(site) / "zz_eoslab_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(py), "-c", "import eoslab; print(eoslab.__file__)"], cwd=elsewhere, env=env,
                           check=True, **run).stdout
    assert where.startswith(str(venv))                        # the wheel's copy, not this checkout
    out = subprocess.run([str(venv / "bin" / "eoslab"), "list", "--runs", "runs"], cwd=elsewhere, env={
        **env, "COLUMNS": "250"}, **run)
    assert out.returncode == 0, out.stderr
    for name in ("quadratic2d-eos-limit", "theorem2", "network-eos", "linear-net-threshold"):
        assert name in out.stdout
    assert not list(elsewhere.iterdir())                      # listing created nothing
