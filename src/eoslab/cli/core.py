"""Core commands: ``eoslab run`` (simulate a model) and ``eoslab theory`` (predictions).

Other modules may add commands to the ``theory`` group: ``from eoslab.cli.core import theory_app``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from eoslab.cli import _parse as cli
from eoslab.cli import app
from eoslab.errors import (InvalidValue, between, check, check_memory, finite, integer, positive, positive_int,
                           seed_rule)

theory_app = typer.Typer(no_args_is_help=True, help="Theoretical predictions (closed forms, exact maps).")
app.add_typer(theory_app, name="theory")

#: Runs with at least this many trajectory-steps show a progress bar.
_PROGRESS_WORK = 20_000_000


@app.command("version")
def version() -> None:
    """Print eoslab's version."""
    import eoslab

    typer.echo(eoslab.__version__)


def run_quadratic2d(eps: float, lr: float, inits: int, steps: int, seed: int, E: float = 0.0,
                    theta1=None, theta2=None, tail: int = 100, progress: bool = False, per_run: bool = False):
    """``eoslab run quadratic2d``: :func:`eoslab.theory.eos2d.batch_comparison` from ``seed``
    (progress goes to :mod:`eoslab.progress`; ``progress`` is kept for callers). Returns
    (result dict, θ₀ (B, 2)) and, with ``per_run``, the per-run summary (dict of (B,) arrays)."""
    import jax

    from eoslab.theory import eos2d

    out = eos2d.batch_comparison(eps, lr, inits, steps, jax.random.PRNGKey(seed), E, theta1, theta2, tail,
                                 chunk=max(1, min(20_000, steps // 50 or 1)) if progress else 20_000,
                                 per_run=per_run)
    return ({**out[0], "seed": seed},) + tuple(out[1:])


def _print_run_table(res: dict) -> None:
    from rich.table import Table

    from eoslab.dynamics import EOS_THRESHOLD

    con = cli.console()
    n = res["n_runs"]
    t = Table(title=f"quadratic2d: ε = {res['eps']:g}, η = {res['lr']:g}, E = {res['E']:g}, "
                    f"{n:,} runs × {res['steps']:,} steps (seed {res['seed']})")
    t.add_column("outcome")
    t.add_column("runs", justify="right")
    t.add_column("share", justify="right")
    for label, k in ((f"edge of stability (crossed ηλ = 2, λ∞η/2 > {EOS_THRESHOLD:g})", "n_eos"),
                     ("converged below", "n_below"),
                     (f"[dim]  of which end above {EOS_THRESHOLD:g} without crossing[/dim]", "n_below_near_edge"),
                     ("diverged", "n_diverged")):
        if k == "n_below_near_edge" and not res.get(k):
            continue
        t.add_row(label, f"{res[k]:,}", f"{res[k] / n:.1%}")
    t.add_row("[dim]crossed ηλ = 2 at some step[/dim]", f"[dim]{res['n_crossed_edge']:,}[/dim]",
              f"[dim]{res['n_crossed_edge'] / n:.1%}[/dim]")
    con.print(t)
    q = res["quantiles_ratio"]
    s = Table(title="λ∞η/2 of the EoS runs")
    for col in ("q05", "q25", "median", "q75", "q95", "predicted"):
        s.add_column(col, justify="right")
    fmt = lambda v: "—" if v != v else f"{v:.6f}"
    pred = fmt(res["predicted_ratio"])
    if res["predicted_uncertainty"] == res["predicted_uncertainty"] and res["predicted_uncertainty"] > 5e-7:
        pred += f" ± {res['predicted_uncertainty']:.1g}"
    s.add_row(fmt(q["q05"]), fmt(q["q25"]), fmt(res["median_ratio"]), fmt(q["q75"]), fmt(q["q95"]), pred)
    con.print(s)
    if res["unconverged_eos"]:
        con.print(f"[yellow]{res['unconverged_eos']} EoS runs have not converged yet (|z| ≥ 1e-8): "
                  f"increase --steps[/yellow]")


MODELS = ("quadratic2d",)
EPS_RULE = between(0, 1, lo_open=True, hi_open=True)


def _box(text: Optional[str], option: str) -> Optional[tuple[float, float]]:
    if text is None:
        return None
    lo, hi = cli.floats(text, option, length=2, allow_range=False)
    if not lo < hi:
        raise InvalidValue(f"{option} is LO,HI with LO < HI, got {text!r}")
    return lo, hi


@app.command("run")
def run(
    model: str = typer.Argument(..., help="model name (supported: quadratic2d)"),
    eps: float = typer.Option(0.1, help="ε in (0, 1): Q has eigenvalues {1, −ε}"),
    lr: float = typer.Option(4.0, help="step size η > 0"),
    inits: int = typer.Option(2000, help="number of random initialisations (≥ 1)"),
    steps: int = typer.Option(200_000, help="GD steps per run (≥ 1)"),
    seed: int = typer.Option(0, help="seed of the initialisations (0 … 2³²−1)"),
    target: float = typer.Option(0.0, "--target", help="target E of f, finite (the theorem: 0)"),
    theta1: Optional[str] = typer.Option(None, help="range LO,HI of θ₁·√η to draw from (default: 0.1,0.3)"),
    theta2: Optional[str] = typer.Option(
        None, help="range LO,HI of θ₂·√(εη) to draw from (default: 1.8,2.6, the EoS basin at ε = 0.1)"),
    tail: Optional[int] = typer.Option(None, help="λ∞ = mean of λ over the last TAIL steps (1 … --steps; "
                                                   "default 100, or --steps if fewer)"),
    as_json: bool = cli.json_option(),
    json_out: Optional[Path] = cli.json_out_option(),
    plot: Optional[Path] = cli.plot_option("write a figure of a few runs to this file (PNG, an SVG next to it)"),
    plot_runs: int = typer.Option(6, help="number of runs drawn with --plot (≥ 1)"),
    runs: Optional[Path] = cli.runs_option(),
) -> None:
    """Simulate GD from a batch of random initialisations and compare the EoS limit with theory."""
    if model not in MODELS:
        raise InvalidValue(f"unknown model {model!r}; `eoslab run` accepts: {', '.join(MODELS)}")
    check("--eps", eps, EPS_RULE)
    check("--lr", lr, positive)
    check("--inits", inits, positive_int)
    check("--steps", steps, positive_int)
    check("--seed", seed, seed_rule)
    check("--target", target, finite)
    if tail is None:  # a default the user did not type must not be the error of a short --steps
        tail = min(100, steps)
    check("--tail", tail, integer(1, steps))
    check("--plot-runs", plot_runs, positive_int)
    box1, box2 = _box(theta1, "--theta1"), _box(theta2, "--theta2")
    cli.output_file(json_out, "--json-out")
    cli.output_file(plot, "--plot")
    cli.runs_root(runs, f"run-{model}")
    # simulate keeps 7 float64 states per run, plus θ₀ and the summary; XLA may double it
    check_memory(f"--inits {inits:,}", 2 * 8 * 16 * inits, "use fewer --inits")
    from eoslab import progress

    chunked = progress.active() and inits * steps >= _PROGRESS_WORK
    res, theta0, per_run = run_quadratic2d(eps, lr, inits, steps, seed, target, box1, box2, tail, progress=chunked,
                                           per_run=True)
    if plot is not None:
        from eoslab.dynamics.quadratic2d import trajectories
        from eoslab.plots.quadratic2d import plot_runs as draw

        k = max(1, min(plot_runs, inits))
        traj = trajectories(res["eps"], res["lr"], theta0[:k], steps, E=target)
        res["plot"] = [str(p) for p in cli.write_figure(lambda p: draw(traj, res["predicted_ratio"], p), plot)]
    cli.emit_json(res, as_json, json_out)
    if not as_json:
        _print_run_table(res)
        if eps > _eos2d().CHECKED_EPS:
            typer.echo(f"note: at ε = {eps:g} > {_eos2d().CHECKED_EPS:g} the predicted limit (the end of the slow "
                       "manifold) is not where every run settles; `eoslab theory eos-limit --eps "
                       f"{eps:g} --lr {lr:g}` checks it against exact GD", err=True)
        if plot is not None:
            typer.echo(f"figure: {', '.join(res['plot'])}")
    if runs is not None:
        arrays = {**cli.result_arrays({k: v for k, v in res.items() if k != "plot"}), "theta0": theta0,
                  **{f"run_{k}": v for k, v in per_run.items()}}
        cli.save_run(runs, f"run-{model}", arrays,
                     dict(eps=eps, lr=lr, inits=inits, steps=steps, seed=seed, target=target,
                          theta1=list(box1) if box1 else None, theta2=list(box2) if box2 else None, tail=tail),
                     dims={"theta0": ("init", "coord"), "theta1_scaled_range": ("end",),
                           "theta2_scaled_range": ("end",), **{f"run_{k}": ("init",) for k in per_run}},
                     quiet=as_json)


def _eos2d():
    from eoslab.theory import eos2d

    return eos2d


@theory_app.command("eos-limit")
def eos_limit_cmd(
    eps: float = typer.Option(..., help="ε in (0, 1)"),
    lr: Optional[float] = typer.Option(None, help="step size η > 0 (prints λ∞ too)"),
    target: float = typer.Option(0.0, "--target", help="target E (the prediction needs ηE < 1)"),
    order: str = typer.Option("exact", help="exact, leading, or a series order 1 … 5"),
    as_json: bool = cli.json_option(),
    json_out: Optional[Path] = cli.json_out_option(),
    runs: Optional[Path] = cli.runs_option(),
) -> None:
    """Predicted limit λ∞η/2 of the NTK eigenvalue of the 2-D model at the edge of stability.

    The uncertainty covers the prediction's error against exact GD: for ε ≤ 0.05 and E = 0 the
    limit is checked (tests) to ≤ 2e-11; otherwise exact GD is run here (a few seconds) and the
    uncertainty is where it settles (median of the default box of starts and the reference start)."""
    eos2d = _eos2d()
    check("--eps", eps, EPS_RULE)
    if lr is not None:
        check("--lr", lr, positive)
    check("--target", target, finite)
    # ASCII digits only: "²" and "٣" are str.isdigit() too ("²" made int() raise)
    o = int(order) if order.isascii() and order.isdigit() else order
    cli.choice(str(o), "--order", [str(x) for x in eos2d.ORDERS])
    cli.output_file(json_out, "--json-out")
    cli.runs_root(runs, "theory-eos-limit")
    eta = 1.0 if lr is None else lr
    res = eos2d.eos_limit(eps, eta, target, o)
    exact = res if o == "exact" else eos2d.eos_limit(eps, eta, target)
    unc = res.uncertainty / 2 if o == "exact" else abs(res.ratio - exact.ratio) + exact.uncertainty / 2
    out = {"eps": res.eps, "order": res.order, "predicted_ratio": res.ratio, "eta_lambda": res.eta_lambda,
           "uncertainty_ratio": unc, "numerical_uncertainty_ratio": exact.uncertainty / 2,
           "checked_against_gd": eps <= eos2d.CHECKED_EPS and target == 0.0}
    warn = None
    if not out["checked_against_gd"]:
        gd = eos2d.gd_check(eps, eta, target)
        out["gd"] = gd
        if gd["error"] == gd["error"]:
            out["uncertainty_ratio"] = unc = max(unc, gd["error"] + abs(res.ratio - exact.ratio))
            warn = (f"ε = {eps:g}{'' if target == 0 else f', E = {target:g}'} is outside ε ≤ {eos2d.CHECKED_EPS:g}, "
                    f"E = 0 where the limit is checked: the uncertainty is where exact GD settles here "
                    f"({gd['n_settled']} of {gd['n_inits']} starts; their 5–95 % range "
                    f"{gd['q05']:.6f} … {gd['q95']:.6f})")
        else:
            out["uncertainty_ratio"] = unc = math.nan
            warn = (f"no exact-GD run settled at the edge at ε = {eps:g}: the prediction is unchecked here "
                    "(uncertainty unknown)")
    if lr is not None:
        out.update(lr=res.lr, predicted_lambda=res.lam)
    if math.isnan(res.ratio):  # limit_numeric: fewer than half the slow-manifold orbits reach a minimum
        warn = (f"no edge-of-stability limit to predict at ε = {eps:g}{'' if target == 0 else f', E = {target:g}'}: "
                "fewer than half of the orbits from the slow manifold reach a minimum (the limit is NaN)"
                + (f"; {warn}" if warn else ""))
    cli.emit_json(out, as_json, json_out)
    if warn:
        typer.echo(f"warning: {warn}", err=True)
    if not as_json:
        u = "" if math.isnan(unc) or unc < 5e-13 else f" ± {unc:.2g}"
        typer.echo(f"λ∞η/2 = {res.ratio:.10f}{u}   (ε = {res.eps:g}, order = {res.order})")
        if lr is not None:
            typer.echo(f"λ∞ = {res.lam:.10g}   (η = {res.lr:g}, edge 2/η = {2 / res.lr:.10g})")
    cli.save_run(runs, "theory-eos-limit", cli.result_arrays(out),
                 dict(eps=eps, lr=lr, target=target, order=str(o)), quiet=as_json)


@theory_app.command("eos-table")
def eos_table_cmd(
    eps: str = typer.Option("0.002,0.005,0.01,0.02,0.03,0.05,0.07,0.1,0.15",
                            help="ε values in (0, 1): a,b,c or START:STOP:NUM"),
    inits: int = typer.Option(256, help="random initialisations per ε (default box, ≥ 1)"),
    as_json: bool = cli.json_option("print the rows as JSON to stdout (instead of the table)"),
    json_out: Optional[Path] = cli.json_out_option("also write the rows as JSON to this file"),
    plot: Optional[Path] = cli.plot_option("write the comparison figure to this file (PNG, an SVG next to it)"),
    runs: Optional[Path] = cli.runs_option(),
) -> None:
    """Theory vs simulation of the EoS limit ηλ∞ over ε (E = 0, η = 1)."""
    values = cli.floats(eps, "--eps", EPS_RULE)
    check("--inits", inits, positive_int)
    # as `eoslab run`: 7 float64 states per run, doubled for XLA
    check_memory(f"--inits {inits:,}", 2 * 8 * 16 * inits, "use fewer --inits")
    cli.output_file(json_out, "--json-out")
    cli.output_file(plot, "--plot")
    cli.runs_root(runs, "theory-eos-table")
    rows = _eos2d().limit_comparison(values, n_inits=inits)
    if plot is not None:
        from eoslab.plots.quadratic2d import plot_limit_comparison

        written = cli.write_figure(lambda p: plot_limit_comparison(rows, p), plot)
        typer.echo(f"figure: {', '.join(map(str, written))}", err=as_json)
    cli.emit_json(rows, as_json, json_out)
    if not as_json:
        _print_limit_table(rows)
    cols = cli.columns(rows)
    cli.save_run(runs, "theory-eos-table", cli.result_arrays(cols), dict(eps=values, inits=inits),
                 dims={k: ("eps",) for k in cols}, coords=("eps",), quiet=as_json)


def _print_limit_table(rows: list[dict]) -> None:
    from rich.table import Table

    t = Table(title="ηλ∞ of the 2-D model (E = 0, η = 1): simulation vs theory")
    cols = ["ε", "sim θ₀=(0.1,2/√ε)", "sim median", "exact (± spread)", "leading", "order 2", "order 4",
            "|order2−sim|", "|order4−sim|", "|exact−sim|"]
    for c in cols:
        t.add_column(c, justify="right")
    f = lambda v: "—" if v != v else f"{v:.9f}"
    g = lambda v: "—" if v != v else f"{v:.1e}"
    for r in rows:
        t.add_row(f"{r['eps']:g}", f(r["sim_ref"]), f(r["sim_median"]),
                  f"{r['exact']:.9f} ± {r['exact_uncertainty']:.0e}", f(r["leading"]), f(r["order2"]),
                  f(r["order4"]), g(abs(r["order2"] - r["sim_median"])), g(abs(r["order4"] - r["sim_median"])),
                  g(abs(r["exact"] - r["sim_median"])))
    cli.console().print(t)
