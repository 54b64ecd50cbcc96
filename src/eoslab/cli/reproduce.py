"""``eoslab reproduce``, ``eoslab report``, ``eoslab list`` and ``eoslab show``: the papers'
experiments from their configs, the results store and the claims report (docs/experiments.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from eoslab.cli import app
from eoslab.cli._parse import path_value
from eoslab.cli.sweep import DASK_HELP, WORKERS_HELP

RUNS_HELP = "results root (one folder per run)"
CONFIGS_HELP = ("folder of your own experiment configs, added to the shipped ones (same name: yours "
                "wins); default ./experiments if it exists")


def _only(values: Optional[List[str]]) -> list[str]:
    """The experiment names of ``--only`` (repeated and/or comma-separated); an empty name is
    an error (``--only ''`` must not silently mean every experiment)."""
    from eoslab.errors import InvalidValue

    out = []
    for item in values or []:
        names = [v.strip() for v in item.split(",")]
        if not all(names):
            raise InvalidValue(f"--only needs experiment names (a,b,c), got {item!r}; `eoslab list` shows them")
        out += names
    return out


def _configs(path: Optional[Path]) -> Optional[Path]:
    from eoslab.errors import InvalidValue

    if path is None:
        return None
    if not path.is_dir():
        raise InvalidValue(f"--configs {path}: no such folder")
    if not any(path.glob("*.toml")):
        raise InvalidValue(f"--configs {path}: the folder has no *.toml experiment configs")
    return path


def _load() -> str:
    import os

    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _console():
    from eoslab.cli._parse import console

    return console()


def _claims_table(report):
    from rich.table import Table

    from eoslab.report import claim_cells

    t = Table(title="claims", show_lines=False)
    for col in ("status", "claim", "predicted", "measured", "tolerance"):
        t.add_column(col, overflow="fold")
    for c in report.claims:
        cell = claim_cells(c)
        style = "bold green" if c.passed else "bold red"
        t.add_row(f"[{style}]{c.status}[/]", c.claim.id, cell["predicted"], f"{cell['relation']} {cell['measured']}",
                  cell["tolerance"])
    return t


def _write_report(exps, mode, store, out, started, console, figures=True) -> int:
    from eoslab.errors import EoslabError
    from eoslab.experiments.runner import check_complete, collect
    from eoslab.report import build

    check_complete(exps, mode, store)
    results = [collect(e, mode, store) for e in exps]
    try:
        report = build(results, out, mode, started=started, figures=figures)
    except OSError as e:
        raise EoslabError(f"could not write the report to {out} ({e.strerror or e}); the runs are stored under "
                          f"{store.root}: `eoslab report --{mode} --runs {store.root} --out OTHER_DIR` writes it "
                          "elsewhere") from None
    console.print(_claims_table(report))
    n, k = len(report.claims), sum(c.passed for c in report.claims)
    colour = "green" if report.passed else "red"
    console.print(f"[{colour}]{k}/{n} claims pass[/]; report: {report.md_path}  {report.html_path}  "
                  f"figures: {report.out / 'figures'}")
    return 0 if report.passed else 1


@app.command("reproduce")
def reproduce(
    quick: bool = typer.Option(True, "--quick/--full", help="quick sizes (≤ 5 min for the set on 2 cores) "
                               "or the papers' sizes"),
    only: Optional[List[str]] = typer.Option(None, "--only", help="experiment name (repeat, or comma-separate)"),
    out: Path = typer.Option(Path("eoslab-report"), "--out", parser=path_value, help="report folder"),
    runs: Path = typer.Option(Path("eoslab-runs"), "--runs", parser=path_value, help=RUNS_HELP),
    configs: Optional[Path] = typer.Option(None, "--configs", parser=path_value, help=CONFIGS_HELP),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="draw the figures (skip: claims only)"),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/N: compute only shard i of N (0-based) and "
                                        "write no report; assemble later with `eoslab report`"),
    dask: Optional[str] = typer.Option(None, "--dask", help=DASK_HELP, metavar="[ADDRESS]"),
    workers: Optional[int] = typer.Option(None, "--workers", help=WORKERS_HELP),
) -> None:
    """Run every experiment config's missing runs, then write figures/, report.md and report.html.
    Exit code 1 when a claim fails."""
    from eoslab import progress
    from eoslab.cli import _parse as cli
    from eoslab.cli.sweep import check_dask_options
    from eoslab.experiments.distributed import execute_dask, session
    from eoslab.experiments.runner import Shard, execute, load_experiments
    from eoslab.experiments.store import Store

    t0 = time.perf_counter()
    mode = "quick" if quick else "full"
    part = Shard.parse(shard)
    address = check_dask_options(dask, workers)
    exps = load_experiments(_configs(configs), _only(only), builtin=True)
    cli.output_dir(runs, "--runs")
    if part.count == 1:
        cli.output_dir(out, "--out")
    store = Store(runs)
    console = _console()
    timings, computed = [], [0]
    cli.kept(f"nothing new was stored under {store.root}")
    with session(dask is not None, address, workers) as client:  # None: no Dask
        for e in exps:
            counts = []
            with progress.task(f"{e.name:<28}", None, "runs") as bar:
                def update(done, total, bar=bar, counts=counts):
                    if counts:
                        computed[0] += done - counts[-1]
                        cli.kept(f"{computed[0]} new runs are stored under {store.root} (the run in flight is "
                                 f"lost); the same command resumes from there")
                    counts.append(done)
                    bar.update(done, total=total)

                t1, c1 = time.perf_counter(), time.process_time()
                if client is None:
                    execute(e, mode, store, part, on_progress=update)
                else:
                    execute_dask(e, mode, store, shard=part, client=client, on_progress=update)
            timings.append((e.name, counts[-1] - counts[0], counts[0], time.perf_counter() - t1,
                            time.process_time() - c1))
    # CPU time (all threads of this process) next to wall time: on a shared machine the wall
    # time says as much about the other users as about eoslab.
    for name, new, reused, secs, cpu in timings:
        console.print(f"  {name}: {new} runs computed, {reused} reused, {secs:.1f} s wall, {cpu:.1f} s CPU")
    if part.count > 1:
        console.print(f"shard {part.index}/{part.count} done under {store.root}; assemble the report with "
                      f"`eoslab report --{mode} --runs {store.root}` once every shard has finished")
        return
    cli.kept(f"every run is stored under {store.root}; `eoslab report --{mode} --runs {store.root}` writes the "
             "report from them")
    code = _write_report(exps, mode, store, out, t0, console, figures)
    console.print(f"reproduce --{mode}: {time.perf_counter() - t0:.1f} s wall, {time.process_time():.1f} s CPU "
                  f"in all (load average {_load():s})")
    if code:
        raise typer.Exit(code)


@app.command("report")
def report_cmd(
    quick: bool = typer.Option(True, "--quick/--full", help="which sizes' runs to report"),
    only: Optional[List[str]] = typer.Option(None, "--only", help="experiment name (repeat, or comma-separate)"),
    out: Path = typer.Option(Path("eoslab-report"), "--out", parser=path_value, help="report folder"),
    runs: Path = typer.Option(Path("eoslab-runs"), "--runs", parser=path_value, help=RUNS_HELP),
    configs: Optional[Path] = typer.Option(None, "--configs", parser=path_value, help=CONFIGS_HELP),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="draw the figures (skip: claims only)"),
) -> None:
    """Write the report from stored runs only (e.g. after sharded runs); lists missing runs.
    Exit code 1 when a claim fails."""
    from eoslab.experiments.runner import load_experiments
    from eoslab.experiments.store import Store

    mode = "quick" if quick else "full"
    from eoslab.cli._parse import output_dir
    from eoslab.errors import InvalidValue

    exps = load_experiments(_configs(configs), _only(only), builtin=True)
    if not runs.is_dir():
        raise InvalidValue(f"--runs {runs}: no such results folder (`eoslab reproduce --runs {runs}` makes one)")
    output_dir(out, "--out")
    code = _write_report(exps, mode, Store(runs), out, None, _console(), figures)
    if code:
        raise typer.Exit(code)


@app.command("list")
def list_cmd(
    runs: Path = typer.Option(Path("eoslab-runs"), "--runs", parser=path_value, help=RUNS_HELP),
    configs: Optional[Path] = typer.Option(None, "--configs", parser=path_value, help=CONFIGS_HELP),
) -> None:
    """The experiments, their kinds and claims, and how many of their runs are stored."""
    from rich.table import Table

    from eoslab.experiments.runner import load_experiments, plan
    from eoslab.experiments.store import Store

    store = Store(runs)
    t = Table(title=f"experiments (results under {store.root})")
    for col in ("name", "kind", "title", "claims", "quick runs", "full runs"):
        t.add_column(col, overflow="fold")
    for e in load_experiments(_configs(configs), builtin=True):
        counts = []
        for mode in ("quick", "full"):
            p = plan(e, mode, store)
            done = sum(r.run is not None for r in p)
            colour = "green" if done == len(p) else ("yellow" if done else "dim")
            counts.append(f"[{colour}]{done}/{len(p)}[/]")
        t.add_row(e.name, e.kind, e.title, str(len(e.claims)), *counts)
    console = _console()
    console.print(t)
    from eoslab.experiments.registry import discover

    k = Table(title="kinds (docs/experiments.md: how to add one)")
    for col in ("kind", "measures", "predictions", "what it runs"):
        k.add_column(col, overflow="fold")
    for name, kind in sorted(discover().items()):
        k.add_row(name, ", ".join(kind.measures), ", ".join(kind.predictions), kind.doc)
    console.print(k)
    from eoslab.experiments.registry import BROKEN

    for mod, err in BROKEN.items():
        console.print(f"[red]kind module {mod} failed to import: {err}[/]")


@app.command("show")
def show(
    run: str = typer.Argument(..., help="run id, unique id prefix, or run folder"),
    runs: Path = typer.Option(Path("eoslab-runs"), "--runs", parser=path_value, help=RUNS_HELP),
) -> None:
    """A stored run's parameters, metadata, scalar results and arrays."""
    import numpy as np
    from rich.table import Table

    from eoslab.experiments.store import Store

    r = Store(runs).find(run)
    console = _console()
    m = r.meta
    console.print(f"[bold]run {r.id}[/]  {r.path}")
    console.print(f"experiment {r.config['experiment']} (kind {r.config['kind']}), mode {m.get('mode')}, "
                  f"seed {m.get('seed')}, wall {m.get('wall_s', float('nan')):.3g} s "
                  f"(chunk of {m.get('chunk_size')}), written {m.get('written_utc')}")
    v = m.get("versions", {})
    console.print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    mach = m.get("machine", {})
    console.print(f"machine: {mach.get('hostname')} {mach.get('platform')} ({mach.get('cpu_count')} CPUs, "
                  f"JAX {mach.get('jax_backend')})")
    t = Table(title="parameters")
    t.add_column("name")
    t.add_column("value")
    for k, val in r.params.items():
        t.add_row(k, repr(val))
    console.print(t)
    t = Table(title="results")
    for col in ("name", "shape", "dtype", "value / range"):
        t.add_column(col)
    for k, a in r.arrays.items():
        if a.ndim == 0:
            desc = repr(a.item())
        else:
            fin = a[np.isfinite(a)] if a.dtype.kind in "fc" else a
            desc = f"[{fin.min():.6g}, {fin.max():.6g}]" if fin.size else "all non-finite"
        t.add_row(k, str(a.shape), str(a.dtype), desc)
    console.print(t)
