"""``eoslab train``: a network trained on data by GD, momentum, Nesterov, RMSProp or Adam (full batch
or mini-batch), tracking Hessian/NTK (and preconditioned Hessian) eigenvalues against the
optimizer's own edge.

Example (the paper's network experiment, on the synthetic data)::

    eoslab train --model mlp --depth 2 --width 256 --activation tanh --data synthetic \\
        --n 1000 --lr 0.02 --steps 2000 --track-every 1 --plot out.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from eoslab.cli import _parse as cli
from eoslab.cli import app
from eoslab.errors import (InvalidValue, between, check, check_representable, integer, positive, positive_int,
                           seed_rule)


def _parse_classes(text: Optional[str]):
    if text is None:
        return None
    items = [c.strip() for c in text.split(",") if c.strip()]
    return [int(c) if c.isdigit() else c for c in items]


def format_summary(s: dict, prefix: str = "") -> str:
    lines = [f"{prefix}final loss {s['final_loss']:.5g} (min {s['min_loss']:.5g})"
             + (f", final accuracy {s['final_accuracy']:.3f}" if "final_accuracy" in s else "")
             + (" — DIVERGED" if s["diverged"] else "")]
    from eoslab.plots.networks import EDGE_LABELS

    name = EDGE_LABELS.get(s.get("optimizer", "gd"), "edge")
    what = "preconditioned sharpness λ₁(P⁻¹H)" if s.get("operator") == "preconditioned" else "sharpness λ₁"
    if "max_sharpness" in s:
        line = (f"{prefix}{what}: {s['initial_sharpness']:.4g} at step 0, max {s['max_sharpness']:.4g}")
        if "crossings" in s:
            line += (f" vs the {s['optimizer']} edge {name} = {s['edge']:.4g}; crossed it upward {s['crossings']} times"
                     + (f" (first at step {s['first_crossing_step']}, {s['steps_above_edge']} steps above)"
                        if s["crossings"] else ""))
        else:
            line += f" (edge of {s.get('optimizer', 'this optimizer')} unknown)"
        lines.append(line)
        if "second_below_edge" in s:
            lines.append(f"{prefix}second eigenvalue λ₂: max {s['max_second']:.4g} — "
                         + (f"stayed below {name}" if s["second_below_edge"] else f"went ABOVE {name}"))
        lines.append(f"{prefix}tracking: {s['products_per_track']:.2f} Hessian-vector products per tracked step,"
                     f" max residual ‖Hv − λv‖ of λ₁ {s['max_residual']:.2g}")
    lines.append(f"{prefix}wall time {s['seconds']:.1f} s")
    return "\n".join(lines)


DATASETS = ("synthetic", "cifar10", "digits")
OPTIMIZERS = ("gd", "momentum", "nesterov", "rmsprop", "adam")
#: Which optimizer takes which option (anything else is a bad combination).
_TAKES = {"gd": (), "momentum": ("--momentum",), "nesterov": ("--momentum",), "rmsprop": ("--b2", "--eps"),
          "adam": ("--b1", "--b2", "--eps")}


def _optimizer_choice(optimizer, momentum, b1, b2, eps) -> str:
    """The optimizer's name, after refusing options it does not take (one line, exit 2)."""
    if optimizer is None:
        optimizer = "momentum" if momentum else "gd"
    cli.choice(optimizer, "--optimizer", OPTIMIZERS)
    given = {"--momentum": momentum, "--b1": b1, "--b2": b2, "--eps": eps}
    for opt, value in given.items():
        if value is not None and opt not in _TAKES[optimizer] and not (opt == "--momentum" and value == 0
                                                                       and optimizer == "gd"):
            raise InvalidValue(f"{opt} does not apply to --optimizer {optimizer} (it takes "
                               f"{', '.join(_TAKES[optimizer]) or 'no optimizer options'})")
    for opt in ("--momentum", "--b1", "--b2"):
        if given[opt] is not None:
            check(opt, given[opt], between(0, 1, hi_open=True))
    if eps is not None:
        check("--eps", eps, between(0, float("inf"), hi_open=True))
    return optimizer


def build_optimizer(name: str, lr: float, momentum=None, b1=None, b2=None, eps=None, warmup: int = 0):
    """``(optimizer, hyperparameters)`` of ``eoslab train``'s options (defaults filled in)."""
    from eoslab.dynamics import optim

    rate = optim.warmup(lr, warmup) if warmup else lr
    if name == "gd":
        return optim.gd(rate), {}
    if name in ("momentum", "nesterov"):
        beta = 0.9 if momentum is None else momentum
        return (optim.heavy_ball if name == "momentum" else optim.nesterov)(rate, beta), {"momentum": beta}
    e = 1e-8 if eps is None else eps
    if name == "rmsprop":
        beta2 = 0.99 if b2 is None else b2
        return optim.rmsprop(rate, beta2, e), {"b2": beta2, "eps": e}
    beta1, beta2 = (0.9 if b1 is None else b1), (0.999 if b2 is None else b2)
    return optim.adam(rate, beta1, beta2, e), {"b1": beta1, "b2": beta2, "eps": e}


def _edge_value(opt, params) -> float:
    """The edge at η (one zero-gradient update from the initial state)."""
    import jax

    state = opt.init(params)
    _, state = opt.update(jax.tree_util.tree_map(lambda x: 0 * x, params), state, params)
    return float(opt.edge(state))
OPERATORS = ("hessian", "ntk", "gauss_newton")


@app.command("train")
def train_cmd(
    model: str = typer.Option("mlp", help="network: mlp or cnn (cnn: --depth conv blocks of --width channels)"),
    depth: int = typer.Option(2, help="hidden layers (mlp) or conv blocks (cnn), ≥ 1"),
    width: int = typer.Option(256, help="hidden units (mlp) or channels (cnn), ≥ 1"),
    activation: str = typer.Option("tanh", help="tanh, relu or elu"),
    parametrisation: str = typer.Option("standard", help="standard or ntk"),
    data: str = typer.Option("synthetic", help="synthetic, cifar10 (needs --data-dir) or digits (scikit-learn's 8×8 digits, 1,797 images; extra eoslab[digits])"),
    data_dir: Optional[Path] = typer.Option(None, parser=cli.path_value, help="CIFAR-10 folder (data_batch_1..5, test_batch, batches.meta)"),
    n: int = typer.Option(1000, help="number of training examples (the first n, ≥ 1)"),
    classes: Optional[str] = typer.Option(None, help="CIFAR-10 class subset (0,1 or cat,dog); digits: 0,1,7; "
                                                     "synthetic: number of classes (default: regression)"),
    loss: str = typer.Option("mse", help="mse or cross_entropy"),
    lr: float = typer.Option(0.02, help="step size η > 0"),
    steps: int = typer.Option(2000, help="number of GD steps (≥ 1)"),
    optimizer: Optional[str] = typer.Option(None, help="gd, momentum (heavy ball), nesterov, rmsprop or adam "
                                                       "(default: gd, or momentum when --momentum > 0)"),
    momentum: Optional[float] = typer.Option(None, help="momentum β in [0, 1) of momentum / nesterov (default 0.9; "
                                                        "alone, > 0, it selects heavy ball)"),
    b1: Optional[float] = typer.Option(None, help="Adam's β₁ in [0, 1) (default 0.9; adam only)"),
    b2: Optional[float] = typer.Option(None, help="second-moment decay β₂ in [0, 1) of adam (default 0.999) "
                                                  "and rmsprop (default 0.99)"),
    eps: Optional[float] = typer.Option(None, help="ε ≥ 0 of adam / rmsprop (default 1e-8)"),
    batch_size: Optional[int] = typer.Option(None, help="mini-batch SGD: B distinct random examples per step "
                                                        "(1 ≤ B ≤ --n; default full batch)"),
    warmup: int = typer.Option(0, help="linear learning-rate warm-up from 0 over this many steps (0 ≤ W < --steps)"),
    k: int = typer.Option(2, help="top eigenvalues tracked (1 ≤ k < number of parameters)"),
    track_every: int = typer.Option(1, help="compute the spectra every this many steps (≥ 1)"),
    track: str = typer.Option("hessian,ntk", help="operators to track: a list of hessian, ntk, gauss_newton; "
                                                  "or none"),
    tol: float = typer.Option(1e-3, help="relative accuracy of the tracked eigenvalues, in (0, 1)"),
    spectra_examples: Optional[int] = typer.Option(None, help="compute spectra on the first m examples only "
                                                              "(1 ≤ m ≤ --n)"),
    seed: int = typer.Option(0, help="seed of the initialisation and synthetic data (0 … 2³²−1)"),
    dtype: str = typer.Option("float32", help="float32 or float64"),
    taylor: bool = typer.Option(False, "--taylor", help="also train the second-order Taylor model side by side"),
    plot: Optional[Path] = cli.plot_option("write the training figure to this file (PNG, an SVG next to it; "
                                           "with --taylor also FILE_taylor)"),
    as_json: bool = cli.json_option("print the summary, config and curves as JSON to stdout"),
    json_out: Optional[Path] = cli.json_out_option("also write the summary, config and curves as JSON to this file"),
    runs: Optional[Path] = cli.runs_option("store the finished run in this results root (experiment 'train', "
                                           "identified by the options; the same run again keeps the first copy), "
                                           "keeping a resumable partial run ROOT/train/.partial-<id>/ as it trains"),
    checkpoint_every: Optional[int] = typer.Option(None, help="with --runs: checkpoint the partial run every N steps "
                                                              "(≥ 1, rounded up to a multiple of 50, the training's "
                                                              "chunk; default 100)"),
    resume: bool = typer.Option(False, "--resume", help="with --runs: continue the interrupted run of these options "
                                                        "from its last checkpoint (bit-identical to an uninterrupted "
                                                        "run); reuses the stored run if it is complete"),
    show_progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Train a network (GD, momentum, Nesterov, RMSProp or Adam; full batch or mini-batch), tracking top
    Hessian/NTK eigenvalues matrix-free against the optimizer's own edge."""
    cli.choice(model, "--model", ("mlp", "cnn"))
    check("--depth", depth, integer(1, 1000))
    check("--width", width, integer(1, 1_000_000))
    cli.choice(activation, "--activation", ("tanh", "relu", "elu"))
    cli.choice(parametrisation, "--parametrisation", ("standard", "ntk"))
    cli.choice(data, "--data", DATASETS)
    check("--n", n, positive_int)
    if data == "digits":
        check("--n", n, integer(1, 1797))  # the digits hold 1,797 images
    if data_dir is not None and data != "cifar10":
        raise InvalidValue(f"--data-dir is the CIFAR-10 folder; it does not apply to --data {data}")
    if data == "synthetic" and classes is None and n < 2:
        raise InvalidValue(f"--n must be ≥ 2 for synthetic regression (the targets are standardised over the "
                           f"examples), got {n}")
    cli.choice(loss, "--loss", ("mse", "cross_entropy"))
    check("--lr", lr, positive)
    check("--steps", steps, positive_int)
    opt_name = _optimizer_choice(optimizer, momentum, b1, b2, eps)
    check("--warmup", warmup, integer(0, steps - 1))
    check("--k", k, positive_int)
    check("--track-every", track_every, positive_int)
    ops = () if track.strip() == "none" else tuple(cli.choices(track, "--track", OPERATORS))
    check("--tol", tol, between(0, 1, lo_open=True, hi_open=True))
    if spectra_examples is not None:
        check("--spectra-examples", spectra_examples, integer(1, n))
    if batch_size is not None:
        check("--batch-size", batch_size, integer(1, n))
    check("--seed", seed, seed_rule)
    cli.choice(dtype, "--dtype", ("float32", "float64"))
    check_representable("--lr", lr, dtype)
    if runs is None and (resume or checkpoint_every is not None):
        raise InvalidValue(f"{'--resume' if resume else '--checkpoint-every'} needs --runs ROOT")
    if checkpoint_every is not None:
        check("--checkpoint-every", checkpoint_every, positive_int)
    if runs is not None and taylor:
        raise InvalidValue("--runs stores one training; it does not apply to --taylor")
    cli.output_file(plot, "--plot")
    cli.output_file(json_out, "--json-out")
    cli.runs_root(runs, "train")
    import numpy as np

    from eoslab import progress
    from eoslab.dynamics.train import compare_taylor, summarize, train
    from eoslab.models.mlp import network_problem

    look = None
    if runs is not None:
        from eoslab.experiments import trainings

        hyper0 = build_optimizer(opt_name, lr, momentum, b1, b2, eps, warmup)[1]
        look = trainings.lookup(runs, {
            "model": model, "depth": depth, "width": width, "activation": activation,
            "parametrisation": parametrisation, "data": data, "n": n, "classes": _parse_classes(classes),
            "loss": loss, "lr": lr, "steps": steps, "optimizer": opt_name, **hyper0, "batch_size": batch_size,
            "warmup": warmup, "k": k, "track_every": track_every, "track": list(ops), "tol": tol,
            "spectra_examples": spectra_examples, "seed": seed, "dtype": dtype})
        if resume and look.run is None and look.partial is None:
            raise InvalidValue(f"--resume: no interrupted run of these options under {look.store.root / 'train'} "
                               "(start it without --resume)")
        if not resume and look.partial is not None:
            raise InvalidValue(f"--runs: an interrupted run of these options exists ({look.partial.done}/"
                               f"{look.partial.total} steps, {look.partial.path}); add --resume to continue it, "
                               "or remove that folder to start afresh")
    problem, ds, net = network_problem(model, depth, width, activation, parametrisation, data, data_dir, n,
                                       _parse_classes(classes), loss, seed, dtype)
    if ops and k >= problem.num_params:
        raise InvalidValue(f"--k {k}: the network has {problem.num_params} parameters; track k < that")
    say = (lambda text: typer.echo(text, err=True)) if as_json else typer.echo
    if batch_size is not None and batch_size > ds.n:
        raise InvalidValue(f"--batch-size {batch_size}: larger than the {ds.n} examples")
    opt, hyper = build_optimizer(opt_name, lr, momentum, b1, b2, eps, warmup)
    from eoslab.plots.networks import EDGE_LABELS

    edge0 = _edge_value(build_optimizer(opt_name, lr, momentum, b1, b2, eps, 0)[0], problem.params)
    say(f"{model} depth {depth} width {width} {activation} ({parametrisation}), {problem.num_params} "
        f"parameters, {dtype}; {ds.name}; loss {loss}; {opt.name} η = {lr}"
        + (f" (warm-up {warmup} steps)" if warmup else "")
        + (f", batch {batch_size}" if batch_size else ", full batch")
        + f"; edge {EDGE_LABELS.get(opt.name, '?')} = {edge0:.4g}"
        + (" on λ(P⁻¹H)" if opt.quantity == "preconditioned" else ""))
    kw = dict(optimizer=opt, batch_size=batch_size, k=k, track_every=track_every, track=ops, tol=tol,
              spectra_examples=spectra_examples, seed=seed)
    stored = None
    if look is None:
        cli.kept("nothing (the training was not finished; without --runs nothing is saved along the way)")
    elif resume and look.run is not None:
        stored = look.run.path
        say(f"run already stored: {stored} (reused; nothing recomputed)")
    else:
        every = 100 if checkpoint_every is None else checkpoint_every

        def saved(done, total):
            cli.kept(f"the partial run {look.partial_path} ({done}/{total} steps, checkpointed); continue it with "
                     "the same command and --resume")

        if resume:
            say(f"resuming {look.partial.path} from step {look.partial.done} of {look.partial.total}")
            saved(look.partial.done, look.partial.total)
        else:
            cli.kept(f"nothing yet (the first checkpoint of {look.partial_path} comes after ~{every} steps)")
    # the progress bar is the CLI's reporter (rich on a terminal, plain lines in a log)
    with progress.reporting(cli.progress_reporter(show_progress)):
        if taylor:
            cmp = compare_taylor(problem, None, steps, progress=False, **kw)
            traj = cmp["network"]
        elif stored is not None:
            traj = trainings.trajectory(look.run)
        elif look is not None:
            traj, _, stored = trainings.train_stored(look, problem, resume=resume, checkpoint_every=every,
                                                     on_checkpoint=saved, lr=None,
                                                     steps=steps, progress=False, **kw)
            say(f"run: {stored}" + (" (it was already stored: the first copy is kept)" if look.run else ""))
        else:
            traj, _ = train(problem, None, steps, progress=False, **kw)
    op = None if "hessian" in ops else (ops[0] if ops else "hessian")
    s = summarize(traj, op)
    say(format_summary(s))
    result = {"config": {"model": model, "depth": depth, "width": width, "activation": activation,
                         "parametrisation": parametrisation, "data": data, "n": ds.n, "loss": loss, "lr": lr,
                         "steps": steps, "optimizer": opt.name, **hyper, "batch_size": batch_size,
                         "warmup": warmup, "k": k, "track_every": track_every,
                         "track": list(ops), "tol": tol, "seed": seed, "dtype": dtype,
                         "num_params": problem.num_params},
              "summary": s}
    if stored is not None:
        result["run"] = str(stored)
    if taylor:
        st = summarize(cmp["taylor"], op)
        say("Taylor model (second order around θ₀):")
        say(format_summary(st, prefix="  "))
        say(f"network and Taylor model part (>{cmp['rtol']:.0%} apart): loss at step "
            f"{cmp['loss_divergence_step']}, sharpness at step {cmp.get('sharpness_divergence_step', -1)}")
        result["taylor"] = {"summary": st, "loss_divergence_step": cmp["loss_divergence_step"],
                            "sharpness_divergence_step": cmp.get("sharpness_divergence_step", -1)}
    if plot is not None:
        from eoslab.plots.networks import plot_taylor, plot_training

        title = f"{model} {depth}×{width} {activation}, {ds.name}"
        paths = cli.write_figure(lambda p: plot_training(traj, p, title=title), plot)
        if taylor:
            tp = plot.with_name(plot.stem + "_taylor" + plot.suffix)
            paths += cli.write_figure(lambda p: plot_taylor(cmp, p), tp)
        say("figures: " + ", ".join(str(p) for p in paths))
    if as_json or json_out is not None:
        result["curves"] = {key: np.where(np.isfinite(v), v, None).tolist()
                            if np.issubdtype(v.dtype, np.floating) else v.tolist()
                            for key, v in traj.items() if np.ndim(v) >= 1}
        cli.emit_json(result, as_json, json_out, indent=1)
