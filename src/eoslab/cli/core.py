"""Core commands: ``eoslab run`` (simulate a model) and ``eoslab theory`` (predictions).

Other modules may add commands to the ``theory`` group: ``from eoslab.cli.core import theory_app``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from eoslab.cli import app

theory_app = typer.Typer(no_args_is_help=True, help="Theoretical predictions (closed forms, exact maps).")
app.add_typer(theory_app, name="theory")

#: Runs with at least this many trajectory-steps show a progress bar.
_PROGRESS_WORK = 20_000_000


@app.command("version")
def version() -> None:
    """Print eoslab's version."""
    import eoslab

    typer.echo(eoslab.__version__)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def run_quadratic2d(eps: float, lr: float, inits: int, steps: int, seed: int, E: float = 0.0,
                    theta1=None, theta2=None, tail: int = 100, progress: bool = False) -> tuple[dict, object]:
    """``eoslab run quadratic2d``: :func:`eoslab.theory.eos2d.batch_comparison` from ``seed``, with a
    progress bar on stderr when ``progress``. Returns (result dict, θ₀ (B, 2))."""
    import jax

    from eoslab.theory import eos2d

    key = jax.random.PRNGKey(seed)
    if not progress:
        res, theta0 = eos2d.batch_comparison(eps, lr, inits, steps, key, E, theta1, theta2, tail)
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        chunk = max(1, min(20_000, steps // 50 or 1))
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      TextColumn("{task.completed:,}/{task.total:,} steps"), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(), console=_stderr_console(), transient=True) as bar:
            task = bar.add_task(f"GD, {inits:,} runs", total=steps)
            res, theta0 = eos2d.batch_comparison(eps, lr, inits, steps, key, E, theta1, theta2, tail, chunk=chunk,
                                                 progress=lambda done: bar.update(task, completed=done))
    return {**res, "seed": seed}, theta0


def _print_run_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    n = res["n_runs"]
    t = Table(title=f"quadratic2d: ε = {res['eps']:g}, η = {res['lr']:g}, E = {res['E']:g}, "
                    f"{n:,} runs × {res['steps']:,} steps (seed {res['seed']})")
    t.add_column("outcome")
    t.add_column("runs", justify="right")
    t.add_column("share", justify="right")
    for label, k in (("edge of stability (λ∞η/2 > 0.9)", "n_eos"), ("converged below", "n_below"),
                     ("diverged", "n_diverged")):
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


@app.command("run")
def run(
    model: str = typer.Argument(..., help="model name (supported: quadratic2d)"),
    eps: float = typer.Option(0.1, help="ε in (0, 1): Q has eigenvalues {1, −ε}"),
    lr: float = typer.Option(4.0, help="step size η > 0"),
    inits: int = typer.Option(2000, help="number of random initialisations"),
    steps: int = typer.Option(200_000, help="GD steps per run"),
    seed: int = typer.Option(0, help="seed of the initialisations"),
    target: float = typer.Option(0.0, "--target", help="target E of f (the theorem: 0)"),
    theta1: Optional[tuple[float, float]] = typer.Option(
        None, help="range of θ₁·√η to draw from (default: 0.1 0.3)"),
    theta2: Optional[tuple[float, float]] = typer.Option(
        None, help="range of θ₂·√(εη) to draw from (default: 1.8 2.6, the EoS basin at ε = 0.1)"),
    tail: int = typer.Option(100, help="λ∞ = mean of λ over the last TAIL steps"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of tables"),
    plot: Optional[Path] = typer.Option(None, help="write a figure (PNG + SVG) of a few runs"),
    plot_runs: int = typer.Option(6, help="number of runs drawn with --plot"),
) -> None:
    """Simulate GD from a batch of random initialisations and compare the EoS limit with theory."""
    from eoslab.errors import EoslabError
    from eoslab.models import get

    get(model)  # unknown model → clear error
    if model != "quadratic2d":
        raise EoslabError(f"`eoslab run` supports the model 'quadratic2d' only (got {model!r})")
    show = (not as_json) and inits * steps >= _PROGRESS_WORK and _stderr_console().is_terminal
    res, theta0 = run_quadratic2d(eps, lr, inits, steps, seed, target, theta1, theta2, tail, progress=show)
    if plot is not None:
        from eoslab.dynamics.quadratic2d import trajectories
        from eoslab.plots.quadratic2d import plot_runs as draw

        k = max(1, min(plot_runs, inits))
        traj = trajectories(res["eps"], res["lr"], theta0[:k], steps, E=target)
        res["plot"] = [str(p) for p in draw(traj, res["predicted_ratio"], plot)]
    if as_json:
        typer.echo(json.dumps(res, allow_nan=True))
    else:
        _print_run_table(res)
        if plot is not None:
            typer.echo(f"figure: {', '.join(res['plot'])}")


@theory_app.command("eos-limit")
def eos_limit_cmd(
    eps: float = typer.Option(..., help="ε in (0, 1)"),
    lr: Optional[float] = typer.Option(None, help="step size η (prints λ∞ too)"),
    target: float = typer.Option(0.0, "--target", help="target E (the prediction depends on ηE < 1)"),
    order: str = typer.Option("exact", help="'exact', 'leading' (science.md) or a series order 1..4"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Predicted limit λ∞η/2 of the NTK eigenvalue of the 2-D model at the edge of stability."""
    from eoslab.theory import eos2d

    o = int(order) if order.isdigit() else order
    res = eos2d.eos_limit(eps, 1.0 if lr is None else lr, target, o)
    out = {"eps": res.eps, "order": res.order, "predicted_ratio": res.ratio, "eta_lambda": res.eta_lambda,
           "uncertainty_ratio": res.uncertainty / 2}
    if lr is not None:
        out.update(lr=res.lr, predicted_lambda=res.lam)
    if as_json:
        typer.echo(json.dumps(out, allow_nan=True))
        return
    unc = "" if math.isnan(res.uncertainty) or res.uncertainty < 5e-13 else f" ± {res.uncertainty / 2:.1g}"
    typer.echo(f"λ∞η/2 = {res.ratio:.10f}{unc}   (ε = {res.eps:g}, order = {res.order})")
    if lr is not None:
        typer.echo(f"λ∞ = {res.lam:.10g}   (η = {res.lr:g}, edge 2/η = {2 / res.lr:.10g})")


@theory_app.command("eos-table")
def eos_table_cmd(
    eps: str = typer.Option("0.002,0.005,0.01,0.02,0.03,0.05,0.07,0.1,0.15",
                            help="comma-separated ε values"),
    inits: int = typer.Option(256, help="random initialisations per ε (default box)"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
    plot: Optional[Path] = typer.Option(None, help="write the comparison figure (PNG + SVG)"),
) -> None:
    """Theory vs simulation of the EoS limit ηλ∞ over ε (E = 0, η = 1)."""
    from eoslab.errors import EoslabError, check_positive_int
    from eoslab.models.quadratic2d import check_eps
    from eoslab.theory import eos2d

    try:
        values = [check_eps(float(v)) for v in eps.split(",") if v.strip()]
    except ValueError as exc:
        raise EoslabError(f"--eps must be comma-separated numbers in (0, 1): {exc}") from None
    rows = eos2d.limit_comparison(values, n_inits=check_positive_int("--inits", inits))
    if plot is not None:
        from eoslab.plots.quadratic2d import plot_limit_comparison

        plot_limit_comparison(rows, plot)
    if as_json:
        typer.echo(json.dumps(rows, allow_nan=True))
        return
    from rich.console import Console
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
    Console().print(t)
