"""Ctrl-C: the ``eoslab`` program exits 130 with one line saying what was kept, during training
(a subprocess, signalled once its progress line shows the training running) and during the
seconds-long start-up (JAX's import, where a KeyboardInterrupt used to be swallowed)."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

EOSLAB = shutil.which("eoslab", path=str(Path(sys.executable).parent)) or shutil.which("eoslab")
pytestmark = pytest.mark.skipif(EOSLAB is None or sys.platform == "win32", reason="needs the eoslab console script")


def _env():
    src = Path(__file__).resolve().parents[1] / "src"
    return {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "EOSLAB_PROGRESS_EVERY": "0.2"}


def _interrupt_when(args, marker: str | None, delay: float = 0.0, timeout: float = 120.0):
    """Start ``eoslab ARGS``; send SIGINT once a stderr line contains ``marker`` (or after
    ``delay`` s); return (exit code, stderr lines)."""
    p = subprocess.Popen([EOSLAB, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    lines, seen = [], threading.Event()

    def read():
        for line in p.stderr:
            lines.append(line.rstrip("\n"))
            if marker is not None and marker in line:
                seen.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    if marker is not None:
        assert seen.wait(timeout), f"never saw {marker!r}: {lines[-5:]}"
    else:
        time.sleep(delay)
    p.send_signal(signal.SIGINT)
    try:
        code = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail(f"eoslab did not stop after Ctrl-C: {lines[-5:]}")
    t.join(5)
    return code, lines


def test_ctrl_c_during_training_exits_130_with_one_line():
    code, lines = _interrupt_when(["train", "--n", "16", "--width", "8", "--steps", "10000000", "--track", "none"],
                                  "training:")
    text = "\n".join(lines)
    assert code == 130, text
    assert lines[-1].startswith("interrupted: "), text
    assert "Traceback" not in text and "Exception ignored" not in text


def test_ctrl_c_during_start_up_is_not_swallowed():
    code, lines = _interrupt_when(["run", "quadratic2d", "--inits", "100", "--steps", "100000000"], None, delay=1.0)
    text = "\n".join(lines)
    assert code == 130, text
    assert lines[-1] == "interrupted: nothing was written", text
    assert "Traceback" not in text and "Exception ignored" not in text


@pytest.mark.slow  # ≈ 25 s: the batch's compilation
def test_ctrl_c_during_a_batched_sweep_on_threads_exits_130(tmp_path):
    """`eoslab sweep` trains a chunk of points as one batch, its parts on one thread per core:
    Ctrl-C once the members are training stops the threads' queued chunks and exits 130."""
    f = tmp_path / "lr.toml"
    f.write_text('[experiment]\nname = "int"\nkind = "networks.train"\n[model]\nwidth = 8\n[data]\nn = 16\n'
                 '[dynamics]\nsteps = 10000000\n[sweep]\nlr = [0.05, 0.1, 0.2]\n')
    code, lines = _interrupt_when(["sweep", str(f), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                                   "--no-figures"], "members not diverged")
    text = "\n".join(lines)
    assert code == 130, text
    assert lines[-1] == "interrupted: nothing was written", text
    assert "Traceback" not in text and "Exception ignored" not in text
