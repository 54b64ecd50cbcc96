"""``eoslab sweep FILE.toml``: a user's grid over any kind's parameters (docs/sweeps.md).

Every grid point is a run in the results store (resumable, content-addressed); then a
summary table, ``summary.json`` and the figures (edge ratio and final loss against η) under
``--out``. The library side is :func:`eoslab.experiments.sweeps.run_sweep`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from eoslab.cli import app
from eoslab.cli._parse import path_value

DASK_HELP = ("run each run as a Dask task: alone, on a new LocalCluster (--workers processes, default "
             "one per core); with an address (tcp://HOST:PORT), on that scheduler's cluster (docs/cluster.md)")
WORKERS_HELP = "worker processes of the LocalCluster started by --dask (default: one per core)"
RESOURCES_HELP = ("with --dask: worker resources each run needs, NAME=AMOUNT[,...] (e.g. GPU=1 with workers "
                  "started with --resources GPU=1: one run per GPU)")


def check_dask_options(dask: str | None, workers: int | None) -> str | None:
    """Validate ``--dask [ADDRESS]`` / ``--workers N`` before any work; returns the scheduler
    address (None: a new LocalCluster, or no Dask at all)."""
    from eoslab.errors import EoslabError

    if workers is not None and dask is None:
        raise EoslabError("--workers needs --dask (it sizes the LocalCluster)")
    if workers is not None and dask != "local":
        raise EoslabError("--workers sizes a new LocalCluster; with --dask ADDRESS the cluster is already sized")
    if workers is not None and workers < 1:
        raise EoslabError(f"--workers must be ≥ 1, got {workers}")
    if dask is not None and dask != "local" and "://" not in dask:
        raise EoslabError(f"--dask takes no value or a scheduler address like tcp://HOST:PORT, got {dask!r}")
    if dask is not None:
        try:
            import distributed as _distributed  # noqa: F401  (not `import dask...`: `dask` is the option)
        except ImportError:
            raise EoslabError("--dask needs dask.distributed: pip install 'eoslab[dask]'") from None
    return None if dask in (None, "local") else dask


def _json(v):
    """JSON-safe: NaN/inf → None (strict JSON has no NaN)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.5g}"
    return str(v)


@app.command("sweep")
def sweep_cmd(
    file: Path = typer.Argument(..., parser=path_value, help="sweep file (TOML, docs/sweeps.md)"),
    runs: Path = typer.Option(Path("eoslab-runs"), "--runs", parser=path_value, help="results root (one folder per run)"),
    out: Optional[Path] = typer.Option(None, "--out", parser=path_value, help="folder for summary.json and the figures "
                                       "(default ./eoslab-sweeps/<name>)"),
    quick: bool = typer.Option(False, "--quick/--full", help="apply the file's [quick.*] overrides (default: "
                               "the file's own values)"),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/N: compute only shard i of N (0-based) of the "
                                        "grid; no summary"),
    dask: Optional[str] = typer.Option(None, "--dask", help=DASK_HELP, metavar="[ADDRESS]"),
    workers: Optional[int] = typer.Option(None, "--workers", help=WORKERS_HELP),
    resources: Optional[str] = typer.Option(None, "--resources", help=RESOURCES_HELP),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="draw the figures"),
    json_out: bool = typer.Option(False, "--json", help="print the summary rows as JSON to stdout"),
) -> None:
    """Run every missing point of a sweep file, then print its summary and write its figures."""
    from rich.table import Table

    from eoslab import progress
    from eoslab.cli import _parse as cli

    from eoslab.errors import EoslabError
    from eoslab.experiments.runner import Shard
    from eoslab.experiments.sweeps import dimensions, load_sweep, run_sweep, sweep_rows

    mode = "quick" if quick else "full"
    part = Shard.parse(shard)
    address = check_dask_options(dask, workers)
    from eoslab.experiments.distributed import parse_resources

    needs = parse_resources(resources)
    if needs and dask is None:
        raise EoslabError("--resources needs --dask")
    cli.output_dir(runs, "--runs")
    if out is not None:
        cli.output_dir(out, "--out")
    exp = load_sweep(file, mode=mode)
    out = out if out is not None else Path("eoslab-sweeps") / exp.name
    if part.count == 1:
        cli.output_dir(out, "--out")
    console = cli.console(stderr=json_out)
    with progress.task(f"{exp.name:<28}", None, "runs") as bar:
        def update(done, total):
            bar.total = total
            bar.update(done)

        result = run_sweep(exp, runs, mode=mode, executor="local" if dask is None else "dask",
                           dask=address, workers=workers, shard=part, resources=needs, on_progress=update)
    if part.count > 1:
        console.print(f"shard {part.index}/{part.count} of sweep {exp.name} done under {result.store.root}")
        return
    rows = [{k: _json(v) for k, v in r.items()} for r in sweep_rows(result.folder)]
    cols = [c for c in dict.fromkeys(k for r in rows for k in r) if c != "run_id"] + ["run_id"]
    t = Table(title=f"sweep {exp.name} ({len(rows)} runs, {result.folder})")
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(_cell(r.get(c, "")) if c != "run_id" else r[c][:8] for c in cols))
    console.print(t)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    written = [out / "summary.json"]
    if figures:
        from eoslab.plots.style import save
        from eoslab.plots.sweeps import sweep_figures

        for name, fig, _caption in sweep_figures(result.dataset()):
            written += save(fig, out / f"{name}.png")
    console.print("wrote " + ", ".join(str(p) for p in written))
    dims = ", ".join(d["name"] for d in dimensions(exp, mode)) or "none"
    console.print(f"load it: eoslab.load({str(result.folder)!r}): an xarray Dataset (sweep dimensions: {dims})")
    if json_out:
        typer.echo(json.dumps(rows))
