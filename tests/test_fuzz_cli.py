"""Bad input on the command line: every command, every option with a value a user can get
wrong. Each must end with exit code 2 and one line ``error: …`` on stderr naming the option,
no traceback, and **no computation started** (the library entry points each command calls
are replaced by a tripwire for the whole test). Run in-process (``eoslab.cli.main``), so the
table costs parsing only."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eoslab.cli import main

#: (module, attribute) of every computation a command may start.
TRIPWIRES = [
    ("eoslab.theory.eos2d", "batch_comparison"), ("eoslab.theory.eos2d", "limit_comparison"),
    ("eoslab.theory.eos2d", "gd_check"), ("eoslab.theory.eos2d", "eos_limit"),
    ("eoslab.theory.theorem2", "check"), ("eoslab.theory.theorem2", "scaling_table"),
    ("eoslab.dynamics.highdim", "sweep_highdim"), ("eoslab.dynamics.highdim", "batched_gd_output"),
    ("eoslab.theory.two_layer", "simulate_two_layer"), ("eoslab.theory.linear_net", "threshold_comparison"),
    ("eoslab.models.mlp", "network_problem"), ("eoslab.dynamics.train", "train"),
    ("eoslab.experiments.runner", "execute"), ("eoslab.experiments.runner", "load_experiments"),
    ("eoslab.experiments.sweeps", "run_sweep"), ("eoslab.experiments.distributed", "execute_dask"),
    ("eoslab.experiments.distributed", "start_client"), ("eoslab.dynamics.batched", "train_batch"),
    ("eoslab.dynamics.central_flow", "run"), ("eoslab.experiments.store", "save_trajectory"),
    ("eoslab.experiments.trainings", "train_stored"), ("eoslab.cli.flow", "flow_problem"),
]


class Started(Exception):
    pass


@pytest.fixture
def tripwires(monkeypatch):
    import importlib

    for mod, name in TRIPWIRES:
        def trip(*a, _n=f"{mod}.{name}", **k):
            raise Started(f"computation started: {_n}")

        try:
            module = importlib.import_module(mod)
        except ImportError:  # an optional extra (e.g. the viewer's bokeh) not installed
            continue
        monkeypatch.setattr(module, name, trip, raising=False)


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _assert_refused(args, capsys, words=()):
    code, out, err = _run(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2, (args, code, err[-500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
    assert "Traceback" not in err and "Exception" not in err
    for w in words:
        assert w in lines[0], (args, lines[0])


BIG = "99999999999999999999"
#: The commands with ``--runs ROOT`` (their results stored as a run of ROOT/<command>).
RUNS_COMMANDS = [["run", "quadratic2d"], ["theory", "eos-limit", "--eps", "0.1"], ["theory", "eos-table"],
                 ["two-layer"], ["linear-net"], ["theorem2"], ["theorem2-scaling"], ["highdim-sweep"],
                 ["nonlinear"], ["flow"]]
A_FILE = "pyproject.toml"  # a regular file: anything "under" it cannot be written

CASES = [
    # eoslab run quadratic2d
    (["run", "foo"], "unknown model"),
    (["run", "quadratic2d", "--eps", "0"], "--eps"), (["run", "quadratic2d", "--eps", "1"], "--eps"),
    (["run", "quadratic2d", "--eps", "nan"], "--eps"), (["run", "quadratic2d", "--lr", "0"], "--lr"),
    (["run", "quadratic2d", "--lr", "inf"], "--lr"), (["run", "quadratic2d", "--lr", "abc"], "--lr"),
    (["run", "quadratic2d", "--inits", "0"], "--inits"), (["run", "quadratic2d", "--inits", BIG], "--inits"),
    (["run", "quadratic2d", "--inits", "1000000000000"], "--inits"),
    (["run", "quadratic2d", "--steps", "0"], "--steps"), (["run", "quadratic2d", "--steps", BIG], "--steps"),
    (["run", "quadratic2d", "--seed", BIG], "--seed"), (["run", "quadratic2d", "--seed", "-1"], "--seed"),
    (["run", "quadratic2d", "--target", "nan"], "--target"), (["run", "quadratic2d", "--target", "inf"], "--target"),
    (["run", "quadratic2d", "--tail", "500", "--steps", "50"], "--tail"),
    (["run", "quadratic2d", "--plot-runs", "-1"], "--plot-runs"),
    (["run", "quadratic2d", "--theta1", "0.3,0.1"], "--theta1"), (["run", "quadratic2d", "--theta2", "1"], "--theta2"),
    (["run", "quadratic2d", "--theta1", "a,b"], "--theta1"),
    (["run", "quadratic2d", "--plot", f"{A_FILE}/fig.png"], "--plot"),
    (["run", "quadratic2d", "--json-out", "."], "--json-out"),
    # eoslab theory
    (["theory", "eos-limit", "--eps", "-0.1"], "--eps"), (["theory", "eos-limit", "--eps", "0.1", "--lr", "0"], "--lr"),
    (["theory", "eos-limit", "--eps", "0.1", "--order", "9"], "--order"),
    (["theory", "eos-limit", "--eps", "0.1", "--target", "nan"], "--target"),
    (["theory", "eos-limit", "--eps", "0.1", "--json-out", f"{A_FILE}/x.json"], "--json-out"),
    (["theory", "eos-limit", "--eps", "0.1", "--order", "²"], "--order"),  # str.isdigit(): was int()'s traceback
    (["theory", "eos-table", "--inits", "2147483647"], "--inits"),
    (["theory", "eos-table", "--eps", ""], "--eps"), (["theory", "eos-table", "--eps", "0.1,,0.2"], "--eps"),
    (["theory", "eos-table", "--eps", "0.1,2"], "--eps"), (["theory", "eos-table", "--inits", "0"], "--inits"),
    (["theory", "eos-table", "--plot", f"{A_FILE}/x.png"], "--plot"),
    # theorem2, theorem2-scaling, highdim-sweep, nonlinear
    (["theorem2", "--datapoints", "1"], "--datapoints"), (["theorem2", "--params", "0"], "--params"),
    (["theorem2", "--datapoints", "10000000", "--params", "10000000"], "memory"),
    (["theorem2", "--samples", "1"], "--samples"), (["theorem2", "--sigma-z", "-1"], "--sigma-z"),
    (["theorem2", "--sigma-j", "nan"], "--sigma-j"), (["theorem2", "--sigma-q", "0"], "--sigma-q"),
    (["theorem2", "--seed", BIG], "--seed"),
    (["theorem2", "--sigma-z", "1e300"], "--sigma-z"),  # λ̈ and σ_z² overflow: was an OverflowError traceback
    (["theorem2", "--sigma-j", "1e-300"], "--sigma-j"),  # λ = 0: every ratio 0/0, printed as NaN
    (["theorem2", "--datapoints", "3", "--params", "2", "--samples", "2147483647"], "--samples"),
    (["theorem2-scaling", "--sigma-z", "1,1e300"], "--sigma-z"),
    (["theorem2-scaling", "--ratios", "0"], "--ratios"), (["theorem2-scaling", "--ratios", "nan"], "--ratios"),
    (["theorem2-scaling", "--ratios", "-1"], "--ratios"), (["theorem2-scaling", "--sizes", ""], "--sizes"),
    (["theorem2-scaling", "--sizes", "1.5"], "--sizes"), (["theorem2-scaling", "--sigma-z", "0"], "--sigma-z"),
    (["theorem2-scaling", "--out", A_FILE], "--out"), (["theorem2-scaling", "--samples", "0"], "--samples"),
    (["highdim-sweep", "--datapoints", "0"], "--datapoints"), (["highdim-sweep", "--params", "-1"], "--params"),
    (["highdim-sweep", "--lrs", ""], "--lrs"), (["highdim-sweep", "--lrs", "-1"], "--lrs"),
    (["highdim-sweep", "--lrs", "0"], "--lrs"), (["highdim-sweep", "--lrs", "nan"], "--lrs"),
    (["highdim-sweep", "--lrs", "1:2"], "--lrs"), (["highdim-sweep", "--seeds", "0"], "--seeds"),
    (["highdim-sweep", "--seeds", "-1"], "--seeds"), (["highdim-sweep", "--sigma-z", "-1"], "--sigma-z"),
    (["highdim-sweep", "--sharpening", "-1"], "--sharpening"), (["highdim-sweep", "--sharpening", "nan"], "--sharpening"),
    (["highdim-sweep", "--hessian-every", "-1"], "--hessian-every"), (["highdim-sweep", "--out", A_FILE], "--out"),
    (["highdim-sweep", "--datapoints", "100000", "--params", "100000"], "memory"),
    (["nonlinear", "--datapoints", "0"], "--datapoints"), (["nonlinear", "--params", "-2"], "--params"),
    (["nonlinear", "--sigma-z", "-1"], "--sigma-z"), (["nonlinear", "--sharpening", "nan"], "--sharpening"),
    (["nonlinear", "--lr", "0"], "--lr"), (["nonlinear", "--steps", "0"], "--steps"),
    (["nonlinear", "--plot", f"{A_FILE}/x.png"], "--plot"),
    (["nonlinear", "--steps", "2000000000"], "--steps"),  # was 120 s of silence, killed
    # two-layer, linear-net
    (["two-layer", "--lr", "0"], "--lr"), (["two-layer", "--lr", "inf"], "--lr"), (["two-layer", "--steps", "0"], "--steps"),
    (["two-layer", "--lam1", "-1"], "--lam1"), (["two-layer", "--lam2", "0"], "--lam2"),
    (["two-layer", "--theta0", "1,2"], "--theta0"), (["two-layer", "--theta0", "1,nan,2"], "--theta0"),
    (["two-layer", "--samples", "-1"], "--samples"), (["two-layer", "--box-lo", "0,0,0"], "--box-hi"),
    (["two-layer", "--box-lo", "1,0,0", "--box-hi", "0,1,1"], "--box-lo"),
    (["two-layer", "--box-lo", "-inf,-inf,-inf", "--box-hi", "-inf,-inf,-inf"], "--box-hi"),  # θ → -inf: NaN
    (["two-layer", "--box-lo", "inf,0,0", "--box-hi", "inf,1,1"], "--box-lo"),
    (["two-layer", "--steps", "2147483647"], "--steps"),  # was named "--samples 0"
    (["two-layer", "--plot", f"{A_FILE}/x.png"], "--plot"), (["two-layer", "--json-out", "."], "--json-out"),
    (["linear-net", "--target", "nan"], "--target"), (["linear-net", "--target", "0"], "--target"),
    (["linear-net", "--depth", "0"], "--depth"), (["linear-net", "--width", "-1"], "--width"),
    (["linear-net", "--inits", "0"], "--inits"), (["linear-net", "--steps", "0"], "--steps"),
    (["linear-net", "--lrs", "1:0:3"], "--lrs"), (["linear-net", "--lr-grid", "-1,nan,inf"], "--lrs"),
    (["linear-net", "--lrs", ""], "--lrs"), (["linear-net", "--grad-tol", "nan"], "--grad-tol"),
    (["linear-net", "--init-scale", "0"], "--init-scale"), (["linear-net", "--loss", "l1"], "--loss"),
    (["linear-net", "--out", A_FILE], "--out"),
    # train
    (["train", "--lr", "0"], "--lr"), (["train", "--lr", "nan"], "--lr"), (["train", "--tol", "nan"], "--tol"),
    (["train", "--tol", "0"], "--tol"), (["train", "--tol", "-1"], "--tol"), (["train", "--steps", "0"], "--steps"),
    (["train", "--k", "0"], "--k"), (["train", "--track", "foo"], "--track"), (["train", "--model", "rnn"], "--model"),
    (["train", "--activation", "gelu"], "--activation"), (["train", "--data", "mnist"], "--data"),
    (["train", "--data", "digits", "--n", "1798"], "--n"),
    (["train", "--loss", "hinge"], "--loss"), (["train", "--momentum", "1"], "--momentum"),
    (["train", "--n", "0"], "--n"), (["train", "--spectra-examples", "0"], "--spectra-examples"),
    (["train", "--dtype", "float16"], "--dtype"), (["train", "--seed", BIG], "--seed"),
    (["train", "--json-out", f"{A_FILE}/x.json"], "--json-out"), (["train", "--plot", "."], "--plot"),
    (["train", "--optimizer", "sgdx"], "--optimizer"), (["train", "--b1", "0.9"], "--b1"),
    (["train", "--optimizer", "adam", "--b1", "1"], "--b1"), (["train", "--optimizer", "adam", "--b2", "nan"], "--b2"),
    (["train", "--batch-size", "0"], "--batch-size"), (["train", "--warmup", "-1"], "--warmup"),
    (["train", "--optimizer", "momentum", "--momentum", "1"], "--momentum"),
    (["train", "--resume"], "--resume"), (["train", "--checkpoint-every", "10"], "--checkpoint-every"),
    (["train", "--runs", "no-such-eoslab-root", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["train", "--runs", A_FILE], "--runs"), (["train", "--runs", f"{A_FILE}/r"], "--runs"),
    (["train", "--runs", "no-such-eoslab-root", "--resume"], "--resume"),
    (["train", "--runs", "no-such-eoslab-root", "--taylor"], "--taylor"),
    # flow
    (["flow", "--activation", "gelu"], "--activation"), (["flow", "--k", "3", "--k-max", "2"], "--k-max"),
    (["flow", "--n", "1"], "--n"), (["train", "--n", "1"], "--n"),
    (["train", "--data-dir", "."], "--data-dir"), (["flow", "--data-dir", "."], "--data-dir"),
    (["train", "--lr", "1e300"], "--lr"), (["flow", "--lr", "1e300", "--dtype", "float32"], "--lr"),
    (["flow", "--steps", "2000000000", "--substeps", "2000000000"], "memory"),
    (["flow", "--model", "second-order", "--datapoints", "100000", "--params", "100000"], "memory"),
    # reproduce, report, list, show
    (["reproduce", "--only", ""], "--only"), (["reproduce", "--only", "a,,b"], "--only"),
    (["reproduce", "--configs", "no-such-folder"], "--configs"), (["reproduce", "--shard", "3/2"], "--shard"),
    (["report", "--only", ""], "--only"), (["list", "--configs", "no-such-folder"], "--configs"),
    (["reproduce", "--workers", "2"], "--workers"), (["reproduce", "--dask", "localhost:1"], "--dask"),
    # sweep (A_FILE is not a sweep file: options are checked before the file is read)
    (["sweep", "no-such.toml"], "no-such.toml"), (["sweep", A_FILE], "[experiment]"),
    (["sweep", A_FILE, "--workers", "2"], "--workers"), (["sweep", A_FILE, "--dask", "localhost:1"], "--dask"),
    (["sweep", A_FILE, "--dask", "--workers", "0"], "--workers"),
    (["sweep", A_FILE, "--dask", "--resources", "GPU"], "--resources"),
    (["sweep", A_FILE, "--resources", "GPU=1"], "--resources"), (["sweep", A_FILE, "--shard", "3/2"], "--shard"),
    (["sweep", A_FILE, "--out", A_FILE], "--out"), (["sweep", A_FILE, "--runs", f"{A_FILE}/runs"], "--runs"),
    # --runs ROOT of the commands whose results are data: a file, under a file, unwritable, ROOT/<command> a file
    *[([*cmd, "--runs", root], "--runs") for cmd in RUNS_COMMANDS for root in (A_FILE, f"{A_FILE}/runs")],
    (["two-layer", "--runs", "/proc"], "--runs"), (["theorem2", "--runs", "/proc/runs"], "--runs"),
    (["nonlinear", "--runs", "file-root"], "nonlinear"),
    # an empty path would silently be the current folder; a list naming an operator twice; absurd shards
    *[([*cmd, "--runs", ""], "--runs") for cmd in RUNS_COMMANDS],
    (["sweep", A_FILE, "--out", ""], "--out"), (["reproduce", "--out", " "], "--out"),
    (["reproduce", "--runs", ""], "--runs"), (["train", "--data-dir", ""], "--data-dir"),
    (["train", "--json-out", ""], "--json-out"), (["train", "--plot", ""], "--plot"), (["sweep", ""], "file"),
    (["train", "--track", "hessian,ntk,hessian"], "--track"),
    (["reproduce", "--shard", "0/100001"], "--shard"), (["sweep", A_FILE, "--shard", ""], "--shard"),
]


@pytest.mark.parametrize("args,words", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_option_is_refused_before_any_work(args, words, capsys, tripwires, monkeypatch, tmp_path):
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / A_FILE, tmp_path / A_FILE)
    (tmp_path / "file-root").mkdir()
    (tmp_path / "file-root" / "nonlinear").write_text("a file where the experiment's folder goes")
    monkeypatch.chdir(tmp_path)
    _assert_refused(args, capsys, (words,))


@pytest.mark.parametrize("args", [["train", "--width", "1000000", "--depth", "1000", "--n", "10"],
                                  ["train", "--n", "100000000"],
                                  ["flow", "--width", "1000000", "--depth", "1000", "--n", "10"]])
def test_a_network_or_data_set_too_large_is_refused_before_training(args, capsys, monkeypatch):
    """Sized from the shapes alone (the problem builders themselves run, so no tripwire on them)."""
    import eoslab.dynamics.central_flow as cf
    import eoslab.dynamics.train as tr

    def trip(*a, **k):
        raise Started("computation started")

    monkeypatch.setattr(tr, "train", trip)
    monkeypatch.setattr(cf, "run", trip)
    _assert_refused(args, capsys, ("memory",))


def test_usage_errors_are_one_line(capsys):
    for args in (["run"], ["nosuchcommand"], ["run", "quadratic2d", "--nosuch", "1"], ["train", "--lr"]):
        _assert_refused(args, capsys)


# ---- hypothesis: any non-positive or non-finite number for a positive option ------------------
POSITIVE_FLOAT_OPTIONS = [("run", "quadratic2d", "--lr"), ("theorem2", "--sigma-z"), ("nonlinear", "--lr"),
                          ("two-layer", "--lam1"), ("linear-net", "--init-scale"), ("train", "--lr"),
                          ("highdim-sweep", "--sharpening")]
bad_positive = st.one_of(st.floats(max_value=0.0, allow_nan=False), st.just(math.nan), st.just(math.inf),
                         st.just(-math.inf))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opt=st.sampled_from(POSITIVE_FLOAT_OPTIONS), value=bad_positive)
def test_any_bad_positive_number_is_refused(opt, value, capsys, tripwires):
    _assert_refused([*opt, repr(value) if math.isfinite(value) else str(value)], capsys, (opt[-1],))


bad_lists = st.one_of(
    st.just(""), st.just(","), st.just("1,,2"), st.just("1:2"), st.just("1:2:0"), st.just("1:2:x"),
    st.lists(st.floats(max_value=0.0, allow_nan=False), min_size=1, max_size=4).map(lambda v: ",".join(map(repr, v))),
    st.lists(st.sampled_from(["nan", "inf", "-inf", "x"]), min_size=1, max_size=3).map(",".join))
LIST_OPTIONS = [("highdim-sweep", "--lrs"), ("theorem2-scaling", "--ratios"), ("theorem2-scaling", "--sigma-z"),
                ("linear-net", "--lrs"), ("highdim-sweep", "--sigma-z")]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opt=st.sampled_from(LIST_OPTIONS), value=bad_lists)
def test_any_bad_list_is_refused(opt, value, capsys, tripwires):
    _assert_refused([*opt, value], capsys, (opt[-1],))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opt=st.sampled_from([("run", "quadratic2d", "--inits"), ("run", "quadratic2d", "--steps"),
                            ("theorem2", "--samples"), ("highdim-sweep", "--seeds"), ("linear-net", "--inits"),
                            ("train", "--steps"), ("run", "quadratic2d", "--seed")]),
       value=st.one_of(st.integers(max_value=-1), st.just(0), st.integers(min_value=2**32)))
def test_any_bad_count_is_refused(opt, value, capsys, tripwires):
    if opt[-1] == "--seed" and value == 0:  # seed 0 is valid
        value = -1
    _assert_refused([*opt, str(value)], capsys, (opt[-1],))


def test_the_tripwires_are_live(tripwires):
    """A valid command reaches its computation (so the table above proves none started)."""
    with pytest.raises(Started, match="theorem2.check"):
        main(["theorem2", "--samples", "3", "--datapoints", "4", "--params", "4"])
    with pytest.raises(Started, match="network_problem"):
        main(["train", "--steps", "3"])


def test_every_option_has_help_and_a_lower_case_name():
    import typer

    from eoslab.cli import _load_commands, app

    _load_commands()

    def walk(c, path):
        if hasattr(c, "commands"):
            for name, sub in c.commands.items():
                yield from walk(sub, path + [name])
        else:
            yield " ".join(path), c

    missing, upper = [], []
    for path, c in walk(typer.main.get_command(app), []):
        for p in c.params:
            if p.name != "help" and not getattr(p, "help", None):
                missing.append(f"{path} {p.name}")
            upper += [f"{path} {o}" for o in getattr(p, "opts", []) if o.startswith("--") and o != o.lower()]
    assert not missing, missing
    assert not upper, upper
