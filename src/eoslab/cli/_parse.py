"""The one grammar of every ``eoslab`` command (written down in ``docs/cli.md``).

* ``--json``: a flag; print one JSON object (or list) to stdout instead of tables.
* ``--json-out FILE``: write that JSON to FILE (both may be given).
* ``--plot FILE``: write the command's one figure (PNG at FILE, an SVG next to it).
* ``--out DIR``: a folder for several files (tables, figures); nothing is written unless asked.
* value lists ``a,b,c``; ranges ``START:STOP:NUM`` (NUM values, both ends included); every list
  option accepts either.
* lower-case option names; help text on every option.
* every output is checked **before** any computation (:func:`output_file`, :func:`output_dir`);
  a write that still fails keeps the result (:func:`write_text` saves it in the temporary folder
  and says where).
* long work shows progress (:func:`progress_reporter`): a rich bar with ETA on a terminal, a
  plain line every 10 s in a log.

* ``--runs ROOT``: also store the results as a run of the results store (:func:`runs_option`,
  :func:`runs_root` before any work, :func:`save_run` after it): ``ROOT/<command>/<run id>``.

Helpers for command modules: the option factories (:func:`json_option`, :func:`json_out_option`,
:func:`plot_option`, :func:`out_option`, :func:`runs_option`), the parsers (:func:`values`, :func:`ints`,
:func:`floats`, :func:`choices`), the output preflight and writers, :func:`emit_json`,
:func:`print_table` and :func:`console`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import typer

from eoslab.errors import EoslabError, InvalidValue, OutputError, Rule, check

# ---- option factories ---------------------------------------------------------------------------
JSON_HELP = "print the result as JSON to stdout (instead of tables)"


def json_option(help: str = JSON_HELP):
    return typer.Option(False, "--json", help=help)


def path_value(text: str) -> Path:
    """The parser of every path option: an empty path is refused (``Path("")`` would silently
    be the current folder); whether it can be written is checked by :func:`output_file` and
    :func:`output_dir` before any work."""
    if isinstance(text, Path):
        return text
    if not str(text).strip():
        raise typer.BadParameter("give a path (got an empty string)")
    return Path(text)


def json_out_option(help: str = "also write the JSON result to this file"):
    return typer.Option(None, "--json-out", help=help, metavar="FILE", parser=path_value)


def plot_option(help: str = "write the figure to this file (PNG, an SVG next to it)"):
    return typer.Option(None, "--plot", help=help, metavar="FILE", parser=path_value)


def out_option(help: str = "write every output file (tables, figures) into this folder"):
    return typer.Option(None, "--out", help=help, metavar="DIR", parser=path_value)


# ---- values -----------------------------------------------------------------------------------
def _number(text: str, option: str, kind):
    t = text.strip()
    try:
        if kind is int:
            if not t.lstrip("+-").isdigit():
                raise ValueError
            return int(t)
        return float(t)
    except ValueError:
        word = "an integer" if kind is int else "a number"
        raise InvalidValue(f"{option}: {t!r} is not {word} (give a,b,c or START:STOP:NUM)") from None


def values(text: str | None, option: str, *, kind=float, rules: Sequence[Rule] = (), allow_range: bool = True,
           length: int | None = None, empty_ok: bool = False, finite: bool = True) -> list:
    """Parse ``a,b,c`` or (``allow_range``) ``START:STOP:NUM`` into a list of ``kind``; every
    value must satisfy ``rules`` (and be finite unless ``finite=False``). Errors name ``option``."""
    text = "" if text is None else str(text)
    s = text.strip()
    if not s:
        if empty_ok:
            return []
        raise InvalidValue(f"{option} needs at least one value (a,b,c" + (" or START:STOP:NUM)" if allow_range
                                                                          else ")"))
    if ":" in s and allow_range:
        parts = s.split(":")
        if len(parts) != 3 or "," in s:
            raise InvalidValue(f"{option}: a range is START:STOP:NUM (e.g. 0.5:1.5:21), got {text!r}")
        start, stop = (_number(p, option, float) for p in parts[:2])
        num = _number(parts[2], option, int)
        if not (math.isfinite(start) and math.isfinite(stop)):
            raise InvalidValue(f"{option}: range ends must be finite, got {text!r}")
        if not 1 <= num <= 100_000:
            raise InvalidValue(f"{option}: NUM of START:STOP:NUM must be an integer in [1, 100000], got {num}")
        if num == 1:
            out = [start]
        else:
            # 15 significant digits: 0.5:1.5:21 gives 0.85, not 0.8500000000000001
            out = [float(f"{start + (stop - start) * i / (num - 1):.15g}") for i in range(num)]
        if kind is int:
            if any(v != int(v) for v in out):
                raise InvalidValue(f"{option}: the range {text!r} has non-integer values")
            out = [int(v) for v in out]
    else:
        if ":" in s:
            raise InvalidValue(f"{option} takes a list a,b,c (no ranges), got {text!r}")
        items = [p for p in s.split(",")]
        if any(not p.strip() for p in items):
            raise InvalidValue(f"{option}: empty item in the list {text!r} (give a,b,c)")
        out = [_number(p, option, kind) for p in items]
    if length is not None and len(out) != length:
        raise InvalidValue(f"{option} needs exactly {length} comma-separated values, got {len(out)} ({text!r})")
    for i, v in enumerate(out):
        if kind is float and (math.isnan(v) or (finite and math.isinf(v))):
            raise InvalidValue(f"{option}: every value must be {'finite' if finite else 'a number (not nan)'}, "
                               f"got {v!r}")
        for rule in rules:
            msg = rule(v)
            if msg:
                raise InvalidValue(f"{option}: value {v!r} {msg}")
    return out


def floats(text, option, *rules: Rule, **kw) -> list[float]:
    return values(text, option, kind=float, rules=rules, **kw)


def ints(text, option, *rules: Rule, **kw) -> list[int]:
    return values(text, option, kind=int, rules=rules, **kw)


def choices(text: str | None, option: str, allowed: Iterable[str], *, empty_ok: bool = False) -> list[str]:
    """A comma list of names, each one of ``allowed``; the error lists only what is accepted."""
    allowed = list(allowed)
    items = [p.strip() for p in (text or "").split(",") if p.strip()]
    if not items and not empty_ok:
        raise InvalidValue(f"{option} needs at least one of: {', '.join(allowed)}")
    bad = [p for p in items if p not in allowed]
    if bad:
        raise InvalidValue(f"{option}: unknown {', '.join(map(repr, bad))}; accepted: {', '.join(allowed)}")
    twice = sorted({p for p in items if items.count(p) > 1})
    if twice:
        raise InvalidValue(f"{option}: {', '.join(map(repr, twice))} given more than once")
    return items


def choice(value: str, option: str, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    if value not in allowed:
        raise InvalidValue(f"{option} must be one of: {', '.join(allowed)} (got {value!r})")
    return value


def option(name: str, value, *rules: Rule):
    """``check(name, value, *rules)``: the shared rules of :mod:`eoslab.errors` for one option."""
    return check(name, value, *rules)


# ---- outputs ---------------------------------------------------------------------------------
def _writable_dir(d: Path) -> bool:
    """Permission bits say yes and a probe file can really be created (root ignores the bits;
    /proc, read-only mounts and full disks do not)."""
    if not os.access(d, os.W_OK | os.X_OK):
        return False
    try:
        fd, probe = tempfile.mkstemp(prefix=".eoslab-probe-", dir=d)
    except OSError:
        return False
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return True


def _first_existing(p: Path) -> Path:
    q = p
    while not q.exists():
        if q.parent == q:
            break
        q = q.parent
    return q


def output_file(path: Optional[Path], option: str) -> Optional[Path]:
    """Refuse (before any work) an output file that cannot be written: a folder, a path under
    a regular file, or an unwritable folder. Parent folders are created only at write time."""
    if path is None:
        return None
    p = Path(path)
    if str(p) in ("", "."):
        raise OutputError(f"{option}: give a file name")
    if p.is_dir():
        raise OutputError(f"{option} {p}: is a folder, expected a file")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise OutputError(f"{option} {p}: the file is not writable")
        return p
    base = _first_existing(p.parent if str(p.parent) else Path("."))
    if not base.is_dir():
        raise OutputError(f"{option} {p}: {base} is a file, not a folder")
    if not _writable_dir(base):
        raise OutputError(f"{option} {p}: folder {base} is not writable")
    return p


def output_dir(path: Optional[Path], option: str) -> Optional[Path]:
    """Refuse a folder that cannot be created or written (a regular file, under a file, no
    permission), before any work."""
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{option} {p}: is a file, expected a folder")
    base = _first_existing(p)
    if not base.is_dir():
        raise OutputError(f"{option} {p}: {base} is a file, not a folder")
    if not _writable_dir(base):
        raise OutputError(f"{option} {p}: folder {base} is not writable")
    return p


def figure_files(path: Path) -> list[Path]:
    """The files a figure at ``path`` is written to (PNG at the path, an SVG next to it)."""
    p = Path(path)
    base = p.with_suffix("") if p.suffix.lower() in (".png", ".svg", ".pdf") else p
    return [base.with_suffix(".png"), base.with_suffix(".svg")]


def rescue_path(path: Path) -> Path:
    """Where a result that could not be written to ``path`` is kept instead."""
    return Path(tempfile.gettempdir()) / f"eoslab-rescued-{os.getpid()}-{Path(path).name or 'result'}"


def write_text(path: Path, text: str, option: str = "") -> Path:
    """Write ``text`` to ``path`` (parent folders created); if that fails after the work was
    done, keep it in the temporary folder, say where on stderr, and return that path."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p
    except OSError as e:
        alt = rescue_path(p)
        try:
            alt.write_text(text)
            where = f"kept in {alt}"
        except OSError:
            alt, where = None, "printed below"
        typer.echo(f"warning: could not write {option + ' ' if option else ''}{p} ({e.strerror or e}); "
                   f"the result is {where}", err=True)
        if alt is None:
            typer.echo(text)
            return p
        return alt


def write_figure(draw: Callable[[Path], list], path: Path, option: str = "--plot") -> list[Path]:
    """``draw(path)`` (a plotting function that saves and returns its files); if saving fails
    after the work was done, draw into the temporary folder instead and say where."""
    try:
        return [Path(p) for p in draw(Path(path))]
    except OSError as e:
        alt = rescue_path(path)
        out = [Path(p) for p in draw(alt)]
        typer.echo(f"warning: could not write {option} {path} ({e.strerror or e}); the figure is kept in "
                   f"{', '.join(map(str, out))}", err=True)
        return out


def clean_json(x):
    """JSON-safe: NaN/±inf → None, NumPy scalars and arrays → Python numbers and lists."""
    if isinstance(x, dict):
        return {str(k): clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_json(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return clean_json(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def emit_json(obj, as_json: bool, json_out: Optional[Path] = None, indent: int | None = None) -> None:
    """Print ``obj`` as JSON to stdout when ``as_json``; write it to ``json_out`` when given."""
    text = json.dumps(clean_json(obj), indent=indent)
    if json_out is not None:
        where = write_text(json_out, text + "\n", "--json-out")
        if not as_json:
            typer.echo(f"json: {where}")
    if as_json:
        typer.echo(text)


# ---- consoles, tables, progress ----------------------------------------------------------------
def console(stderr: bool = False):
    """A rich console; in a non-terminal wide enough that tables are never cut or truncated."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    c = Console(file=stream, stderr=stderr)
    if not c.is_terminal:
        c = Console(file=stream, width=400, stderr=stderr, no_color=True, soft_wrap=False)
    return c


def print_table(title: str, columns: list[str], rows: list[list], fmt: Callable | None = None) -> None:
    """A right-aligned table; floats formatted with 6 significant digits unless ``fmt``."""
    from rich.table import Table

    fmt = fmt or (lambda x: ("—" if x != x else f"{x:.6g}") if isinstance(x, float) else str(x))
    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="right", overflow="fold")
    for r in rows:
        t.add_row(*[fmt(x) for x in r])
    console().print(t)


def progress_reporter(enabled: bool = True):
    """The reporter for this process's stderr: rich bars on a terminal, plain lines in a log,
    None when disabled."""
    if not enabled:
        return None
    from eoslab.progress import PlainReporter, RichReporter

    c = console(stderr=True)
    if c.is_terminal:
        return RichReporter(c)
    try:  # seconds between the plain lines of a log (default 10)
        every = float(os.environ.get("EOSLAB_PROGRESS_EVERY", "10"))
    except ValueError:
        every = 10.0
    return PlainReporter(sys.stderr, every=every if every > 0 else 10.0)


def fail(message: str) -> None:
    """Raise the one-line error (exit 2) of a bad combination of options."""
    raise EoslabError(message)


#: What an interrupted command keeps (printed after ``interrupted:``); commands append to it.
KEPT: list[str] = []


def kept(message: str) -> None:
    """Say what is kept if the command is interrupted from now on (replaces earlier notes)."""
    KEPT[:] = [message]


# ---- results as runs of the store (--runs ROOT) -----------------------------------------------
RUNS_HELP = ("also store the results as a run under this results root (ROOT/<command>/<run id>; "
             "eoslab.load_dataset('ROOT/<command>') reads them back as xarray)")


def runs_option(help: str = RUNS_HELP):
    """``--runs ROOT``: the one option that stores a command's results in the results store."""
    return typer.Option(None, "--runs", help=help, metavar="ROOT", parser=path_value)


def runs_root(root: Optional[Path], experiment: str, option: str = "--runs") -> Optional[Path]:
    """Refuse (before any work) a results root where the run of ``experiment`` cannot be stored:
    a file, a folder under a file, an unwritable folder, or ``ROOT/<experiment>`` a file."""
    if root is None:
        return None
    p = output_dir(Path(root), option)
    sub = p / experiment
    if sub.exists() and not sub.is_dir():
        raise OutputError(f"{option} {p}: {sub} is a file, expected the experiment's folder")
    if sub.is_dir() and not _writable_dir(sub):
        raise OutputError(f"{option} {p}: folder {sub} is not writable")
    return p


def result_arrays(result: dict, prefix: str = "") -> dict:
    """A command's JSON-ready result as the arrays of one stored run: nested dicts flattened
    (``quantiles_ratio.q05`` → ``quantiles_ratio_q05``), a list of row dicts as one column per
    key, lists of numbers as 1-d arrays (None → NaN), lists of strings as string arrays; strings
    and None stay as they are (the store keeps them in ``meta.json``)."""
    import numpy as np

    out: dict = {}
    for k, v in result.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(result_arrays(v, f"{name}_"))
        elif isinstance(v, (list, tuple)) and v and all(isinstance(r, dict) for r in v):
            out.update(result_arrays(columns(v), f"{name}_"))
        elif isinstance(v, (list, tuple)):
            if all(isinstance(x, str) for x in v) and v:
                out[name] = np.asarray(v, dtype=str)
            else:
                try:
                    a = np.asarray([math.nan if x is None else x for x in v])
                except (TypeError, ValueError):  # ragged: kept as text in meta.json
                    a = None
                if a is None or a.dtype.kind not in "biuf":
                    out[name] = json.dumps(clean_json(v))
                    continue
                out[name] = a
        elif hasattr(v, "shape") and hasattr(v, "dtype"):
            out[name] = np.asarray(v)
        else:
            out[name] = v
    return out


def columns(rows: Sequence[dict]) -> dict:
    """Rows (a list of dicts with the same keys) as one list per key (for :func:`result_arrays`)."""
    keys = [k for k in (rows[0] if rows else {}) if all(k in r for r in rows)]
    return {k: [r[k] for r in rows] for k in keys}


def save_run(root: Optional[Path], experiment: str, arrays: dict, params: dict, *, dims: dict | None = None,
             coords: Sequence[str] = (), quiet: bool = False) -> Optional[Path]:
    """Store ``arrays`` (a dict of arrays and numbers, e.g. :func:`result_arrays` of the JSON
    result) as one run of ``experiment`` (the command's name) under ``root``, identified by
    ``params`` (the options that define the run; content-addressed: the same run again keeps
    the first copy), and say where (on stderr when ``quiet``, e.g. with ``--json``). If the
    write fails after the work, the run is kept under a rescue root in the temporary folder."""
    if root is None:
        return None
    from eoslab.experiments.store import save_trajectory

    params = {k: v for k, v in params.items() if v is not None}  # an option left at "not given"
    kw = dict(params=params, kind=f"cli.{experiment}", dims=dims, coords=coords)
    try:
        path = save_trajectory(arrays, root, experiment, **kw)
    except OSError as e:
        alt = Path(tempfile.gettempdir()) / f"eoslab-runs-rescued-{os.getpid()}"
        path = save_trajectory(arrays, alt, experiment, **kw)
        typer.echo(f"warning: could not store the run under --runs {root} ({e.strerror or e}); it is kept in "
                   f"{path}", err=True)
    typer.echo(f"run: {path}", err=quiet)
    return path
