"""High-dimensional second-order models: ``eoslab theorem2``, ``theorem2-scaling``,
``highdim-sweep`` and ``nonlinear``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from eoslab.cli import app


def _floats(text: str, name: str) -> list[float]:
    from eoslab.errors import EoslabError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EoslabError(f"{name} must be a comma-separated list of numbers, got {text!r}") from None


def _print_table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(*[f"{x:.6g}" if isinstance(x, float) else str(x) for x in r])
    Console().print(t)


@app.command("theorem2")
def theorem2_cmd(
    D: int = typer.Option(200, "--D", help="number of datapoints (outputs)"),
    P: int = typer.Option(400, "--P", help="number of parameters"),
    sigma_z: float = typer.Option(1.0, "--sigma-z", help="std of the initial residuals z"),
    sigma_j: float = typer.Option(1.0, "--sigma-j", help="std of the Jacobian entries"),
    sigma_q: float = typer.Option(1.0, "--sigma-q", help="std of Q's off-diagonal entries"),
    samples: int = typer.Option(500, "--samples", help="Monte Carlo initialisations"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Monte Carlo check of Theorem 2: E[λ̈]/E[λ] at initialisation vs σ_z².

    λ is the top eigenvalue of J Jᵀ; dots are gradient-flow time derivatives of the loss
    ‖z‖²/(2√(2DP)σ_q) (see docs/theorem2.md), exact by eigenvalue perturbation theory.
    """
    import jax

    from eoslab.theory import theorem2

    r = theorem2.check(jax.random.PRNGKey(seed), D, P, sigma_z, sigma_j, sigma_q, samples)
    if as_json:
        keys = ("mean_lambda", "mean_lambda_dot", "mean_lambda_ddot", "ratio", "ratio_stderr", "predicted_ratio")
        typer.echo(json.dumps({k: r[k] for k in keys}))
        return
    _print_table(
        f"Theorem 2 at D={D}, P={P}, σ_z={sigma_z}, σ_J={sigma_j}, σ_q={sigma_q} ({samples} samples)",
        ["quantity", "Monte Carlo", "± stderr", "prediction"],
        [["E[λ]", r["mean_lambda"], r["mean_lambda_stderr"], ""],
         ["E[λ̇]", r["mean_lambda_dot"], r["mean_lambda_dot_stderr"], 0.0],
         ["E[λ̈]", r["mean_lambda_ddot"], r["mean_lambda_ddot_stderr"], ""],
         ["E[λ̈]/E[λ]", r["ratio"], r["ratio_stderr"], r["predicted_ratio"]],
         ["  exact at this D, P", r["finite_size_ratio"], r["finite_size_ratio_stderr"], ""],
         ["  MC − exact (same J)", r["residual"], r["residual_stderr"], 0.0]])


@app.command("theorem2-scaling")
def theorem2_scaling_cmd(
    sizes: str = typer.Option("50,100,200", "--sizes", help="values of D"),
    ratios: str = typer.Option("0.5,2", "--ratios", help="values of D/P"),
    sigma_zs: str = typer.Option("0.5,1", "--sigma-z", help="values of σ_z"),
    samples: int = typer.Option(300, "--samples"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("figures/theorem2"), "--out", help="folder for table.json and the plot"),
) -> None:
    """E[λ̈]/E[λ] → σ_z² as D, P grow at fixed D/P: a table and a plot."""
    import jax

    from eoslab.plots.highdim import plot_theorem2_scaling
    from eoslab.theory import theorem2

    rows = theorem2.scaling_table(jax.random.PRNGKey(seed), [int(s) for s in _floats(sizes, "--sizes")],
                                  _floats(ratios, "--ratios"), _floats(sigma_zs, "--sigma-z"), samples)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(rows, indent=1))
    paths = plot_theorem2_scaling(rows, out / "scaling")
    _print_table("E[λ̈]/E[λ] / σ_z² (→ 1)", ["D/P", "D", "P", "σ_z", "ratio/σ_z²", "± stderr", "exact finite-size/σ_z²"],
                 [[r["D_over_P"], r["D"], r["P"], r["sigma_z"], r["ratio"] / r["sigma_z"] ** 2,
                   r["ratio_stderr"] / r["sigma_z"] ** 2, r["finite_size_ratio"] / r["sigma_z"] ** 2] for r in rows])
    typer.echo(f"wrote {out / 'table.json'} and {', '.join(map(str, paths))}")


@app.command("highdim-sweep")
def highdim_sweep_cmd(
    D: int = typer.Option(100, "--D"),
    P: int = typer.Option(100, "--P"),
    lrs: str = typer.Option("0.3,0.6,0.9,1.2,1.5,1.8", "--lrs", help="step sizes η"),
    sigma_zs: str = typer.Option("0.5,1", "--sigma-z", help="values of σ_z"),
    seeds: int = typer.Option(2, "--seeds"),
    steps: int = typer.Option(1500, "--steps"),
    sharpening: float = typer.Option(0.15, "--sharpening", help="σ_q = sharpening·√(D/P) (see docs)"),
    hessian_every: int = typer.Option(0, "--hessian-every", help="Hessian sharpness by Lanczos every N steps (0: off)"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("figures/highdim"), "--out"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """GD on random second-order models: seeds × step sizes × σ_z; EoS onset, ηλ/2 at the end and
    after the onset, second NTK eigenvalue, outcome; a phase plot."""
    import jax

    from eoslab.dynamics import highdim as hd
    from eoslab.plots.highdim import plot_sweep

    etas = _floats(lrs, "--lrs")
    sj, sq = hd.natural_scales(D, P, sharpening)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    rows, first = [], None
    for sz in _floats(sigma_zs, "--sigma-z"):
        traj = hd.sweep_highdim(keys, etas, steps, D=D, P=P, sigma_z=sz, sigma_j=sj, sigma_q=sq,
                                hessian_every=hessian_every)
        for i, r in enumerate(hd.summarize_runs(traj, [etas] * seeds)):
            rows.append({"sigma_z": sz, "seed": i // len(etas), **r})
        if first is None:
            first = traj["eta_ntk_half"][0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(rows, indent=1))
    paths = plot_sweep(rows, first, etas, out / "phase")
    if as_json:
        typer.echo(json.dumps(rows))
        return
    _print_table(f"Random second-order models D={D}, P={P}, σ_J={sj:.3g}, σ_q={sq:.3g}, {steps} steps",
                 ["σ_z", "seed", "η", "onset", "final ηλ/2", "mean after onset", "ηλ₂/2", "final loss", "outcome"],
                 [[r["sigma_z"], r["seed"], r["lr"], r["onset_ntk"], r["final_eta_ntk_half"],
                   r["mean_eta_ntk_half_after_onset"], r["eta_ntk2_half"], r["final_loss"], r["outcome"]]
                  for r in rows])
    typer.echo(f"wrote {out / 'sweep.json'} and {', '.join(map(str, paths))}")


@app.command("nonlinear")
def nonlinear_cmd(
    D: int = typer.Option(40, "--D"),
    P: int = typer.Option(40, "--P"),
    lr: float = typer.Option(1.2, "--lr"),
    sigma_z: float = typer.Option(1.0, "--sigma-z"),
    steps: int = typer.Option(200, "--steps"),
    sharpening: float = typer.Option(0.15, "--sharpening"),
    seed: int = typer.Option(1, "--seed"),
    out: Path = typer.Option(Path("figures/highdim"), "--out"),
) -> None:
    """The non-linear dynamical contribution ‖½η²Q(g,g)‖/‖ηJg‖ along one trajectory, with λ_max."""
    import jax
    import numpy as np

    from eoslab.dynamics import highdim as hd
    from eoslab.models import second_order
    from eoslab.plots.highdim import plot_nonlinear

    sj, sq = hd.natural_scales(D, P, sharpening)
    m = second_order.random(jax.random.PRNGKey(seed), D, P, sigma_z, sj, sq)
    traj, _ = hd.batched_gd_output(m, [lr], steps, record_nonlinear=True, lanczos_iters=20)
    one = {k: np.asarray(v[0]) for k, v in traj.items()}
    ev = hd.nonlinear_events(one["eta_ntk_half"], one["nonlinear_norm"], one["linear_norm"])
    paths = plot_nonlinear(one, lr, ev, out / "nonlinear")
    _print_table("Non-linear contribution events (steps)", list(ev), [list(ev.values())])
    typer.echo(f"wrote {', '.join(map(str, paths))}")
