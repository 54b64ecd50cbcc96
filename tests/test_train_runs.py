"""``eoslab train --runs ROOT``: the finished training is a run of the store (experiment ``train``)
that loads as an xarray Dataset; an interrupted one keeps its partial run and ``--resume``
continues it to the same arrays as an uninterrupted training (in-process, through
``eoslab.cli.main``)."""

import json

import numpy as np
import pytest

import eoslab
from eoslab.cli import main
from eoslab.experiments.store import Store

BASE = ["--width", "4", "--n", "16", "--lr", "0.05", "--k", "1", "--track", "hessian", "--no-progress"]
ARGS = ["train", *BASE, "--steps", "120", "--checkpoint-every", "50"]


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_train_runs_interrupt_resume_and_load(tmp_path, capsys, monkeypatch):
    pytest.importorskip("xarray")
    code, out, err = _run([*ARGS, "--runs", tmp_path / "ref", "--json"], capsys)
    assert code in (0, None), err
    ref = json.loads(out)
    [run] = Store(tmp_path / "ref").runs("train")
    assert ref["run"] == str(run.path) and Store(tmp_path / "ref").partial_runs("train") == []

    # Ctrl-C just after the first checkpoint (step 50): the partial run is kept and said so
    import eoslab.cli._parse as parse

    real_kept = parse.kept

    def interrupt_after_checkpoint(message):
        real_kept(message)
        if "checkpointed" in message:
            raise KeyboardInterrupt

    monkeypatch.setattr(parse, "kept", interrupt_after_checkpoint)
    root = tmp_path / "runs"
    code, _, err = _run([*ARGS, "--runs", root], capsys)
    monkeypatch.setattr(parse, "kept", real_kept)
    assert code == 130 and "50/120 steps" in err and "--resume" in err, err
    [part] = Store(root).partial_runs("train")
    assert (part.id, part.done, part.total) == (run.id, 50, 120) and part.arrays["loss"].shape == (50,)
    assert Store(root).runs("train") == []
    # without --resume it is not silently overwritten
    code, _, err = _run([*ARGS, "--runs", root], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--resume" in err, err
    code, out, err = _run([*ARGS, "--runs", root, "--resume", "--json"], capsys)
    assert code in (0, None) and "from step 50 of 120" in err, err
    res = json.loads(out)
    assert res["curves"] == ref["curves"]  # the same numbers as the uninterrupted training
    [done] = Store(root).runs("train")
    assert done.id == run.id and Store(root).partial_runs("train") == []
    for key, a in run.arrays.items():
        assert np.array_equal(done.arrays[key], a, equal_nan=True), key
    # resuming a finished run reuses it
    code, out, err = _run([*ARGS, "--runs", root, "--resume"], capsys)
    assert code in (0, None) and "already stored" in out

    ds = eoslab.load_dataset(done.path)
    assert ds.sizes["step"] == 120 and ds.sizes["eig"] == 1 and ds["hessian_eigs"].dims == ("step", "eig")
    assert ds.attrs["optimizer"] == "gd" and ds.attrs["lr"] == 0.05 and ds.attrs["edge"] == pytest.approx(40.0)
    assert json.loads(ds.attrs["params"])["steps"] == 120 and float(ds["final_loss"]) == ref["summary"]["final_loss"]
    exp = eoslab.load_dataset(root / "train")
    assert exp.sizes["run"] == 1 and exp["loss"].dims == ("run", "step")  # the result, not the parameter
    assert str(exp["param_loss"].values[0]) == "mse" and float(exp["lr"].values[0]) == 0.05


@pytest.mark.slow
def test_resume_after_ctrl_c_in_another_process(tmp_path):
    """The user's case: `eoslab train --runs` killed by Ctrl-C after a checkpoint, continued by
    another process with --resume: the same curves as a training that was never interrupted."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = shutil.which("eoslab", path=str(Path(sys.executable).parent)) or shutil.which("eoslab")
    if exe is None or sys.platform == "win32":
        pytest.skip("needs the eoslab console script")
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    ref_args = [exe, "train", *BASE, "--steps", "5000"]
    args = [*ref_args, "--checkpoint-every", "100", "--runs", str(tmp_path / "runs")]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    progress = None
    while time.time() < deadline and p.poll() is None:
        found = list((tmp_path / "runs" / "train").glob(".partial-*/progress.json"))
        if found and json.loads(found[0].read_text())["done"] >= 100:
            progress = found[0]
            break
        time.sleep(0.05)
    assert progress is not None, "no checkpoint was written"
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1]
    done = json.loads(progress.read_text())["done"]
    assert p.returncode == 130 and f"{done}/5000 steps" in err, err
    assert 100 <= done < 5000, done
    subprocess.run([*args, "--resume", "--json-out", str(tmp_path / "resumed.json")], check=True, env=env,
                   capture_output=True)
    subprocess.run([*ref_args, "--json-out", str(tmp_path / "ref.json")], check=True, env=env, capture_output=True)
    resumed, ref = (json.loads((tmp_path / f).read_text()) for f in ("resumed.json", "ref.json"))
    assert resumed["curves"] == ref["curves"]
