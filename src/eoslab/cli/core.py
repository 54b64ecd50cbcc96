"""Core commands: ``eoslab run`` (simulate a model) and ``eoslab theory``."""

from __future__ import annotations

import typer

from eoslab.cli import app


@app.command("version")
def version() -> None:
    """Print eoslab's version."""
    import eoslab

    typer.echo(eoslab.__version__)
