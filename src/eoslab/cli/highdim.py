"""High-dimensional second-order models: ``eoslab theorem2``, ``theorem2-scaling``,
``highdim-sweep`` and ``nonlinear``.

D (``--datapoints``) is the number of datapoints (outputs), P (``--params``) the number of parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from eoslab.cli import _parse as cli
from eoslab.cli import app
from eoslab.errors import check, check_memory, integer, positive, positive_int, scale, seed_rule

D_HELP = "D: number of datapoints (outputs), ≥ 2"
P_HELP = "P: number of parameters, ≥ 1"


def _sizes(D: int, P: int) -> None:
    check("--datapoints", D, integer(2))
    check("--params", P, positive_int)


def _model_memory(D: int, P: int, B: int) -> float:
    """Bytes of one random second-order model (Q: D·P² floats) and B batched (z, J) states."""
    return 8.0 * (2 * D * P * P + 4 * B * D * P)


@app.command("theorem2")
def theorem2_cmd(
    D: int = typer.Option(200, "--datapoints", help=D_HELP),
    P: int = typer.Option(400, "--params", help=P_HELP),
    sigma_z: float = typer.Option(1.0, "--sigma-z", help="std σ_z > 0 of the initial residuals z"),
    sigma_j: float = typer.Option(1.0, "--sigma-j", help="std σ_J > 0 of the Jacobian entries"),
    sigma_q: float = typer.Option(1.0, "--sigma-q", help="std σ_q > 0 of Q's off-diagonal entries"),
    samples: int = typer.Option(500, "--samples", help="Monte Carlo initialisations (≥ 2)"),
    seed: int = typer.Option(0, "--seed", help="random seed (0 … 2³²−1)"),
    as_json: bool = cli.json_option(),
    json_out: Optional[Path] = cli.json_out_option(),
    runs: Optional[Path] = cli.runs_option(),
) -> None:
    """Monte Carlo check of Theorem 2: E[λ̈]/E[λ] at initialisation vs σ_z².

    λ is the top eigenvalue of J Jᵀ; dots are gradient-flow time derivatives of the loss
    ‖z‖²/(2√(2DP)σ_q) (see docs/theorem2.md), exact by eigenvalue perturbation theory.
    """
    _sizes(D, P)
    for name, v in (("--sigma-z", sigma_z), ("--sigma-j", sigma_j), ("--sigma-q", sigma_q)):
        check(name, v, positive, scale)
    check("--samples", samples, integer(2))
    check("--seed", seed, seed_rule)
    cli.output_file(json_out, "--json-out")
    cli.runs_root(runs, "theorem2")
    import jax

    from eoslab.theory import theorem2

    check_memory(f"--datapoints {D} --params {P}", theorem2.memory_bytes(D, P))
    check_memory(f"--samples {samples:,}", theorem2.samples_bytes(samples))
    r = theorem2.check(jax.random.PRNGKey(seed), D, P, sigma_z, sigma_j, sigma_q, samples)
    keys = ("mean_lambda", "mean_lambda_dot", "mean_lambda_ddot", "ratio", "ratio_stderr", "predicted_ratio",
            "finite_size_ratio", "finite_size_ratio_stderr", "residual", "residual_stderr",
            "mean_lambda_stderr", "mean_lambda_dot_stderr", "mean_lambda_ddot_stderr")
    res = {"D": D, "P": P, "sigma_z": sigma_z, "sigma_j": sigma_j, "sigma_q": sigma_q, "samples": samples,
           "seed": seed, **{k: float(r[k]) for k in keys if k in r}}
    cli.emit_json(res, as_json, json_out)
    if not as_json:
        _print_theorem2(r, D, P, sigma_z, sigma_j, sigma_q, samples)
    cli.save_run(runs, "theorem2", res, dict(datapoints=D, params=P, sigma_z=sigma_z, sigma_j=sigma_j,
                                             sigma_q=sigma_q, samples=samples, seed=seed), quiet=as_json)


def _print_theorem2(r, D, P, sigma_z, sigma_j, sigma_q, samples) -> None:
    cli.print_table(
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
    sizes: str = typer.Option("50,100,200", "--sizes", help="values of D (integers ≥ 2): a,b,c or START:STOP:NUM"),
    ratios: str = typer.Option("0.5,2", "--ratios", help="values of D/P (> 0): a,b,c or START:STOP:NUM"),
    sigma_zs: str = typer.Option("0.5,1", "--sigma-z", help="values of σ_z (> 0): a,b,c or START:STOP:NUM"),
    samples: int = typer.Option(300, "--samples", help="Monte Carlo initialisations per point (≥ 2)"),
    seed: int = typer.Option(0, "--seed", help="random seed (0 … 2³²−1)"),
    out: Optional[Path] = cli.out_option("write table.json and the figure scaling.png/.svg into this folder"),
    plot: Optional[Path] = cli.plot_option(),
    as_json: bool = cli.json_option("print the rows as JSON to stdout (instead of the table)"),
    json_out: Optional[Path] = cli.json_out_option("also write the rows as JSON to this file"),
    runs: Optional[Path] = cli.runs_option(),
) -> None:
    """E[λ̈]/E[λ] → σ_z² as D, P grow at fixed D/P: a table (and, with --out/--plot, a figure)."""
    Ds = cli.ints(sizes, "--sizes", integer(2))
    rs = cli.floats(ratios, "--ratios", positive)
    szs = cli.floats(sigma_zs, "--sigma-z", positive, scale)
    check("--samples", samples, integer(2))
    check("--seed", seed, seed_rule)
    cli.output_dir(out, "--out")
    cli.output_file(plot, "--plot")
    cli.output_file(json_out, "--json-out")
    cli.runs_root(runs, "theorem2-scaling")
    import jax

    from eoslab.theory import theorem2

    big_D, small_r = max(Ds), min(rs)
    check_memory(f"--sizes {big_D} with --ratios {small_r:g}",
                 theorem2.memory_bytes(big_D, max(int(round(big_D / small_r)), 1)))
    rows = theorem2.scaling_table(jax.random.PRNGKey(seed), Ds, rs, szs, samples)
    written = _scaling_files(rows, out, plot)
    cli.emit_json(rows, as_json, json_out)
    if not as_json:
        cli.print_table("E[λ̈]/E[λ] / σ_z² (→ 1)",
                        ["D/P", "D", "P", "σ_z", "ratio/σ_z²", "± stderr", "exact finite-size/σ_z²"],
                        [[r["D_over_P"], r["D"], r["P"], r["sigma_z"], r["ratio"] / r["sigma_z"] ** 2,
                          r["ratio_stderr"] / r["sigma_z"] ** 2, r["finite_size_ratio"] / r["sigma_z"] ** 2]
                         for r in rows])
    if written:
        typer.echo(f"wrote {', '.join(map(str, written))}", err=as_json)
    cols = cli.result_arrays(cli.columns(rows))
    cli.save_run(runs, "theorem2-scaling", cols, dict(sizes=Ds, ratios=rs, sigma_z=szs, samples=samples, seed=seed),
                 dims={k: ("point",) for k, v in cols.items() if getattr(v, "ndim", 0) == 1},
                 coords=tuple(k for k in ("D", "P", "D_over_P", "sigma_z") if k in cols), quiet=as_json)


def _scaling_files(rows, out, plot) -> list[Path]:
    import json

    from eoslab.plots.highdim import plot_theorem2_scaling

    written = []
    if out is not None:
        written.append(cli.write_text(out / "table.json", json.dumps(cli.clean_json(rows), indent=1), "--out"))
        written += cli.write_figure(lambda p: plot_theorem2_scaling(rows, p), out / "scaling", "--out")
    if plot is not None:
        written += cli.write_figure(lambda p: plot_theorem2_scaling(rows, p), plot)
    return written


@app.command("highdim-sweep")
def highdim_sweep_cmd(
    D: int = typer.Option(100, "--datapoints", help=D_HELP),
    P: int = typer.Option(100, "--params", help=P_HELP),
    lrs: str = typer.Option("0.3,0.6,0.9,1.2,1.5,1.8", "--lrs",
                            help="step sizes η (> 0): a,b,c or START:STOP:NUM"),
    sigma_zs: str = typer.Option("0.5,1", "--sigma-z", help="values of σ_z (> 0): a,b,c or START:STOP:NUM"),
    seeds: int = typer.Option(2, "--seeds", help="random models per σ_z (≥ 1)"),
    steps: int = typer.Option(1500, "--steps", help="GD steps per run (≥ 1)"),
    sharpening: float = typer.Option(0.15, "--sharpening", help="σ_q = sharpening·√(D/P) (> 0; docs/theorem2.md)"),
    hessian_every: int = typer.Option(0, "--hessian-every",
                                      help="Hessian sharpness by Lanczos every N steps (0: off)"),
    seed: int = typer.Option(0, "--seed", help="random seed (0 … 2³²−1)"),
    out: Optional[Path] = cli.out_option("write sweep.json and the phase figure phase.png/.svg into this folder"),
    plot: Optional[Path] = cli.plot_option("write the phase figure to this file (PNG, an SVG next to it)"),
    as_json: bool = cli.json_option("print the rows as JSON to stdout (instead of the table)"),
    json_out: Optional[Path] = cli.json_out_option("also write the rows as JSON to this file"),
    runs: Optional[Path] = cli.runs_option(),
) -> None:
    """GD on random second-order models: seeds × step sizes × σ_z; EoS onset, ηλ/2 at the end and
    after the onset, second NTK eigenvalue, outcome (and, with --out/--plot, a phase figure)."""
    _sizes(D, P)
    etas = cli.floats(lrs, "--lrs", positive)
    szs = cli.floats(sigma_zs, "--sigma-z", positive)
    check("--seeds", seeds, integer(1, 100_000))
    check("--steps", steps, positive_int)
    check("--sharpening", sharpening, positive)
    check("--hessian-every", hessian_every, integer(0))
    check("--seed", seed, seed_rule)
    cli.output_dir(out, "--out")
    cli.output_file(plot, "--plot")
    cli.output_file(json_out, "--json-out")
    cli.runs_root(runs, "highdim-sweep")
    check_memory(f"--datapoints {D} --params {P} with {len(etas)} step sizes", _model_memory(D, P, len(etas)),
                 "the model's Q alone is D·P² floats")
    import jax

    import jax.numpy as jnp

    from eoslab import progress
    from eoslab.dynamics import highdim as hd

    sj, sq = hd.natural_scales(D, P, sharpening)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    rows, first, stacked = [], None, []
    with progress.task(f"highdim-sweep D={D} P={P}, {len(etas)} step sizes × {steps} steps", len(szs),
                       "σ_z values") as bar:
        for sz in szs:
            # one model at a time inside (one compiled program), progress per model and per chunk of steps
            traj = hd.sweep_highdim(keys, etas, steps, D=D, P=P, sigma_z=sz, sigma_j=sj, sigma_q=sq,
                                    hessian_every=hessian_every)
            bar.advance(1)
            if runs is not None:
                stacked.append(traj)
            for i, r in enumerate(hd.summarize(traj, [etas] * seeds)):
                rows.append({"sigma_z": sz, "seed": i // len(etas), **r})
            if first is None:
                first = traj["eta_ntk_half"][0]
    written = []
    if out is not None or plot is not None:
        import json

        from eoslab.plots.highdim import plot_sweep

        if out is not None:
            written.append(cli.write_text(out / "sweep.json", json.dumps(cli.clean_json(rows), indent=1), "--out"))
            written += cli.write_figure(lambda p: plot_sweep(rows, first, etas, p), out / "phase", "--out")
        if plot is not None:
            written += cli.write_figure(lambda p: plot_sweep(rows, first, etas, p), plot)
    cli.emit_json(rows, as_json, json_out)
    if not as_json:
        cli.print_table(f"Random second-order models D={D}, P={P}, σ_J={sj:.3g}, σ_q={sq:.3g}, {steps} steps",
                        ["σ_z", "seed", "η", "onset", "final ηλ/2", "mean after onset", "ηλ₂/2", "final loss",
                         "outcome"],
                        [[r["sigma_z"], r["seed"], r["lr"], r["onset_ntk"], r["final_eta_ntk_half"],
                          r["mean_eta_ntk_half_after_onset"], r["eta_ntk2_half"], r["final_loss"], r["outcome"]]
                         for r in rows])
    if written:
        typer.echo(f"wrote {', '.join(map(str, written))}", err=as_json)
    if runs is not None:
        import numpy as np

        grid = (len(szs), seeds, len(etas))
        arrays = {k: np.stack([np.asarray(t[k]) for t in stacked]) for k in stacked[0]}
        dims = {k: ("sigma_z", "model", "lr", "step") + (("eig",) if v.ndim == 5 else ()) for k, v in arrays.items()}
        summary = {k: v.reshape(grid) for k, v in cli.result_arrays(cli.columns(rows)).items()
                   if k not in ("sigma_z", "seed", "lr") and getattr(v, "ndim", 0) == 1}
        arrays.update({f"final_{k}" if k in arrays else k: v for k, v in summary.items()})
        dims.update({f"final_{k}" if k in dims else k: ("sigma_z", "model", "lr") for k in summary})
        arrays.update(sigma_z=np.asarray(szs), model=np.arange(seeds), lr=np.asarray(etas))
        dims.update(sigma_z=("sigma_z",), model=("model",), lr=("lr",))
        cli.save_run(runs, "highdim-sweep", arrays,
                     dict(datapoints=D, params=P, lrs=etas, sigma_z=szs, seeds=seeds, steps=steps,
                          sharpening=sharpening, hessian_every=hessian_every, seed=seed),
                     dims=dims, coords=("sigma_z", "model", "lr"), quiet=as_json)


@app.command("nonlinear")
def nonlinear_cmd(
    D: int = typer.Option(40, "--datapoints", help=D_HELP),
    P: int = typer.Option(40, "--params", help=P_HELP),
    lr: float = typer.Option(1.2, "--lr", help="step size η > 0"),
    sigma_z: float = typer.Option(1.0, "--sigma-z", help="std σ_z > 0 of the initial residuals"),
    steps: int = typer.Option(200, "--steps", help="GD steps (≥ 1)"),
    sharpening: float = typer.Option(0.15, "--sharpening", help="σ_q = sharpening·√(D/P) (> 0; docs/theorem2.md)"),
    seed: int = typer.Option(1, "--seed", help="random seed of the model (0 … 2³²−1)"),
    out: Optional[Path] = cli.out_option("write the figure nonlinear.png/.svg into this folder"),
    plot: Optional[Path] = cli.plot_option(),
    as_json: bool = cli.json_option("print the events as JSON to stdout (instead of the table)"),
    json_out: Optional[Path] = cli.json_out_option("also write the events as JSON to this file"),
    runs: Optional[Path] = cli.runs_option(),
) -> None:
    """The non-linear dynamical contribution ‖½η²Q(g,g)‖/‖ηJg‖ along one trajectory, with λ_max."""
    _sizes(D, P)
    check("--lr", lr, positive)
    check("--sigma-z", sigma_z, positive)
    check("--steps", steps, positive_int)
    check("--sharpening", sharpening, positive)
    check("--seed", seed, seed_rule)
    cli.output_dir(out, "--out")
    cli.output_file(plot, "--plot")
    cli.output_file(json_out, "--json-out")
    cli.runs_root(runs, "nonlinear")
    check_memory(f"--datapoints {D} --params {P}", _model_memory(D, P, 1), "the model's Q alone is D·P² floats")
    import jax
    import numpy as np

    from eoslab.dynamics import highdim as hd

    check_memory(f"--steps {steps:,}", hd.records_bytes(1, steps), "use fewer --steps")
    from eoslab.models import second_order

    sj, sq = hd.natural_scales(D, P, sharpening)
    m = second_order.random(jax.random.PRNGKey(seed), D, P, sigma_z, sj, sq)
    traj, _ = hd.batched_gd_output(m, [lr], steps, record_nonlinear=True, lanczos_iters=20)
    one = {k: np.asarray(v[0]) for k, v in traj.items()}
    ev = hd.nonlinear_events(one["eta_ntk_half"], one["nonlinear_norm"], one["linear_norm"])
    written = []
    if out is not None or plot is not None:
        from eoslab.plots.highdim import plot_nonlinear

        if out is not None:
            written += cli.write_figure(lambda p: plot_nonlinear(one, lr, ev, p), out / "nonlinear", "--out")
        if plot is not None:
            written += cli.write_figure(lambda p: plot_nonlinear(one, lr, ev, p), plot)
    res = {"D": D, "P": P, "lr": lr, "sigma_z": sigma_z, "steps": steps, "sharpening": sharpening, "seed": seed,
           "events": {k: (v.item() if hasattr(v, "item") else v) for k, v in ev.items()}}
    cli.emit_json(res, as_json, json_out)
    if not as_json:
        cli.print_table("Non-linear contribution events (steps)", list(ev), [list(res["events"].values())])
    if written:
        typer.echo(f"wrote {', '.join(map(str, written))}", err=as_json)
    cli.save_run(runs, "nonlinear", {**one, **cli.result_arrays({"events": res["events"]})},
                 dict(datapoints=D, params=P, lr=lr, sigma_z=sigma_z, steps=steps, sharpening=sharpening, seed=seed),
                 quiet=as_json)
