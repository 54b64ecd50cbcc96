"""``eoslab flow``: discrete GD, gradient flow and the central flow from the same θ₀ and η.

Example (a tanh MLP on the synthetic data, float64)::

    eoslab flow --model mlp --depth 2 --width 16 --n 100 --d 16 --lr 0.3 --steps 300 --plot flow.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from eoslab.cli import _parse as cli
from eoslab.cli import app
from eoslab.errors import check, check_memory, check_representable, integer, positive, positive_int, seed_rule

MODELS = ("mlp", "cnn", "second-order", "quadratic2d")


def flow_problem(model: str, *, depth: int, width: int, activation: str, data: str, data_dir, n: int, d: int,
                 target_scale: float, D: int, P: int, sigma_z: float, sigma_j: float, eps: float,
                 theta0: Optional[list], seed: int, dtype: str):
    """The :class:`~eoslab.Problem` the options describe (θ₀ included)."""
    import jax
    import jax.numpy as jnp

    if model == "quadratic2d":
        from eoslab.models import quadratic2d

        th = theta0 if theta0 is not None else [0.1, 2.0 / eps ** 0.5]
        return quadratic2d.problem(eps, th)
    if model == "second-order":
        from eoslab.models import second_order

        m = second_order.random(jax.random.PRNGKey(seed), D, P, sigma_z=sigma_z, sigma_j=sigma_j,
                                dtype=jnp.dtype(dtype))
        return second_order.problem(m)
    from eoslab import Problem
    from eoslab.models.mlp import build, check_size, network_problem

    if data == "synthetic":
        from eoslab.data import load

        ds = load("synthetic", n=n, d=d, seed=seed, dtype=dtype, target_scale=target_scale)
        if model == "cnn" and ds.image_shape is None:
            cli.fail(f"the CNN needs image inputs: --d must be a perfect square, got {d}")
        net = build(model, depth=depth, width=width, activation=activation, out_dim=ds.out_dim,
                    image_shape=ds.image_shape or (1, 4, 4))
        check_size(net, ds.in_dim, jnp.dtype(dtype))
        params = net.init(jax.random.PRNGKey(seed), ds.in_dim, dtype=jnp.dtype(dtype))
        return Problem.from_model(net, params, jnp.asarray(ds.x), jnp.asarray(ds.y))
    problem, _, _ = network_problem(model, depth, width, activation, "standard", data, data_dir, n, None, "mse",
                                    seed, dtype)
    return problem


@app.command("flow")
def flow_cmd(
    model: str = typer.Option("mlp", help="mlp, cnn (synthetic: --d a perfect square), second-order "
                                          "(random, Theorem 2 ensemble) or quadratic2d (Theorem 1)"),
    depth: int = typer.Option(2, help="hidden layers (mlp) or conv blocks (cnn)"),
    width: int = typer.Option(16, help="hidden units (mlp) or channels (cnn)"),
    activation: str = typer.Option("tanh", help="tanh, relu or elu"),
    data: str = typer.Option("synthetic", help="synthetic or cifar10 (networks)"),
    data_dir: Optional[Path] = typer.Option(None, parser=cli.path_value, help="CIFAR-10 folder (with --data cifar10)"),
    n: int = typer.Option(100, help="number of training examples (networks)"),
    d: int = typer.Option(16, "--d", help="input dimension of the synthetic data"),
    target_scale: float = typer.Option(2.0, help="std of the synthetic regression targets"),
    D: int = typer.Option(20, "--datapoints", help="second-order model: D datapoints (outputs)"),
    P: int = typer.Option(40, "--params", help="second-order model: P parameters"),
    sigma_z: float = typer.Option(1.0, "--sigma-z", help="second-order model: std of the initial residuals"),
    sigma_j: float = typer.Option(1.0, "--sigma-j", help="second-order model: std of the Jacobian entries"),
    eps: float = typer.Option(0.1, help="quadratic2d: ε in f = ½(θ₁² − εθ₂²)"),
    theta0: Optional[str] = typer.Option(None, help="quadratic2d: θ₀ as 'a,b' (default 0.1,2/√ε)"),
    lr: float = typer.Option(0.3, help="step size η (the edge is 2/η)"),
    edge_ratio: Optional[float] = typer.Option(None, help="instead of --lr: η with ηλ₁(θ₀)/2 = this value"),
    steps: int = typer.Option(300, help="GD steps (the flows run for the same time)"),
    substeps: int = typer.Option(4, help="Euler substeps of the flows per GD step"),
    start: int = typer.Option(0, help="plain GD steps first; then all three start from GD's iterate"),
    k: int = typer.Option(1, help="Hessian eigenpairs tracked at the start"),
    k_max: int = typer.Option(4, help="most eigenpairs tracked (the set grows when its last one reaches 2/η)"),
    window: int = typer.Option(20, help="steps of GD's centred moving average (the 'smoothed' loss)"),
    seed: int = typer.Option(0, help="seed of θ₀ and the data (0 … 2³²−1)"),
    dtype: str = typer.Option("float64", help="float64 or float32"),
    plot: Optional[Path] = cli.plot_option(),
    as_json: bool = cli.json_option("print the curves and the summary as JSON to stdout"),
    json_out: Optional[Path] = cli.json_out_option(),
    runs: Optional[Path] = cli.runs_option(),
) -> None:
    """Discrete GD, gradient flow and the central flow (Cohen et al., ICLR 2025) side by side."""
    cli.choice(model, "--model", MODELS)
    cli.choice(dtype, "--dtype", ("float64", "float32"))
    cli.choice(data, "--data", ("synthetic", "cifar10"))
    cli.choice(activation, "--activation", ("tanh", "relu", "elu"))
    for name, v in (("--depth", depth), ("--width", width), ("--n", n), ("--d", d), ("--datapoints", D),
                    ("--params", P), ("--steps", steps), ("--substeps", substeps), ("--k", k),
                    ("--k-max", k_max), ("--window", window)):
        check(name, v, positive_int)
    for name, v in (("--lr", lr), ("--target-scale", target_scale), ("--sigma-z", sigma_z),
                    ("--sigma-j", sigma_j)):
        check(name, v, positive)
    check("--seed", seed, seed_rule)
    if model != "quadratic2d":  # the 2-D model is float64 whatever --dtype says
        check_representable("--lr", lr, dtype)
    check("--start", start, integer(0))
    if k > k_max:
        cli.fail(f"--k ({k}) must be ≤ --k-max ({k_max}): the tracked set starts at --k and grows up to --k-max")
    if edge_ratio is not None:
        check("--edge-ratio", edge_ratio, positive)
    if not 0.0 < eps < 1.0:
        cli.fail(f"--eps must lie in (0, 1), got {eps}")
    th = None
    if theta0 is not None:
        th = cli.floats(theta0, "--theta0", allow_range=False)
        if len(th) != 2:
            cli.fail(f"--theta0 needs two numbers 'a,b', got {theta0!r}")
    if model in ("mlp", "cnn") and data == "synthetic" and n < 2:
        cli.fail(f"--n must be ≥ 2 for synthetic regression (the targets are standardised over the examples), "
                 f"got {n}")
    if data_dir is not None and (data != "cifar10" or model not in ("mlp", "cnn")):
        cli.fail(f"--data-dir is the CIFAR-10 folder of --data cifar10 with --model mlp or cnn; it does not apply "
                 f"to --model {model} --data {data}")
    if data == "cifar10" and data_dir is None:
        cli.fail("--data cifar10 needs --data-dir")
    if model == "cnn" and data == "synthetic" and int(round(d ** 0.5)) ** 2 != d:
        cli.fail(f"--model cnn on synthetic data needs --d a perfect square (√d × √d images), got {d}")
    cli.output_file(plot, "--plot")
    cli.output_file(json_out, "--json-out")
    cli.runs_root(runs, "flow")

    from eoslab.dynamics import central_flow as cf

    # the records' memory, before the data and model are built (the model's size is not known
    # yet: the substeps' share is checked again by cf.run)
    if model == "second-order":
        check_memory(f"--datapoints {D:,} --params {P:,}", 2.0 * 8 * D * P * P, "the model's Q alone is D·P² floats")
    check_memory(f"--steps {steps:,}", cf.memory_bytes(0, steps, substeps, k_max)[1], "use fewer --steps")
    check_memory(f"--substeps {substeps:,}", cf.memory_bytes(0, steps, substeps, k_max)[0], "use fewer --substeps")
    problem = flow_problem(model, depth=depth, width=width, activation=activation, data=data, data_dir=data_dir,
                           n=n, d=d, target_scale=target_scale, D=D, P=P, sigma_z=sigma_z, sigma_j=sigma_j,
                           eps=eps, theta0=th, seed=seed, dtype=dtype)
    if edge_ratio is not None:
        import jax

        from eoslab.spectra import hessian_top

        big = problem.num_params > 2000
        lam = float(hessian_top(problem, k=1, method="lanczos" if big else "dense",
                                key=jax.random.PRNGKey(seed) if big else None)[0])
        if not lam > 0:
            cli.fail(f"--edge-ratio needs λ₁(θ₀) > 0, got {lam:.4g}")
        lr = 2.0 * edge_ratio / lam
    if not as_json:
        typer.echo(f"{model}: {problem.num_params} parameters, {dtype}; η = {lr} (2/η = {2 / lr:.4g}), "
                   f"{steps} steps, {substeps} substeps per step")
    out = cf.run(problem, lr, steps, k=k, k_max=k_max, substeps=substeps, seed=seed, start=start)
    s = cf.summarize(out, lr, window)
    if not as_json:
        _print_summary(s)
    if plot is not None:
        from eoslab.plots.central_flow import plot_flow

        paths = plot_flow(out, lr, plot, window=window, title=f"{model}, η = {lr}")
        if not as_json:
            typer.echo("figures: " + ", ".join(str(p) for p in paths))
    curves = {key: v for key, v in out.items() if hasattr(v, "ndim") and v.ndim >= 1 and not key.startswith("w_")}
    curves["gd_loss_smoothed"] = cf.smooth(out["gd_loss"], window)
    if as_json or json_out is not None:
        cli.emit_json({"config": {"model": model, "lr": lr, "edge_ratio": edge_ratio, "steps": steps, "substeps": substeps, "k": k,
                                  "k_max": k_max, "window": window, "start": start, "seed": seed, "dtype": dtype,
                                  "num_params": problem.num_params},
                       "summary": s, "curves": curves}, as_json, json_out)
    if runs is not None:
        defining = dict(model=model, lr=lr, edge_ratio=edge_ratio, steps=steps, substeps=substeps, start=start, k=k,
                        k_max=k_max, window=window, seed=seed, dtype=dtype)
        if model in ("mlp", "cnn"):
            defining.update(depth=depth, width=width, activation=activation, data=data, n=n,
                            **({"d": d, "target_scale": target_scale} if data == "synthetic" else
                               {"data_dir": str(data_dir)}))
        elif model == "second-order":
            defining.update(datapoints=D, params=P, sigma_z=sigma_z, sigma_j=sigma_j)
        else:
            defining.update(eps=eps, theta0=th)
        cli.save_run(runs, "flow", {**curves, **cli.result_arrays({"summary": s}), "num_params": problem.num_params},
                     defining, dims={"eigs": ("step", "eig")} if getattr(curves.get("eigs"), "ndim", 0) == 2 else None,
                     quiet=as_json)


def _print_summary(s: dict) -> None:
    gone = [f"{name} at step {s[key]}" for name, key in (("GD", "gd_diverged_at"), ("the central flow", "cf_diverged_at"),
                                                        ("gradient flow", "gf_diverged_at")) if s.get(key, -1) >= 0]
    if gone:  # a result, not an error: say so before the NaN that follow from it
        typer.echo("DIVERGED (loss no longer finite): " + ", ".join(gone))
    if s["onset"] < 0 and s["cf_diverged_at"] >= 0:
        typer.echo(f"the central flow did not reach 2/η = {s['edge']:.4g} before it diverged")
    elif s["onset"] < 0:
        typer.echo(f"the central flow never reached 2/η = {s['edge']:.4g} (it is gradient flow throughout)")
    else:
        typer.echo(f"edge reached at step {s['onset']}; at most {s['max_at_edge']} eigenvalue(s) at 2/η"
                   + (f"; entered at {s['entered_at']}" if s["entered_at"] else "")
                   + (f"; tracked set grew at steps {s['grown_at']}" if s["grown_at"] else ""))
        if "ratio_final" in s:
            typer.echo(f"‖w_GD − w_CF‖ = {s['dist_gd_cf_final']:.4g}, ‖w_GD − w_GF‖ = {s['dist_gd_gf_final']:.4g} "
                       f"(ratio {s['ratio_final']:.3f}; max over the late EoS phase {s['ratio_max_late']:.3f})")
        if "avg_loss_rel_err" in s:
            typer.echo(f"predicted time-averaged loss vs GD's smoothed loss: max rel. error "
                       f"{s['avg_loss_rel_err']:.3g}, median {s['avg_loss_rel_err_median']:.3g}")
        typer.echo(f"sharpness on the flow within {s['edge_max_dev']:.2g} of 2/η (relative); "
                   f"largest rise of L(w_CF) {s['cf_loss_max_rise']:.2g} (relative)")
    typer.echo(f"final loss: GD {s.get('final_gd_loss', float('nan')):.4g}, CF {s['final_cf_loss']:.4g} "
               f"(predicted average {s['final_avg_loss']:.4g}), GF {s.get('final_gf_loss', float('nan')):.4g}")
    typer.echo(f"{s['products_per_step']:.1f} Hessian-vector products per GD step (tracking), "
               f"{s['seconds']:.1f} s")
