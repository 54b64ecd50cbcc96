"""Progress of long computations, reported by the library and shown by whoever listens.

Library loops (GD chunks, Monte Carlo chunks, sweeps, training) announce their work with
:func:`task`; nothing is shown unless a *reporter* is installed with :func:`reporting`
(the ``eoslab`` command installs one: a rich bar with ETA on a terminal, a plain line every
few seconds in a log). Without a reporter a task costs one context-variable lookup, so the
library stays silent and pure for a user's own program.

Example::

    from eoslab import progress
    with progress.task("Monte Carlo samples", total=n) as t:
        for chunk in chunks:
            ...
            t.advance(len(chunk))
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from typing import Iterator, Protocol


class Reporter(Protocol):
    def start(self, description: str, total: float | None, unit: str) -> object: ...
    def update(self, handle: object, completed: float, info: str = "") -> None: ...
    def stop(self, handle: object, ok: bool = True) -> None: ...


_current: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("eoslab_progress", default=None)


class Task:
    """A handle on one announced piece of work; :meth:`advance` / :meth:`update` move it."""

    def __init__(self, reporter: Reporter | None, handle: object, total: float | None):
        self._r, self._h, self.total, self.completed = reporter, handle, total, 0.0

    def advance(self, n: float = 1, info: str = "") -> None:
        self.update(self.completed + n, info)

    def update(self, completed: float, info: str = "", total: float | None = None) -> None:
        """Set the work done (and, when it becomes known, the ``total``)."""
        self.completed = completed
        if total is not None and total != self.total:
            self.total = total
            if self._r is not None and hasattr(self._r, "set_total"):
                self._r.set_total(self._h, total)
        if self._r is not None:
            self._r.update(self._h, completed, info)


@contextlib.contextmanager
def task(description: str, total: float | None, unit: str = "steps") -> Iterator[Task]:
    """Announce ``total`` units of work (None: unknown); yields a :class:`Task`."""
    r = _current.get()
    h = r.start(description, total, unit) if r is not None else None
    t = Task(r, h, total)
    ok = False
    try:
        yield t
        ok = True
    finally:
        if r is not None:
            r.stop(h, ok)


def active() -> bool:
    """True when a reporter listens (a caller may then split work into chunks to report)."""
    return _current.get() is not None


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Install ``reporter`` for the tasks started inside the block (None: silence)."""
    tok = _current.set(reporter)
    try:
        yield
    finally:
        _current.reset(tok)


class PlainReporter:
    """One plain line per task every ``every`` seconds (and at its end) on ``stream``: for logs."""

    def __init__(self, stream=None, every: float = 10.0):
        self.stream, self.every = stream or sys.stderr, every
        self._tasks: dict[int, dict] = {}
        self._n = 0

    def start(self, description, total, unit):
        self._n += 1
        now = time.monotonic()
        self._tasks[self._n] = {"d": description, "total": total, "unit": unit, "t0": now, "last": now,
                                "done": 0.0}
        return self._n

    def _line(self, t, final=False) -> str:
        el = time.monotonic() - t["t0"]
        if t["total"]:
            frac = t["done"] / t["total"]
            eta = (el / frac - el) if frac > 0 else float("nan")
            eta_s = "—" if eta != eta else f"{eta:.0f} s"
            return (f"{t['d']}: {t['done']:,.0f}/{t['total']:,.0f} {t['unit']} ({frac:.0%}), "
                    f"{el:.0f} s elapsed" + ("" if final else f", ETA {eta_s}"))
        return f"{t['d']}: {t['done']:,.0f} {t['unit']}, {el:.0f} s elapsed"

    def set_total(self, handle, total):
        if handle in self._tasks:
            self._tasks[handle]["total"] = total

    def update(self, handle, completed, info=""):
        t = self._tasks.get(handle)
        if t is None:
            return
        first = t["done"] == 0 and completed > 0
        t["done"] = completed
        now = time.monotonic()
        if now - t["last"] >= self.every or (first and now - t["t0"] >= self.every):
            t["last"] = now
            print(self._line(t) + (f" {info}" if info else ""), file=self.stream, flush=True)

    def stop(self, handle, ok=True):
        t = self._tasks.pop(handle, None)
        if t is not None and time.monotonic() - t["t0"] >= self.every:
            print(self._line(t, final=True) + (", done" if ok else ", stopped"), file=self.stream, flush=True)


class RichReporter:
    """Bars with ETA in one :class:`rich.progress.Progress` (nested tasks show as extra bars)."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        # MofNCompleteColumn shows "?" while a total is unknown (None)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[unit]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[info]}"),
                                 console=console or Console(stderr=True), transient=True)
        self._depth = 0

    def start(self, description, total, unit):
        if self._depth == 0:
            self.progress.start()
        self._depth += 1
        return self.progress.add_task(description, total=total, unit=unit, info="")

    def set_total(self, handle, total):
        self.progress.update(handle, total=total)

    def update(self, handle, completed, info=""):
        self.progress.update(handle, completed=completed, info=info)

    def stop(self, handle, ok=True):
        self.progress.remove_task(handle)
        self._depth -= 1
        if self._depth == 0:
            self.progress.stop()


# ---- interrupts (the eoslab program only) ----------------------------------------------------------
#: Set by the CLI's ``main`` once it handles KeyboardInterrupt itself.
INTERRUPTS = {"main": False}


def _unsafe(frame) -> bool:
    """True inside code where an exception raised by a signal is swallowed or tears down
    foreign state: a garbage-collection callback (JAX's ``_xla_gc_callback``), a module being
    imported, or a Python callback called back from a running XLA computation."""
    f = frame
    while f is not None:
        name, file = f.f_code.co_name, f.f_code.co_filename.replace("\\", "/")
        if ("gc_callback" in name or "/jax/_src/callback" in file or "/jax/_src/debugging" in file
                or file.startswith("<frozen importlib")):
            return True
        f = f.f_back
    return False


def install_interrupt_handler() -> None:
    """Ctrl-C for the ``eoslab`` program. Before its ``main`` runs nothing has been written, so
    the process ends at once (exit 130). Afterwards KeyboardInterrupt is raised only where Python
    unwinds cleanly; inside a callback or an import it is re-delivered 50 ms later instead of
    being lost."""
    import _thread
    import os
    import signal
    import threading

    def handler(signum, frame):
        if not INTERRUPTS["main"]:
            try:
                sys.stderr.write("interrupted: nothing was written\n")
                sys.stderr.flush()
            finally:
                os._exit(130)
        if _unsafe(frame):
            threading.Timer(0.05, _thread.interrupt_main).start()
            return
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (an embedding program): keep its handler
        pass
