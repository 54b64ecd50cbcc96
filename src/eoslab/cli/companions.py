"""``eoslab two-layer`` and ``eoslab linear-net``: the companion papers' models from the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from eoslab.cli import app
import numpy as np

from eoslab.errors import EoslabError


def _floats(spec: str, n: int, name: str) -> list[float]:
    try:
        vals = [float(v) for v in spec.split(",")]
    except ValueError:
        raise EoslabError(f"{name} must be {n} comma-separated numbers, got {spec!r}") from None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise EoslabError(f"{name} must be {n} comma-separated finite numbers, got {spec!r}")
    return vals


def parse_grid(spec: str) -> np.ndarray:
    """Step sizes from ``"start:stop:num"`` (inclusive ``linspace``) or ``"a,b,c"``; all > 0."""
    try:
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, num = float(parts[0]), float(parts[1]), parts[2]
            if not num.strip().isdigit() or int(num) < 1 or stop < start:
                raise ValueError
            grid = np.round(np.linspace(start, stop, int(num)), 12)   # 0.85, not 0.8500000000000001
        else:
            grid = np.array([float(v) for v in spec.split(",")])
    except ValueError:
        raise EoslabError(f"malformed step-size grid {spec!r}: expected START:STOP:NUM with START ≤ STOP "
                          f"and NUM a positive integer, or a comma-separated list") from None
    if grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 0)):
        raise EoslabError(f"step sizes must be finite and positive, got {spec!r}")
    return grid


def _box(spec: str):
    """``"lo:hi,lo:hi,lo:hi"`` (one pair per parameter α, β₁, β₂; 'inf'/'-inf' allowed)."""
    pairs = spec.split(",")
    try:
        lo, hi = zip(*[tuple(float(x) for x in p.split(":")) for p in pairs])
    except ValueError:
        raise EoslabError(f"--box must be LO:HI,LO:HI,LO:HI (for α, β₁, β₂), got {spec!r}") from None
    if len(pairs) != 3 or any(a > b or math.isnan(a) or math.isnan(b) for a, b in zip(lo, hi)):
        raise EoslabError(f"--box must be three intervals LO:HI with LO ≤ HI, got {spec!r}")
    return list(lo), list(hi)


def _clean(x):
    """JSON-safe: NaN/inf → None."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@app.command("two-layer")
def two_layer_cmd(
    lr: float = typer.Option(4.0, help="step size η"),
    steps: int = typer.Option(1500, help="GD steps"),
    lam1: float = typer.Option(1.0, help="variance λ₁ of the irrelevant input x₁"),
    lam2: float = typer.Option(0.01, help="variance λ₂ of the relevant input x₂ (target y = x₂)"),
    theta0: str = typer.Option("0.05,0.1,0.05", help="initial α,β₁,β₂"),
    samples: int = typer.Option(0, help="0: population loss; n: empirical loss on n samples"),
    seed: int = typer.Option(0, help="seed of the samples"),
    box: Optional[str] = typer.Option(None, help="projected GD onto the box LO:HI,LO:HI,LO:HI (α, β₁, β₂)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write the figure (PNG + SVG) into this folder"),
) -> None:
    """GD (or projected GD) on the minimalist two-layer net f(x) = α(β₁x₁ + β₂x₂): phases,
    sharpness vs 2/η, GFS sharpness, distance to the stable set."""
    from eoslab.theory.two_layer import simulate_two_layer

    if not (lr > 0 and math.isfinite(lr)):
        raise EoslabError(f"--lr must be a finite positive number, got {lr!r}")
    lower, upper = _box(box) if box else (None, None)
    r = simulate_two_layer(lam1, lam2, lr, steps, _floats(theta0, 3, "--theta0"), samples, seed, lower, upper)
    out = {"config": r["config"], "phases": r["phases"]}
    if plot is not None:
        from eoslab.plots.companions import two_layer_panels
        from eoslab.plots.style import save

        fig = two_layer_panels(r["trajectory"], lr, lam1, lam2, title=f"λ₁={lam1}, λ₂={lam2}, η={lr}")
        out["figures"] = [str(p) for p in save(fig, Path(plot) / "two_layer")]
    if as_json:
        typer.echo(json.dumps(_clean(out), indent=1))
        return
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
    for f in out.get("figures", []):
        typer.echo(f"  wrote {f}")


@app.command("linear-net")
def linear_net_cmd(
    depth: int = typer.Option(2, help="number of layers L"),
    width: int = typer.Option(1, help="every width (input, hidden, output); data X = I, Y = target·I"),
    lr_grid: str = typer.Option("0.5:1.5:21", "--lr-grid", help="START:STOP:NUM (inclusive) or a,b,c"),
    inits: int = typer.Option(1000, help="random initialisations per step size"),
    steps: int = typer.Option(2000, help="GD steps N"),
    init_scale: float = typer.Option(0.5, help="weights i.i.d. N(0, init_scale²)"),
    loss: str = typer.Option("half_mean", help="half_mean: (1/2n)Σ‖y − Wx‖²; sum: Σ‖y − Wx‖²"),
    target: float = typer.Option(1.0, help="Y = target·I"),
    grad_tol: float = typer.Option(1e-6, help="converged to a critical point: ‖∇L(θ_N)‖ ≤ grad_tol"),
    seed: int = typer.Option(0, help="seed of the initialisations"),
    track_det: bool = typer.Option(True, "--det/--no-det", help="track min |det(I − η∇²L)| at every step"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write the figure (PNG + SVG) into this folder"),
) -> None:
    """Deep linear net W_L⋯W_1: fraction of initialisations converging to a critical point per step
    size, next to the threshold 2 / inf λ_max over the global minimisers."""
    import jax

    from eoslab.dynamics.convergence import path_lrs, uv_paths
    from eoslab.models.linear_net import identity_problem
    from eoslab.theory.linear_net import threshold_comparison

    lrs = parse_grid(lr_grid)
    problem = identity_problem(jax.random.PRNGKey(0), depth, width, loss, target)
    r = threshold_comparison(problem, lrs, inits, steps, init_scale, seed, grad_tol, track_det=track_det)
    if plot is not None:
        from eoslab.plots.companions import convergence_fraction, uv_trajectories
        from eoslab.plots.style import save

        fig = convergence_fraction(r, r["threshold"], title=f"depth {depth}, width {width}, {inits} inits")
        r["figures"] = [str(p) for p in save(fig, Path(plot) / f"linear_net_d{depth}_w{width}")]
        if problem.num_params == 2:
            picks = path_lrs(lrs, r["threshold"])
            fig = uv_trajectories(uv_paths(problem, picks, seed=seed), picks, target, title="½(uv − t)²:")
            r["figures"] += [str(p) for p in save(fig, Path(plot) / "linear_net_uv")]
    if as_json:
        typer.echo(json.dumps(_clean(r), indent=1))
        return
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
