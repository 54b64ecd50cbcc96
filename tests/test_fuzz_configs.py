"""Mutated experiment configs: every bad value is refused when the config is read (before any
run), with one message naming ``file:line`` and the key; and a bad config is found by
``load_experiments`` before any experiment computes."""

import re
from pathlib import Path

import pytest

from eoslab.errors import EoslabError
from eoslab.experiments.runner import BUILTIN_CONFIGS, load_experiments
from eoslab.experiments.schema import load_config

CONFIGS = Path(BUILTIN_CONFIGS)
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?")


def mutate(text: str, table: str, key: str, value: str) -> tuple[str, int]:
    """``text`` with ``key = value`` set in the first ``[table]`` (an existing single-line
    value replaced); returns the new text and the 1-based line of the key."""
    out, cur, seen, line_no = [], None, 0, None
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            cur = m.group(1).replace(" ", "")
            seen += cur == table
        if cur == table and seen == 1 and not m and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            continue
        out.append(line)
        if m and cur == table and seen == 1:
            out.append(f"{key} = {value}")
            line_no = len(out)
    assert line_no is not None, f"no [{table}] table"
    return "\n".join(out) + "\n", line_no


CASES = [  # (config file, table, key, bad value, words the message must contain)
    ("two_layer_phases.toml", "model", "lam1", "-1.0", "positive"),
    ("two_layer_phases.toml", "dynamics", "lr", "inf", "finite"),
    ("two_layer_phases.toml", "dynamics", "steps", "0", "≥ 1"),
    ("two_layer_phases.toml", "dynamics", "steps", "99999999999999999999", "too large"),
    ("two_layer_phases.toml", "model", "samples", "-3", "≥ 0"),
    ("two_layer_phases.toml", "init", "alpha0", "nan", "finite"),
    ("linear_net_threshold.toml", "model", "depth", "0", "≥ 1"),
    ("linear_net_threshold.toml", "model", "width", "-1", "≥ 1"),
    ("linear_net_threshold.toml", "model", "target", "nan", "finite"),
    ("linear_net_threshold.toml", "init", "inits", "0", "≥ 1"),
    ("linear_net_threshold.toml", "dynamics", "grad_tol", "nan", "finite"),
    ("linear_net_threshold.toml", "dynamics", "lr_grid", "[-1.0, 0.5]", "positive"),
    ("linear_net_threshold.toml", "dynamics", "lr_grid", "[0.5, nan]", "finite"),
    ("linear_net_threshold.toml", "dynamics", "lr_grid", "[0.5, inf]", "finite"),
    ("linear_net_threshold.toml", "dynamics", "lr_grid", "[]", "at least one"),
    ("quadratic2d_eos_limit.toml", "model", "E", "nan", "finite"),
    ("quadratic2d_eos_limit.toml", "experiment", "seed", "99999999999999999999", "too large"),
    ("quadratic2d_eos_limit.toml", "experiment", "seed", "-1", "≥ 0"),
    ("quadratic2d_eos_limit.toml", "claims", "tolerance", "inf", "finite"),
    ("quadratic2d_eos_limit.toml", "claims", "tolerance", "1e300", "too large"),
    ("quadratic2d_eos_limit.toml", "claims", "tolerance", "-0.1", "≥ 0"),
    ("quadratic2d_eos_limit.toml", "claims", "sigmas", "nan", "finite"),
    ("highdim_eos.toml", "claims", "predicted", "nan", "finite"),
]


@pytest.mark.parametrize("name,table,key,value,words", CASES, ids=[f"{c[0][:12]}-{c[2]}={c[3]}" for c in CASES])
def test_bad_config_value_names_file_line_key(tmp_path, name, table, key, value, words):
    text, line = mutate((CONFIGS / name).read_text(encoding="utf-8"), table, key, value)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EoslabError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:{line}:"), msg
    assert key in msg and words in msg, msg


def test_non_utf8_config_names_file_and_line(tmp_path):
    text = (CONFIGS / "two_layer_phases.toml").read_bytes()
    bad = text.replace(b"[model]", b"[model]\n# caf\xe9", 1)
    path = tmp_path / "two_layer_phases.toml"
    path.write_bytes(bad)
    line = bad[:bad.index(b"\xe9")].count(b"\n") + 1
    with pytest.raises(EoslabError, match=rf"{re.escape(str(path))}:{line}: not UTF-8"):
        load_config(path)
    # the folder listing (which reads every declared name first) reports it the same way
    with pytest.raises(EoslabError, match="not UTF-8"):
        load_experiments(tmp_path)


def test_a_bad_config_stops_everything_before_any_run(tmp_path):
    """Two configs, the second broken: loading the folder fails, so nothing was run."""
    (tmp_path / "a.toml").write_text((CONFIGS / "two_layer_phases.toml").read_text(encoding="utf-8"),
                                     encoding="utf-8")
    text, line = mutate((CONFIGS / "linear_net_threshold.toml").read_text(encoding="utf-8"), "dynamics",
                        "steps", "0")
    (tmp_path / "b.toml").write_text(text, encoding="utf-8")
    with pytest.raises(EoslabError, match=rf"b.toml:{line}: .*steps"):
        load_experiments(tmp_path)


def test_a_byte_order_mark_is_not_an_error(tmp_path):
    """A UTF-8 file saved with a BOM (Windows editors) is the same config."""
    text = (CONFIGS / "two_layer_phases.toml").read_bytes()
    path = tmp_path / "two_layer_phases.toml"
    path.write_bytes(b"\xef\xbb\xbf" + text)
    import dataclasses

    assert dataclasses.replace(load_config(path), path=None) == dataclasses.replace(
        load_config(CONFIGS / "two_layer_phases.toml"), path=None)


SWEEP_HEAD = '[experiment]\nname = "q"\nkind = "quadratic2d.eos_limit"\n[model]\neps = 0.1\n[dynamics]\nsteps = 500\n'


@pytest.mark.parametrize("sweep,line,words", [
    ('[sweep]\nlr = "0.5:1:100000"\ntheta2_scaled = "1.8:2.6:100000"\n', 8, "10,000,000,000 points"),
    ('[sweep]\nlr = "0.5:1:99999999999"\n', 9, "at most 100,000 values"),
])
def test_a_sweep_too_large_to_plan_is_refused_at_once(tmp_path, sweep, line, words):
    """Planning a 10¹⁰-point grid would hang (it was killed after 120 s); the file says why."""
    from eoslab.experiments.sweeps import load_sweep

    path = tmp_path / "big.toml"
    path.write_text(SWEEP_HEAD + sweep, encoding="utf-8")
    with pytest.raises(EoslabError, match=rf"{re.escape(str(path))}:{line}: .*{words}"):
        load_sweep(path)


def test_a_parameter_missing_in_every_mode_is_not_blamed_on_quick(tmp_path):
    from eoslab.experiments.sweeps import load_sweep

    path = tmp_path / "q.toml"
    path.write_text(SWEEP_HEAD.replace("eps = 0.1\n", "") + "[sweep]\nlr = [1.0]\n", encoding="utf-8")
    with pytest.raises(EoslabError, match=r"parameter 'eps' has no value: set it in \[model\] or give it a \[sweep\]"):
        load_sweep(path)


def test_a_sweep_point_whose_network_cannot_fit_is_refused_before_any_run(tmp_path):
    from eoslab.experiments.sweeps import run_sweep

    sweep = {"experiment": {"name": "wide", "kind": "networks.train"}, "model": {"depth": 1000},
             "data": {"n": 8}, "dynamics": {"steps": 3}, "sweep": {"width": [4, 1_000_000]}}
    with pytest.raises(EoslabError, match=r"width = 1000000.*|network \(depth 1000, width 1000000.*memory"):
        run_sweep(sweep, runs=tmp_path)
    assert not list((tmp_path / "wide").glob("*/meta.json"))  # not even the small point ran
