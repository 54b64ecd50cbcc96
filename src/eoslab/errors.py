"""One exception type, and one set of checks, for every input the user can get wrong.

The same rules validate the command line (``eoslab.cli._parse``), the experiment configs
(:class:`eoslab.experiments.Field` ``check=``) and the library's entry points, so a bad value
gets the same message wherever it comes from; only the name differs (``--lr``,
``file.toml:12: [dynamics] lr``, ``lr``). The CLI turns an :class:`EoslabError` into a
one-line ``error: …`` and exit code 2 (no traceback).

A *rule* is a function ``rule(value) -> str | None``: the complaint (``"must be > 0"``) or
None. :func:`check` applies rules and raises :class:`InvalidValue` naming the value;
``check_positive`` and friends are the common cases.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Iterable

Rule = Callable[[object], "str | None"]

#: Largest accepted integer for counts (steps, sizes, initialisations) and seeds: beyond it
#: XLA aborts (int32 loop counters) or JAX overflows.
MAX_INT = 2**31 - 1
MAX_SEED = 2**32 - 1


class EoslabError(ValueError):
    """Invalid user input: a bad step size, mismatched shapes, an unknown model, a corrupt file."""


class InvalidValue(EoslabError):
    """A number, list or choice outside what is accepted (named in the message)."""


class ResourceError(EoslabError):
    """The request would need more memory than the machine has (the message says how much)."""


class OutputError(EoslabError):
    """An output path that cannot be written (refused before any computation)."""


class MeasureError(EoslabError):
    """A claim's measure or prediction cannot be computed from the selected runs (none diverged
    as required, several values where one is needed, …); the report shows it as a failed claim."""


# ---- rules ------------------------------------------------------------------------------------
def _num(v) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return None


def finite(v) -> str | None:
    x = _num(v)
    if x is None:
        return "must be a number"
    return None if math.isfinite(x) else "must be a finite number"


def positive(v) -> str | None:
    x = _num(v)
    return None if x is not None and math.isfinite(x) and x > 0 else "must be a finite positive number"


def nonnegative(v) -> str | None:
    x = _num(v)
    return None if x is not None and math.isfinite(x) and x >= 0 else "must be a finite number ≥ 0"


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Rule:
    """``lo ≤ v ≤ hi`` (open ends with ``lo_open``/``hi_open``), v finite unless an end is ±inf."""
    text = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def rule(v):
        x = _num(v)
        if x is None or math.isnan(x):
            return f"must be a number in {text}"
        ok = (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
        return None if ok and (math.isfinite(x) or x in (lo, hi)) else f"must be in {text}"

    return rule


def integer(lo: int = 0, hi: int = MAX_INT) -> Rule:
    """An integer (not a bool) with ``lo ≤ v ≤ hi``."""
    def rule(v):
        if isinstance(v, bool) or not isinstance(v, int):
            x = _num(v)
            if x is None or not math.isfinite(x) or x != int(x):
                return "must be an integer"
            v = int(x)
        if v < lo:
            return f"must be an integer ≥ {lo}"
        if v > hi:
            return f"must be an integer ≤ {hi:,} (too large)"
        return None

    return rule


#: A standard deviation of a random ensemble (σ_z, σ_J, σ_q): its powers up to the 8th (the
#: variances of the Monte Carlo moments) stay inside float64, so no mean or standard error is
#: an overflow (inf) or an underflow (0/0: NaN) without an error.
scale = between(1e-30, 1e30)

positive_int = integer(1)
nonnegative_int = integer(0)
seed_rule = integer(0, MAX_SEED)


def nonempty(v) -> str | None:
    return None if len(v) else "needs at least one value"


def each(rule: Rule) -> Rule:
    """Apply ``rule`` to every element of a list."""
    def r(vals):
        for i, x in enumerate(vals):
            msg = rule(x)
            if msg:
                return f"[{i}] = {x!r}: {msg}"
        return None

    return r


def one_of(choices: Iterable) -> Rule:
    choices = tuple(choices)

    def rule(v):
        return None if v in choices else "must be one of " + ", ".join(map(str, choices))

    return rule


# ---- checks (raise) ---------------------------------------------------------------------------
def runtime_check(ok, message: str, shown=None) -> None:
    """Refuse with :class:`InvalidValue` (``message``, and ``got {shown}`` when known) unless
    ``ok``, a boolean array (``shown``: the offending value, or a function giving its text).

    A concrete ``ok`` is checked here, at once. A traced one (the caller is under ``jit`` or
    ``vmap``, so the values are not known yet) is checked when the computation runs, through
    ``jax.debug.callback``: the check still fires, and JAX reports it as its runtime error
    carrying this message (the exception type cannot cross the compiled boundary)."""
    import jax
    import numpy as np

    if not isinstance(ok, jax.core.Tracer):
        if not bool(np.all(np.asarray(ok))):
            shown = shown() if callable(shown) else shown
            got = "" if shown is None or isinstance(shown, jax.core.Tracer) else f", got {shown}"
            raise InvalidValue(message + got)
        return

    def host(v):
        if not bool(np.all(v)):
            raise InvalidValue(message)

    jax.debug.callback(host, ok)


def check(name: str, value, *rules: Rule):
    """Return ``value`` if every rule accepts it, else raise :class:`InvalidValue` naming ``name``."""
    for rule in rules:
        msg = rule(value)
        if msg:
            raise InvalidValue(f"{name} {msg}, got {_show(value)}")
    return value


def _show(value) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None and tuple(shape) != ():
        return f"an array of shape {tuple(shape)}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"a list of {len(value)} values"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**12:
        return f"{value:.3e}"
    return repr(value)


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as float if it is finite and > 0, else raise naming ``name``."""
    if _num(value) is None:
        raise InvalidValue(f"{name} must be a finite positive number, got {_show(value)}")
    return float(check(name, value, positive))


def check_nonnegative(name: str, value: float) -> float:
    if _num(value) is None:
        raise InvalidValue(f"{name} must be a finite number ≥ 0, got {_show(value)}")
    return float(check(name, value, nonnegative))


def check_finite(name: str, value: float) -> float:
    if _num(value) is None:
        raise InvalidValue(f"{name} must be a finite number, got {_show(value)}")
    return float(check(name, value, finite))


def check_positive_int(name: str, value: int, hi: int = MAX_INT) -> int:
    """Return ``value`` as int if it is an integer in [1, hi], else raise naming ``name``."""
    return int(check(name, value, integer(1, hi)))


def check_nonnegative_int(name: str, value: int, hi: int = MAX_INT) -> int:
    return int(check(name, value, integer(0, hi)))


def check_representable(name: str, value, dtype) -> None:
    """Refuse a finite number that overflows ``dtype`` (e.g. a step size of 1e300 in a float32
    model would become inf, and every step NaN, with no error)."""
    import numpy as np

    x = _num(value)
    if x is None or not math.isfinite(x):
        return
    big = float(np.finfo(np.dtype(dtype)).max)
    if abs(x) > big:
        raise InvalidValue(f"{name} = {x:g} overflows {np.dtype(dtype).name} (largest {big:.3g}); use a smaller "
                           "value or float64")


def check_seed(name: str, value: int) -> int:
    return int(check(name, value, seed_rule))


def check_nonempty(name: str, values) -> list:
    return list(check(name, list(values), nonempty))


# ---- memory -----------------------------------------------------------------------------------
def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; None if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**28 else f"{n / 2**20:.3g} MiB"


def check_memory(what: str, nbytes: float, hint: str = "") -> None:
    """Refuse (:class:`ResourceError`) a request estimated to need ``nbytes`` when that exceeds
    the available memory; ``what`` names the request (``"--inits 1000000000"``)."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise ResourceError(f"{what} needs about {_gib(nbytes)} of memory, {_gib(avail)} available"
                            + (f"; {hint}" if hint else ""))
