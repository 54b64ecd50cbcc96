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
    "eoslab.cli.sweep",
    "eoslab.cli.view",
    "eoslab.cli.flow",
]


def _load_commands() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(name)


#: Options whose value may be omitted, and the value they then take (click's optional-value
#: options are not available through typer): ``--dask`` alone means a new LocalCluster.
OPTIONAL_VALUES = {"--dask": "local"}


def _optional_values(argv: list[str]) -> list[str]:
    """``--dask`` with no value (last, or followed by another option) → ``--dask=local``."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--":
            break
        if a in OPTIONAL_VALUES and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out[i] = f"{a}={OPTIONAL_VALUES[a]}"
    return out


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. ``argv`` None: this process is the ``eoslab`` program (the
    interrupt handler is installed and an interrupted run ends with ``os._exit(130)``, which
    skips the interpreter teardown that XLA's threads may crash in)."""
    import os

    try:  # typer ≥ 0.24 vendors click
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover
        from click import exceptions as cx

    from typer.exceptions import Abort

    from eoslab import progress
    from eoslab._precision import x64
    from eoslab.cli import _parse
    from eoslab.errors import EoslabError

    program = argv is None
    if program:
        progress.install_interrupt_handler()  # again: a host program may have replaced it
        progress.INTERRUPTS["main"] = True
    _parse.KEPT.clear()
    try:
        _load_commands()
        # eoslab's own program computes in float64 (float32 models keep float32).
        with x64(), progress.reporting(_parse.progress_reporter()):
            # standalone_mode=False: usage errors come here and are printed as one line (typer's
            # own format is a multi-line box), and an interrupt is not silently turned into 130.
            args = _optional_values(sys.argv[1:] if argv is None else list(argv))
            rv = app(args=args, prog_name="eoslab", standalone_mode=False)
        if rv == 130:  # typer converted a KeyboardInterrupt into Exit(130)
            raise KeyboardInterrupt
        code = rv if isinstance(rv, int) else 0
    except cx.NoArgsIsHelpError as e:
        typer.echo(e.format_message(), err=True)
        sys.exit(2)
    except cx.ClickException as e:
        where = getattr(getattr(e, "ctx", None), "command_path", "eoslab")
        msg = " ".join(e.format_message().split())
        typer.echo(f"error: {where}: {msg} (see {where} --help)", err=True)
        sys.exit(e.exit_code)
    except Abort:
        raise KeyboardInterrupt from None
    except BrokenPipeError:  # `eoslab ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        os._exit(0) if program else sys.exit(0)
    except EoslabError as e:
        typer.echo(f"error: {' '.join(str(e).split())}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        kept = "; ".join(_parse.KEPT) or "nothing was written"
        typer.echo(f"interrupted: {kept}", err=True)
        if program:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        sys.exit(130)
    sys.exit(code)
