"""The ``eoslab run`` / ``eoslab theory`` contracts: JSON keys, numbers, errors (exit 2, one line)."""

import json
import subprocess
import sys

import pytest

from eoslab.cli import main
from eoslab.theory import eos_limit

RUN = ["run", "quadratic2d", "--eps", "0.1", "--lr", "4", "--inits", "64", "--steps", "3000", "--seed", "0"]


def _call(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def test_run_json_contract(capsys):
    code, out, _ = _call(RUN + ["--json"], capsys)
    assert code == 0
    res = json.loads(out)
    for key in ("n_eos", "n_below", "n_diverged", "median_ratio", "predicted_ratio"):
        assert key in res
    assert res["n_eos"] + res["n_below"] + res["n_diverged"] == 64
    # The default box is in the EoS basin at ε = 0.1, and the EoS runs sit near the prediction
    # (at ε = 0.1 single runs spread over ~±0.01 around it: the limit is only weakly universal).
    assert res["n_eos"] >= 48
    assert res["predicted_ratio"] == pytest.approx(eos_limit(0.1, lr=4.0).ratio, abs=1e-12)
    assert abs(res["median_ratio"] - res["predicted_ratio"]) < 5e-3
    # same seed → same result
    code, out2, _ = _call(RUN + ["--json"], capsys)
    assert json.loads(out2) == res


def test_run_table_and_plot(capsys, tmp_path):
    code, out, _ = _call(RUN + ["--plot", str(tmp_path / "fig.png"), "--plot-runs", "2"], capsys)
    assert code == 0
    assert "edge of stability" in out and "predicted" in out and "diverged" in out
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.svg").exists()


def test_theory_eos_limit(capsys):
    code, out, _ = _call(["theory", "eos-limit", "--eps", "0.1", "--lr", "4", "--json"], capsys)
    res = json.loads(out)
    ref = eos_limit(0.1, lr=4.0)
    assert code == 0 and res["predicted_ratio"] == pytest.approx(ref.ratio, abs=1e-12)
    assert res["predicted_lambda"] == pytest.approx(ref.lam, abs=1e-12)
    code, out, _ = _call(["theory", "eos-limit", "--eps", "0.02"], capsys)
    assert code == 0 and "0.99482629" in out and "λ∞ =" not in out  # λ∞ only with --lr


@pytest.mark.parametrize("args,message", [
    (["run", "foo"], "unknown model"),
    (["run", "quadratic2d", "--lr", "-1"], "--lr"),
    (["run", "quadratic2d", "--lr", "0"], "--lr"),
    (["run", "quadratic2d", "--eps", "1.5"], "eps"),
    (["run", "quadratic2d", "--eps", "0"], "eps"),
    (["run", "quadratic2d", "--inits", "0"], "--inits"),
    (["theory", "eos-limit", "--eps", "-0.1"], "eps"),
    (["theory", "eos-limit", "--eps", "0.1", "--lr", "0"], "--lr"),
])
def test_bad_input_is_one_line_exit_2(args, message, capsys):
    code, out, err = _call(args, capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_error_has_no_traceback():
    p = subprocess.run([sys.executable, "-c", "from eoslab.cli import main; main()", "run", "foo"],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("error: unknown model 'foo'") and "Traceback" not in p.stderr


@pytest.mark.slow  # a fresh interpreter importing JAX: ~3 s
def test_python_dash_m_eoslab_is_the_command():
    p = subprocess.run([sys.executable, "-m", "eoslab", "run", "foo"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip() == "error: unknown model 'foo'; `eoslab run` accepts: quadratic2d"


def test_run_with_fewer_steps_than_the_default_tail(capsys):
    """--tail defaults to 100 or --steps if fewer: `--steps 50` alone is not an error about --tail."""
    code, out, err = _call(["run", "quadratic2d", "--inits", "4", "--steps", "50", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["n_runs"] == 4
    code, _, err = _call(["run", "quadratic2d", "--inits", "4", "--steps", "50", "--tail", "51"], capsys)
    assert code == 2 and "--tail" in err


@pytest.mark.slow
def test_eos_limit_says_when_there_is_no_limit_to_predict(capsys):
    code, out, err = _call(["theory", "eos-limit", "--eps", "0.9"], capsys)
    assert code == 0 and "no edge-of-stability limit to predict at ε = 0.9" in err and "nan" in out
