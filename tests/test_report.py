"""The claims report: pass/fail logic, a planted failing claim, exit codes, and
`eoslab reproduce --quick --only` end to end on the 2-D model."""

import math
import re
import shutil
from pathlib import Path

import pytest

import eoslab  # noqa: F401
from eoslab.cli import main
from eoslab.experiments.claims import decide, evaluate
from eoslab.experiments.runner import BUILTIN_CONFIGS, collect, execute, load_experiments
from eoslab.experiments.store import Store

from toy_kind import write_config



def _cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code or 0


def test_decide_rule():
    assert decide("approx", 1.0, 1.1, 0.1 + 1e-12) and not decide("approx", 1.0, 1.2, 0.1)
    assert decide("le", 1.05, 1.0, 0.05 + 1e-12) and not decide("le", 1.06, 1.0, 0.05)
    assert decide("le", -5.0, 1.0, 0.0)
    assert decide("ge", 0.95, 1.0, 0.05 + 1e-12) and not decide("ge", 0.94, 1.0, 0.05)
    assert not decide("approx", math.nan, 1.0, 1.0) and not decide("le", math.inf, 1.0, 1.0)


def test_claim_uses_sigmas_and_reports_measure_errors(tmp_path):
    e = load_experiments(write_config(tmp_path / "cfg", seeds=range(4), tolerance=0.0).parent)[0]
    store = Store(tmp_path / "runs")
    execute(e, "quick", store)
    res = collect(e, "quick", store)
    [r] = evaluate(res)
    # 4σ of the measured standard error around the exact prediction 0: passes (|z| < 4 here).
    assert r.passed and r.allowed == pytest.approx(4 * r.measured.uncertainty)
    assert r.measured.uncertainty == pytest.approx(1 / math.sqrt(500 * 4))
    res.kind.measures["broken"] = lambda runs: 1 / 0
    try:
        bad = type(e.claims[0])(**{**e.claims[0].__dict__, "measure": "broken"})
        res.experiment = type(e)(**{**e.__dict__, "claims": (bad,)})
        [r] = evaluate(res)
        assert not r.passed and "ZeroDivisionError" in r.error
    finally:
        del res.kind.measures["broken"]


def test_planted_failing_claim_exit_code_and_report(tmp_path):
    cfg = tmp_path / "cfg"
    write_config(cfg, seeds=range(3), tolerance=0.0)
    # A second claim that must fail: the mean is far from 5 and no uncertainty allowance.
    text = (cfg / "toy.toml").read_text()
    text += text[text.index("[[claims]]"):].replace("toy-mean-zero", "toy-planted-failure").replace(
        'predict = "zero"', "predicted = 5.0").replace("sigmas = 4.0", "sigmas = 0.0")
    (cfg / "toy.toml").write_text(text)
    out = tmp_path / "report"
    code = _cli("reproduce", "--quick", "--only", "toy", "--configs", str(cfg), "--runs", str(tmp_path / "runs"), "--out", str(out),
                "--no-figures")
    assert code == 1
    md = (out / "report.md").read_text()
    row = {m.group(2): m.group(1) for m in re.finditer(r"\| \*\*(PASS|FAIL)\*\* \| `([^`]+)`", md)}
    assert row == {"toy-mean-zero": "PASS", "toy-planted-failure": "FAIL"}
    assert "1/2 claims pass" in md
    html = (out / "report.html").read_text()
    assert "class='FAIL'" in html and "class='PASS'" in html
    # `eoslab report` from the store alone gives the same verdict.
    assert _cli("report", "--only", "toy", "--configs", str(cfg), "--runs", str(tmp_path / "runs"), "--out", str(out)) == 1


def test_bad_config_exit_code_2(tmp_path, capsys):
    cfg = tmp_path / "cfg"
    path = write_config(cfg)
    path.write_text(path.read_text().replace("n = 1000", "n = 1000\nbogus = 1"))
    assert _cli("reproduce", "--configs", str(cfg), "--runs", str(tmp_path / "r"), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "toy.toml:12" in err and "bogus" in err and "Traceback" not in err
    assert _cli("reproduce", "--only", "nope", "--configs", str(cfg)) == 2


def test_reproduce_quick_only_end_to_end(tmp_path):
    """The real 2-D EoS-limit experiment: runs, figures, report, all claims pass; then the same
    config with a planted wrong prediction reuses the stored runs and fails."""
    cfg, runs, out = tmp_path / "cfg", tmp_path / "runs", tmp_path / "out"
    cfg.mkdir()
    src = BUILTIN_CONFIGS / "quadratic2d_eos_limit.toml"
    shutil.copy(src, cfg / src.name)
    name = "quadratic2d-eos-limit"
    assert _cli("reproduce", "--quick", "--only", name, "--configs", str(cfg), "--runs", str(runs),
                "--out", str(out)) == 0
    md = (out / "report.md").read_text()
    n_claims = src.read_text().count("[[claims]]")
    assert "FAIL" not in md and md.count("| **PASS** |") == n_claims
    assert re.search(r"eos-limit-eps0.02-reference.*\| 1\.98965\d+ \| ≈ 1\.98965\d+", md)
    for fig in ("quadratic2d_sharpness", "quadratic2d_landscape"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 10_000
        assert (out / "figures" / f"{fig}.svg").read_text().lstrip().startswith("<?xml")
    html = (out / "report.html").read_text()
    assert html.count("src='data:image/png;base64,") == 2 and "src='http" not in html and "<link" not in html
    stored = {p: p.stat().st_mtime_ns for p in (runs / name).glob("*/arrays.npz")}
    assert len(stored) == 3

    planted = (cfg / src.name).read_text().replace("predicted = 1.989653", "predicted = 1.98")
    (cfg / src.name).write_text(planted)
    assert _cli("reproduce", "--quick", "--only", name, "--configs", str(cfg), "--runs", str(runs),
                "--out", str(out), "--no-figures") == 1
    md = (out / "report.md").read_text()
    assert re.search(r"\| \*\*FAIL\*\* \| `eos-limit-eps0.02-reference`", md) and md.count("| **PASS** |") == n_claims - 1
    assert {p: p.stat().st_mtime_ns for p in (runs / name).glob("*/arrays.npz")} == stored  # not recomputed

    assert _cli("list", "--configs", str(cfg), "--runs", str(runs)) == 0
    rid = next(iter(stored)).parent.name
    assert _cli("show", rid[:10], "--runs", str(runs)) == 0


def test_sharded_reproduce_then_report(tmp_path, capsys):
    cfg, runs, out = tmp_path / "cfg", tmp_path / "runs", tmp_path / "out"
    write_config(cfg, seeds=range(10), tolerance=0.0)
    common = ["--only", "toy", "--configs", str(cfg), "--runs", str(runs), "--out", str(out), "--no-figures"]
    assert _cli("reproduce", "--shard", "0/2", *common) == 0
    assert not (out / "report.md").exists()                 # a shard writes no report
    assert _cli("report", *common) == 2                     # runs of shard 1 are missing
    assert "runs are missing" in capsys.readouterr().err
    assert _cli("reproduce", "--shard", "1/2", *common) == 0
    n = len([p for p in (runs / "toy").iterdir() if not p.name.startswith(".")])
    assert n == 10
    assert _cli("report", *common) == 0 and "1/1 claims pass" in (out / "report.md").read_text()


def test_report_order_and_readable_claims():
    """Sections follow the papers (Theorem 1, Theorem 2, networks, companions, eoslab's checks),
    every shipped claim's statement reads in one or two table lines, and no source is an
    internal note."""
    from eoslab.report.order import PARTS, ordered, part_of

    exps = ordered(load_experiments())
    parts = [part_of(e.kind) for e in exps]
    assert parts == sorted(parts) and parts[0] == 0 and exps[0].name == "quadratic2d-eos-limit"
    assert [PARTS[p][0].split(":")[0] for p in sorted(set(parts))] == [
        "Theorem 1", "Theorem 2", "Networks", "Companion papers", "Beyond the papers", "eoslab's own checks"]
    assert part_of("tracking.accuracy") == len(PARTS) - 1 and part_of("networks.digits_eos") == 2
    for e in exps:
        for text in (e.source, *(c.source for c in e.claims)):
            assert not re.search(r"science\.md|\bissue \d|work item", text), f"{e.name}: {text}"
        for c in e.claims:
            assert len(c.statement) <= 130, f"{e.name}/{c.id}: {len(c.statement)} characters"
