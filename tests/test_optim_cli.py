"""`eoslab train --optimizer ...`: bad combinations are one-line errors (exit 2) before any work;
the JSON names the optimizer and its edge."""

import json

import pytest

from eoslab.cli import main

BAD = [
    (["--optimizer", "gd", "--b1", "0.9"], "--b1"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum"),
    (["--optimizer", "rmsprop", "--b1", "0.5"], "--b1"),
    (["--optimizer", "momentum", "--eps", "1e-8"], "--eps"),
    (["--optimizer", "lamb"], "--optimizer"),
    (["--optimizer", "adam", "--b2", "1"], "--b2"),
    (["--optimizer", "adam", "--eps", "-1"], "--eps"),
    (["--n", "10", "--batch-size", "11"], "--batch-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--steps", "5", "--warmup", "5"], "--warmup"),
]


@pytest.mark.parametrize("args,word", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_optimizer_options_are_refused(args, word, capsys, monkeypatch):
    import eoslab.models.mlp as mlp

    def tripwire(*a, **k):  # nothing may be built before the options are checked
        raise AssertionError("work started")

    monkeypatch.setattr(mlp, "network_problem", tripwire)
    with pytest.raises(SystemExit) as exc:
        main(["train", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and word in err[0], err


@pytest.mark.slow
def test_train_json_names_optimizer_and_edge(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--width", "4", "--n", "8", "--steps", "3", "--optimizer", "adam", "--lr", "0.01",
              "--b1", "0.8", "--track", "none", "--batch-size", "4", "--json", "--no-progress"])
    out = capsys.readouterr().out
    assert exc.value.code in (0, None)
    res = json.loads(out)
    s, c = res["summary"], res["config"]
    assert s["optimizer"] == "adam" and s["edge"] == pytest.approx(3.6 / (0.2 * 0.01)) and s["batch_size"] == 4
    assert c["optimizer"] == "adam" and c["b1"] == 0.8 and c["batch_size"] == 4
    assert res["curves"]["edge"][0] == pytest.approx(s["edge"])
