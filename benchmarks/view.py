"""Benchmark: how fast ``eoslab view`` redraws the 2-D explorer after a change of η.

Measured in one run:

* **server, warm**: ``Explorer.update`` (a 2,000-step ``gd`` trajectory with dense spectra, its
  outcome, the predicted limit, the landscape, the Bokeh data) and then the phase diagram
  (49 × 48 runs of the exact map, one vmap), for ``--changes`` new values of η, with the
  compiled programs reused: what every change after the first costs;
* **server, cold** (the reference): the same update after ``jax.clear_caches()``, i.e. what each
  change would cost if the programs were compiled per call;
* **browser** (when Chromium and chromedriver are installed): from setting η in the page to the
  first animation frame after the new trajectory (and then the new phase diagram) arrived,
  timed inside headless Chromium against a server on a free loopback port, and the CPU time all
  Chromium processes used per change (what the page costs on an idle machine).

* **run browser** (with the browser): selecting runs in the table (3 train-shaped runs of
  ``--run-steps`` steps: loss, 2 Hessian eigenvalues with residual error bars, the edge, other
  arrays) until every overlay is drawn in the page, cycling through the selections
  {A}, {A, B}, {A, B, C}, {B, C}, with the server's and Chromium's CPU time. (For a reference,
  run it with ``PYTHONPATH`` pointing at an older eoslab.)

    python benchmarks/view.py [--changes 10] [--steps 2000] [--no-browser] [--runs-only]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import threading
import time

import jax
import numpy as np
from rich.console import Console
from rich.table import Table

import eoslab  # noqa: F401
from eoslab.view import start_server, warm_up
from eoslab.view.app import Explorer


def server_times(changes: int, steps: int) -> tuple[list[float], list[float], list[float]]:
    ex = Explorer(None)
    ex.w_steps.value = steps
    upd, phase, cold = [], [], []
    lrs = np.linspace(0.8, 1.4, changes)
    for lr in lrs:
        t0 = time.perf_counter()
        ex._busy = True
        ex.w_lr.value = float(lr)
        ex._busy = False
        ex.update(phase=False)
        t1 = time.perf_counter()
        ex._update_phase()
        t2 = time.perf_counter()
        upd.append(t1 - t0)
        phase.append(t2 - t1)
    for lr in lrs[:3]:
        jax.clear_caches()
        t0 = time.perf_counter()
        ex._busy = True
        ex.w_lr.value = float(lr) + 1e-3
        ex._busy = False
        ex.update()
        ex._update_phase()
        cold.append(time.perf_counter() - t0)
    warm_up()
    return upd, phase, cold


def _serve_and_open(root: str, chrome: str, driver: str, *args: str):
    """Start ``eoslab view`` on ``root`` (free loopback port, its own IO loop in a thread) and a
    headless Chromium: ``(browser, {"server", "url"})``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from tornado.ioloop import IOLoop

    box = {}
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(asyncio.new_event_loop())
        box["server"], box["url"] = start_server(root, port=0, io_loop=IOLoop.current())
        ready.set()
        box["server"].io_loop.start()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(60)
    opts = webdriver.ChromeOptions()
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              *args, f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(a)
    opts.binary_location = chrome
    return webdriver.Chrome(service=Service(driver), options=opts), box


def browser_times(changes: int) -> tuple[list[float], list[float], list[float]] | None:
    chrome = shutil.which("chromium") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        return None
    b, box = _serve_and_open(tempfile.mkdtemp(), chrome, driver)
    m = lambda name: f"Bokeh.documents[0].get_model_by_name('{name}')"
    try:
        b.get(box["url"])
        _wait(b, f"return window.Bokeh && Bokeh.documents.length && {m('traj')} && {m('traj')}.data.x.length > 0")
        # Timed inside the page (no WebDriver round trips in the numbers): from setting η on the
        # input's model (what typing a value and pressing Enter does) to the next animation
        # frame after the trajectory's summary, the last property of an update, arrived; and
        # after the phase diagram arrived.
        b.execute_script(f"""
            const traj = {m('traj')}, ph = {m('phase_data')};
            window.__t = {{}};
            const frame = (k) => requestAnimationFrame(() => {{ window.__t[k] = performance.now(); }});
            traj.connect(traj.properties.tags.change, () => frame('traj'));
            ph.connect(ph.properties.data.change, () => frame('phase'));""")
        traj, phase, cpu = [], [], []
        driver_pid = b.service.process.pid
        for lr in np.round(np.linspace(0.81, 1.41, changes), 4):
            c0 = _tree_cpu(driver_pid)
            b.execute_script(f"window.__t = {{send: performance.now()}}; {m('lr')}.value = {lr};")
            _wait(b, "return window.__t.traj && window.__t.phase", poll=0.02)
            t = b.execute_script("return window.__t")
            traj.append((t["traj"] - t["send"]) / 1e3)
            phase.append((t["phase"] - t["send"]) / 1e3)
            time.sleep(0.3)  # let the page go idle; its CPU is counted up to here
            cpu.append(_tree_cpu(driver_pid) - c0)
        return traj, phase, cpu
    finally:
        b.quit()
        loop = box["server"].io_loop
        loop.add_callback(lambda: (box["server"].stop(), loop.stop()))


def _store(root, steps: int) -> list[str]:
    """3 runs shaped like ``eoslab train`` ones (the arrays a networks.train run stores)."""
    from eoslab.experiments.store import Store, run_config

    rng = np.random.default_rng(0)
    refs = []
    for i, lr in enumerate((0.05, 0.2, 0.4)):
        t = np.arange(steps)
        top = (2 / lr) * (1 - np.exp(-t / (steps / 5))) * (1 + 0.01 * rng.standard_normal(steps))
        eigs = np.stack([top, 0.6 * top], 1)
        arrays = {"loss": np.exp(-t / steps) * (1 + 0.1 * rng.random(steps)), "grad_norm": rng.random(steps),
                  "accuracy": rng.random(steps), "hessian_eigs": eigs, "hessian_residuals": 1e-3 * rng.random(eigs.shape),
                  "hessian_products": np.full(steps, 4), "tracked": top, "edge": np.full(steps, 2 / lr),
                  "final_loss": np.float64(0.01)}
        d = Store(root).write(run_config("bench", "networks.train", {"lr": lr, "steps": steps, "seed": i}), arrays, {})
        refs.append(f"bench/{d.name}")
    return refs


def browser_select_times(steps: int, repeats: int) -> list | None:
    """(selection, wall s, server CPU s, Chromium CPU s) from a selection in the runs table to
    every overlay drawn."""
    chrome = shutil.which("chromium") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        return None
    root = tempfile.mkdtemp()
    _store(root, steps)
    b, box = _serve_and_open(root, chrome, driver, "--window-size=1280,1400")
    b.set_script_timeout(120)
    m = lambda name: f"Bokeh.documents[0].get_model_by_name('{name}')"
    try:
        b.get(box["url"])
        _wait(b, f"return window.Bokeh && Bokeh.documents.length && {m('runs_table')} && "
                 f"{m('runs_table')}.data.ref.length === 3")
        b.execute_script(f"{m('tabs')}.active = 2;")
        time.sleep(0.5)
        # Drawn: every renderer of the four panels has its view, the details list every chosen
        # run, and one animation frame has passed.
        b.execute_script(f"""
            window.__drawn = (want) => new Promise((resolve) => {{
              const figs = ['runs_loss', 'runs_eigs', 'runs_ratio', 'runs_other'].map(n => Bokeh.documents[0].get_model_by_name(n));
              const check = () => {{
                const text = {m('runs_details')}.text;
                const views = figs.map(f => [...Bokeh.index.all_views()].find(v => v.model === f));
                const ok = want.every(r => text.includes(r)) && (text.match(/<details>/g) || []).length === want.length
                  && views.every((v, i) => v && figs[i].renderers.every(r => v.renderer_views.get(r) != null));
                if (ok) requestAnimationFrame(() => resolve(performance.now())); else requestAnimationFrame(check);
              }};
              check();
            }});""")
        refs = b.execute_script(f"return {m('runs_table')}.data.ref")
        times = []
        driver_pid = b.service.process.pid
        for _ in range(repeats):
            for sel in ([0], [0, 1], [0, 1, 2], [1, 2]):
                want = [refs[i] for i in sel]
                c0, s0 = _tree_cpu(driver_pid), time.process_time()
                dt = b.execute_async_script(
                    f"const done = arguments[arguments.length - 1]; const t0 = performance.now(); "
                    f"{m('runs_table')}.selected.indices = {sel}; "
                    f"window.__drawn({want!r}).then(t => done((t - t0) / 1e3));")
                # CPU seconds: the server (this process: the server thread, the WebDriver
                # client's calls are negligible) and every Chromium process.
                times.append((tuple(sel), dt, time.process_time() - s0, _tree_cpu(driver_pid) - c0))
                time.sleep(0.3)
        return times
    finally:
        b.quit()
        loop = box["server"].io_loop
        loop.add_callback(lambda: (box["server"].stop(), loop.stop()))


def _tree_cpu(root_pid: int) -> float:
    """CPU seconds (user + system) used so far by ``root_pid`` and all its descendants (Linux
    /proc): the browser's work, independent of how busy the machine is."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parts = f.read().rsplit(")", 1)[1].split()
                stats[int(d)] = (int(parts[1]), (int(parts[11]) + int(parts[12])) / tick)
            except (OSError, IndexError, ValueError):
                pass
    keep, frontier = {root_pid}, [root_pid]
    while frontier:
        p = frontier.pop()
        for c, (pp, _) in stats.items():
            if pp == p and c not in keep:
                keep.add(c)
                frontier.append(c)
    return sum(stats[p][1] for p in keep if p in stats)


def _wait(b, js, timeout=30.0, poll=0.05):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if b.execute_script(js):
            return
        time.sleep(poll)
    raise RuntimeError(f"timed out: {js}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--changes", type=int, default=10, help="number of η changes timed")
    ap.add_argument("--steps", type=int, default=2000, help="trajectory length")
    ap.add_argument("--no-browser", action="store_true", help="skip the headless-Chromium round trip")
    ap.add_argument("--runs-only", action="store_true", help="only the run browser's selection timing")
    ap.add_argument("--run-steps", type=int, default=2000, help="steps of each stored run (run browser)")
    ap.add_argument("--repeats", type=int, default=3, help="cycles of the 4 selections (run browser)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    med = statistics.median
    first = None if a.runs_only else warm_up()  # first: the run browser's page would compile it
    if not a.no_browser:
        sel = browser_select_times(a.run_steps, a.repeats)
        if sel is None:
            Console().print("run browser: no chromium/chromedriver")
        else:
            t = Table(title=f"eoslab view run browser: selection → every overlay drawn ({a.run_steps:,}-step runs, "
                            f"median of {a.repeats})")
            for c in ("runs selected", "wall (s)", "server CPU (s)", "Chromium CPU (s)"):
                t.add_column(c, justify="right")
            for key, what in (((0,), "{A} (from {B, C})"), ((0, 1), "{A, B} (adds B)"),
                              ((0, 1, 2), "{A, B, C} (adds C)"), ((1, 2), "{B, C} (drops A)")):
                rows = [r for r in sel if r[0] == key]
                t.add_row(what, *(f"{med([r[i] for r in rows]):.3f}" for i in (1, 2, 3)))
            Console().print(t)
    if a.runs_only:
        return
    upd, phase, cold = server_times(a.changes, a.steps)
    t = Table(title=f"eoslab view: one change of η, {a.steps:,}-step trajectory (median of {a.changes})")
    for c in ("what", "median (ms)", "max (ms)", "vs cold"):
        t.add_column(c, justify="right" if c != "what" else "left")
    ref = med(cold)
    t.add_row("start-up compile (warm_up, once)", f"{first * 1e3:.0f}", "", "")
    t.add_row("server: trajectory + outcome + landscape", f"{med(upd) * 1e3:.1f}", f"{max(upd) * 1e3:.1f}",
              f"{med(upd) / ref:.3f}×")
    t.add_row("server: phase diagram (2,352 runs)", f"{med(phase) * 1e3:.1f}", f"{max(phase) * 1e3:.1f}",
              f"{med(phase) / ref:.3f}×")
    t.add_row("reference: the same, compiled per call", f"{ref * 1e3:.0f}", f"{max(cold) * 1e3:.0f}", "1×")
    br = None if a.no_browser else browser_times(a.changes)
    if br is None:
        t.add_row("browser round trip", "no chromium/chromedriver (or --no-browser)", "", "")
    else:
        t.add_row("browser: η set → trajectory drawn (next frame)", f"{med(br[0]) * 1e3:.0f}",
                  f"{max(br[0]) * 1e3:.0f}", f"{med(br[0]) / ref:.3f}×")
        t.add_row("browser: η set → phase diagram drawn", f"{med(br[1]) * 1e3:.0f}",
                  f"{max(br[1]) * 1e3:.0f}", f"{med(br[1]) / ref:.3f}×")
        t.add_row("browser CPU per change (all Chromium processes)", f"{med(br[2]) * 1e3:.0f}",
                  f"{max(br[2]) * 1e3:.0f}", "")
    Console().print(t)
    Console().print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
