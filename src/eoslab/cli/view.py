"""``eoslab view``: the interactive explorer and run browser (a local web page, docs/view.md)."""

from __future__ import annotations

import typer

from eoslab.cli import app


@app.command("view")
def view(
    runs: str = typer.Option("eoslab-runs", "--runs", help="results root to browse (read-only)"),
    port: int = typer.Option(5006, "--port", help="port to listen on (0: any free port)"),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="address to bind (default loopback only; 0.0.0.0 exposes it to the network)"),
) -> None:
    """Open the edge-of-stability explorer and the browser of stored runs in a local web page."""
    from eoslab.view import serve

    serve(runs, port=port, host=host,
          on_ready=lambda url: typer.echo(f"eoslab view: {url}  (runs from {runs}; Ctrl+C to stop)", err=True))
