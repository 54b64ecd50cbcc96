"""``eoslab two-layer`` and ``eoslab linear-net``: the companion papers' models from the command line."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from eoslab.cli import _parse as cli
from eoslab.cli import app
from eoslab.errors import (InvalidValue, check, check_memory, finite, integer, nonnegative_int, positive,
                           positive_int, seed_rule)


def parse_grid(spec: str) -> np.ndarray:
    """Step sizes from ``"START:STOP:NUM"`` (inclusive, START ≤ STOP) or ``"a,b,c"``; all finite and > 0."""
    grid = cli.floats(spec, "--lrs", positive)
    if ":" in spec and grid[0] > grid[-1]:
        raise InvalidValue(f"--lrs: a range START:STOP:NUM needs START ≤ STOP, got {spec!r}")
    return np.asarray(grid)


@app.command("two-layer")
def two_layer_cmd(
    lr: float = typer.Option(4.0, help="step size η > 0"),
    steps: int = typer.Option(1500, help="GD steps (≥ 1)"),
    lam1: float = typer.Option(1.0, help="variance λ₁ > 0 of the irrelevant input x₁"),
    lam2: float = typer.Option(0.01, help="variance λ₂ > 0 of the relevant input x₂ (target y = x₂)"),
    theta0: str = typer.Option("0.05,0.1,0.05", help="initial α,β₁,β₂ (three finite numbers a,b,c)"),
    samples: int = typer.Option(0, help="0: population loss; n ≥ 1: empirical loss on n samples"),
    seed: int = typer.Option(0, help="seed of the samples (0 … 2³²−1)"),
    box_lo: Optional[str] = typer.Option(None, "--box-lo", help="projected GD: lower bounds of α,β₁,β₂ "
                                         "(a,b,c; -inf allowed); needs --box-hi"),
    box_hi: Optional[str] = typer.Option(None, "--box-hi", help="projected GD: upper bounds of α,β₁,β₂ "
                                         "(a,b,c; inf allowed); needs --box-lo"),
    as_json: bool = cli.json_option(),
    json_out: Optional[Path] = cli.json_out_option(),
    plot: Optional[Path] = cli.plot_option(),
    runs: Optional[Path] = cli.runs_option(),
) -> None:
    """GD (or projected GD) on the minimalist two-layer net f(x) = α(β₁x₁ + β₂x₂): phases,
    sharpness vs 2/η, GFS sharpness, distance to the stable set."""
    check("--lr", lr, positive)
    check("--steps", steps, positive_int)
    check("--lam1", lam1, positive)
    check("--lam2", lam2, positive)
    th0 = cli.floats(theta0, "--theta0", length=3, allow_range=False)
    check("--samples", samples, nonnegative_int)
    check("--seed", seed, seed_rule)
    lower = upper = None
    if (box_lo is None) != (box_hi is None):
        raise InvalidValue("projected GD needs both --box-lo and --box-hi")
    if box_lo is not None:
        lower = cli.values(box_lo, "--box-lo", length=3, allow_range=False, finite=False)
        upper = cli.values(box_hi, "--box-hi", length=3, allow_range=False, finite=False)
        if any(a > b for a, b in zip(lower, upper)):
            raise InvalidValue(f"--box-lo must be ≤ --box-hi in every coordinate, got {box_lo!r} and {box_hi!r}")
        if any(a == math.inf for a in lower) or any(b == -math.inf for b in upper):  # θ projected to ±inf: NaN
            raise InvalidValue(f"--box-lo must be < inf and --box-hi > -inf in every coordinate (the box has no finite "
                               f"point), got {box_lo!r} and {box_hi!r}")
    cli.output_file(json_out, "--json-out")
    cli.output_file(plot, "--plot")
    cli.runs_root(runs, "two-layer")
    check_memory(f"--samples {samples:,} with --steps {steps:,}", 8.0 * 4 * samples + 8.0 * 20 * steps)
    from eoslab.theory.two_layer import simulate_two_layer

    r = simulate_two_layer(lam1, lam2, lr, steps, th0, samples, seed, lower, upper)
    out = {"config": r["config"], "phases": r["phases"]}
    if plot is not None:
        from eoslab.plots.companions import two_layer_panels
        from eoslab.plots.style import save

        draw = lambda p: save(two_layer_panels(r["trajectory"], lr, lam1, lam2,
                                               title=f"λ₁={lam1}, λ₂={lam2}, η={lr}"), p)
        out["figures"] = [str(p) for p in cli.write_figure(draw, plot)]
    cli.emit_json(out, as_json, json_out, indent=1)
    if not as_json:
        _print_two_layer(r, lr, steps, out.get("figures", []))
    traj = dict(r["trajectory"])
    arrays = {**cli.result_arrays({"phases": r["phases"]}), **traj}
    cli.save_run(runs, "two-layer", arrays,
                 dict(lr=lr, steps=steps, lam1=lam1, lam2=lam2, theta0=th0, samples=samples, seed=seed,
                      box_lo=lower, box_hi=upper),
                 dims={"params": ("step", "param")} if "params" in traj else None, quiet=as_json)


def _print_two_layer(r: dict, lr: float, steps: int, figures: list) -> None:
    ph = r["phases"]
    typer.echo(f"two-layer net, η = {lr}, 2/η = {ph['edge']:.6g}, {steps} steps"
               f"{' (diverged)' if ph['diverged'] else ''}")
    typer.echo(f"  phases: PS [0, {ph['eos_start']}), EoS from {ph['eos_start']}, convergence from "
               f"{ph['convergence_start']}  (−1: not reached)")
    typer.echo(f"  sharpness: initial {ph['sharpness_initial']:.4g}, end of PS {ph['sharpness_at_ps_end']:.4g}, "
               f"final ηS = {ph['final_eta_sharpness']:.6f}; δ during EoS {ph['delta_eos']:.4g}, "
               f"δ after EoS {ph['delta_after']:.3g}")
    typer.echo(f"  GFS sharpness increases: {ph['gfs_violations']} {ph['gfs_violations_by_phase']}")
    typer.echo(f"  final loss {ph['final_loss']:.3e}, final distance to stable set {ph['final_stable_set_distance']:.3e}")
    for f in figures:
        typer.echo(f"  wrote {f}")


@app.command("linear-net")
def linear_net_cmd(
    depth: int = typer.Option(2, help="number of layers L (≥ 1)"),
    width: int = typer.Option(1, help="every width (input, hidden, output; ≥ 1); data X = I, Y = target·I"),
    lr_grid: str = typer.Option("0.5:1.5:21", "--lrs", "--lr-grid",
                                help="step sizes (> 0): START:STOP:NUM or a,b,c (--lr-grid: the old name)"),
    inits: int = typer.Option(1000, help="random initialisations per step size (≥ 1)"),
    steps: int = typer.Option(2000, help="GD steps N (≥ 1)"),
    init_scale: float = typer.Option(0.5, help="weights i.i.d. N(0, init_scale²), init_scale > 0"),
    loss: str = typer.Option("half_mean", help="half_mean: (1/2n)Σ‖y − Wx‖²; sum: Σ‖y − Wx‖²"),
    target: float = typer.Option(1.0, help="Y = target·I (finite, ≠ 0)"),
    grad_tol: float = typer.Option(1e-6, help="converged to a critical point: ‖∇L(θ_N)‖ ≤ grad_tol (> 0)"),
    seed: int = typer.Option(0, help="seed of the initialisations (0 … 2³²−1)"),
    track_det: bool = typer.Option(True, "--det/--no-det", help="track min |det(I − η∇²L)| at every step"),
    as_json: bool = cli.json_option(),
    json_out: Optional[Path] = cli.json_out_option(),
    plot: Optional[Path] = cli.plot_option("write the convergence-fraction figure to this file (PNG, an SVG next "
                                           "to it)"),
    out: Optional[Path] = cli.out_option("write every figure (convergence fraction; for ½(uv − t)² also the "
                                         "trajectories) into this folder"),
    runs: Optional[Path] = cli.runs_option(),
) -> None:
    """Deep linear net W_L⋯W_1: fraction of initialisations converging to a critical point per step
    size, next to the threshold 2 / inf λ_max over the global minimisers."""
    from eoslab.models.linear_net import LOSSES

    check("--depth", depth, integer(1, 64))
    check("--width", width, integer(1, 4096))
    lrs = parse_grid(lr_grid)
    check("--inits", inits, positive_int)
    check("--steps", steps, positive_int)
    check("--init-scale", init_scale, positive)
    cli.choice(loss, "--loss", LOSSES)
    check("--target", target, finite)
    if target == 0:
        raise InvalidValue("--target must be ≠ 0 (Y = 0 has the minimiser W = 0, where no threshold is defined)")
    check("--grad-tol", grad_tol, positive)
    check("--seed", seed, seed_rule)
    cli.output_file(json_out, "--json-out")
    cli.output_file(plot, "--plot")
    cli.output_dir(out, "--out")
    cli.runs_root(runs, "linear-net")
    n_params = depth * width * width
    check_memory(f"--inits {inits:,} × {len(lrs)} step sizes", 8.0 * 6 * inits * len(lrs) * n_params)
    import jax

    from eoslab.dynamics.convergence import path_lrs, uv_paths
    from eoslab.models.linear_net import identity_problem
    from eoslab.theory.linear_net import threshold_comparison

    problem = identity_problem(jax.random.PRNGKey(seed), depth, width, loss, target)  # θ₀ unused: inits come from seed
    r = threshold_comparison(problem, lrs, inits, steps, init_scale, seed, grad_tol, track_det=track_det)
    if plot is not None or out is not None:
        from eoslab.plots.companions import convergence_fraction, uv_trajectories
        from eoslab.plots.style import save

        title = f"depth {depth}, width {width}, {inits} inits"
        frac = lambda p: save(convergence_fraction(r, r["threshold"], title=title), p)
        figs = []
        if plot is not None:
            figs += cli.write_figure(frac, plot)
        if out is not None:
            figs += cli.write_figure(frac, out / f"linear_net_d{depth}_w{width}", "--out")
            if problem.num_params == 2:
                picks = path_lrs(lrs, r["threshold"])
                paths = uv_paths(problem, picks, seed=seed)
                figs += cli.write_figure(lambda p: save(uv_trajectories(paths, picks, target, title="½(uv − t)²:"),
                                                        p), out / "linear_net_uv", "--out")
        r["figures"] = [str(p) for p in figs]
    cli.emit_json(r, as_json, json_out, indent=1)
    if not as_json:
        _print_linear_net(r)
    arrays = cli.result_arrays({k: v for k, v in r.items() if k != "figures"})
    per_lr = {k: ("lr",) for k, v in arrays.items() if np.ndim(v) == 1 and len(v) == len(lrs) and k != "widths"}
    cli.save_run(runs, "linear-net", arrays,
                 dict(depth=depth, width=width, lrs=lrs.tolist(), inits=inits, steps=steps, init_scale=init_scale,
                      loss=loss, target=target, grad_tol=grad_tol, seed=seed, det=track_det),
                 dims={**per_lr, "widths": ("layer",)}, coords=("lr",), quiet=as_json)


def _print_linear_net(r: dict) -> None:
    typer.echo(f"linear net, widths {r['widths']}, loss {r['loss']}: inf λ_max = {r['inf_sharpness']:.6g} "
               f"({r['threshold_method']}), threshold η* = {r['threshold']:.6g}")
    typer.echo("  η        converged  diverged  max ηλ/2   min|det|")
    for i, lr in enumerate(r["lr"]):
        ratio = r["max_final_sharpness_ratio"][i]
        det = r["min_abs_det"][i]
        typer.echo(f"  {lr:<8.4g} {r['converged_fraction'][i]:<10.3f} {r['diverged_fraction'][i]:<9.3f} "
                   f"{'—' if ratio is None else f'{ratio:.5f}':<10} {'—' if det is None else f'{det:.2e}'}")
    for f in r.get("figures", []):
        typer.echo(f"  wrote {f}")
