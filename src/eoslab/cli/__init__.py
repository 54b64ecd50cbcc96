"""The ``eoslab`` command.

One typer app; each group of commands lives in its own module and registers itself on
:data:`app` when imported. :func:`main` turns an :class:`~eoslab.EoslabError` into a
one-line message and exit code 2 (no traceback).
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="eoslab: progressive sharpening and the edge of stability of gradient descent.")



@app.callback()
def _root() -> None:
    """eoslab: progressive sharpening and the edge of stability of gradient descent."""


# Command modules: importing one registers its commands on `app`.
_COMMAND_MODULES = [
    "eoslab.cli.core",
    "eoslab.cli.companions",
    "eoslab.cli.reproduce",
    "eoslab.cli.highdim",
    "eoslab.cli.networks",
]


def _load_commands() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(name)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from eoslab.errors import EoslabError

    _load_commands()
    try:
        app(args=argv, prog_name="eoslab")
    except EoslabError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
