"""``eoslab view``: a local web app (Bokeh server) to explore the edge of stability and browse runs.

* :func:`make_app` builds the Bokeh :class:`~bokeh.application.Application` (nothing served);
* :func:`serve` serves it on ``host:port`` (127.0.0.1 by default) until interrupted.

Bokeh serves its JavaScript and styles from the installed Python package (``/static/``), so
the page works offline. Needs the ``[view]`` extra: ``pip install 'eoslab[view]'``.
See ``docs/view.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

from eoslab.errors import EoslabError


def x64():
    """float64 for the block (eoslab's scoped helper when present, else JAX's)."""
    try:
        from eoslab import x64 as scoped
    except ImportError:  # before eoslab had its helper: JAX's own (thread-local) switch
        import jax

        return jax.enable_x64(True)
    return scoped()


def in_x64(fn):
    """Decorator: run ``fn`` with float64 on (the explorer compares with theory)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with x64():
            return fn(*args, **kwargs)

    return wrapper

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5006


def _require_bokeh():
    try:
        import bokeh  # noqa: F401
    except ImportError:
        raise EoslabError("eoslab view needs Bokeh: pip install 'eoslab[view]'") from None


def make_app(runs_root: str | os.PathLike = "eoslab-runs"):
    """The Bokeh application of ``eoslab view`` for the results root ``runs_root`` (which
    need not exist yet: the run browser lists it once it does)."""
    _require_bokeh()
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler

    from eoslab.view.app import build

    root = Path(runs_root)
    if root.exists() and not root.is_dir():
        raise EoslabError(f"--runs {runs_root}: not a folder")
    return Application(FunctionHandler(lambda doc: build(doc, root)))


def warm_up() -> float:
    """Compile the explorer's default computations once (seconds taken), so that the first
    page and every later update reuse the compiled programs."""
    import time

    from eoslab.view import app, compute

    t0 = time.perf_counter()
    d = app.DEFAULTS
    compute.trajectory2d(d["eps"], d["lr"], d["E"], (d["theta1"], d["theta2"]), d["steps"])
    window = compute.box(d["eps"], 1.0, (d["theta1"], d["theta2"]))
    compute.phase_diagram(d["eps"], d["E"], d["theta1"], *compute.phase_axes(d["lr"], window), d["steps"])
    compute.predicted_ratio(d["eps"], d["lr"], d["E"])
    compute.landscape(d["eps"], d["E"], window)
    return time.perf_counter() - t0


def check_port(port: int) -> int:
    if int(port) != port or not (0 <= int(port) <= 65535):
        raise EoslabError(f"--port must be an integer in 0..65535, got {port!r}")
    return int(port)


def check_host(host: str) -> str:
    if not isinstance(host, str) or not host or any(c.isspace() or c in "/?#@" for c in host):
        raise EoslabError(f"--host must be a host name or address, got {host!r}")
    return host


def start_server(runs_root: str | os.PathLike = "eoslab-runs", port: int = DEFAULT_PORT,
                 host: str = DEFAULT_HOST, io_loop=None):
    """Create and start (not run) the Bokeh server of ``eoslab view`` on ``host:port`` with the
    current (or given tornado) I/O loop. Returns ``(server, url)``; run it with
    ``server.io_loop.start()``. ``port=0`` picks a free port (the URL has the real one)."""
    port = check_port(port)
    check_host(host)
    app = make_app(runs_root)
    import socket

    from bokeh.server.server import Server

    if port == 0:  # Bokeh needs the number up front for its websocket origin check
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        except OSError as e:  # an unknown host name or address (socket.gaierror), or not local
            raise EoslabError(f"cannot listen on {host}: {e.strerror or e}") from None
    origins = sorted({f"{h}:{port}" for h in (host, "127.0.0.1", "localhost")})
    kw = {"io_loop": io_loop} if io_loop is not None else {}
    try:
        server = Server({"/": app}, port=port, address=host, allow_websocket_origin=origins, num_procs=1, **kw)
    except OSError as e:
        raise EoslabError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    server.start()
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{port}/"


def serve(runs_root: str | os.PathLike = "eoslab-runs", port: int = DEFAULT_PORT, host: str = DEFAULT_HOST,
          on_ready=None) -> None:
    """Serve ``eoslab view`` at ``http://host:port/`` until interrupted (blocking).

    ``on_ready(url)`` is called once the server listens (the CLI prints the address)."""
    server, url = start_server(runs_root, port, host)  # bad options and a busy port fail here, at once
    with x64():  # the explorer compares with theory in float64; callbacks run in this thread
        warm_up()
    if on_ready is not None:
        on_ready(url)
    try:
        with x64():
            server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


__all__ = ["make_app", "serve", "start_server", "warm_up", "DEFAULT_HOST", "DEFAULT_PORT"]
