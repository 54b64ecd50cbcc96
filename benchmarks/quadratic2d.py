"""Benchmark: batched GD on the 2-D model (Theorem 1), trajectory-steps per second.

eoslab path: :func:`eoslab.dynamics.quadratic2d.simulate` (what ``eoslab run quadratic2d`` runs): the
exact (z, λ) map, one ``vmap`` (``dynamics.sweep``) of a jitted ``lax.scan``, with divergence
masking and the per-run summaries (tail mean of ηλ/2, max, first crossing of the edge).
Reference: the same update and summaries as a vectorised NumPy loop over steps, same run.

    python benchmarks/quadratic2d.py [--inits 100000] [--steps 1000]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from rich.console import Console
from rich.table import Table

import eoslab  # noqa: F401  (float64)
from eoslab.dynamics import quadratic2d as q2d
from eoslab.models.quadratic2d import sample_inits


def numpy_simulate(eps, lr, theta0, steps, tail=100):
    """The update and summaries of :func:`q2d.simulate` in vectorised NumPy (float64)."""
    th = np.asarray(theta0, np.float64)
    x = lr * 0.5 * (th[:, 0] ** 2 - eps * th[:, 1] ** 2)
    l = lr * (th[:, 0] ** 2 + eps**2 * th[:, 1] ** 2)
    div = np.zeros(x.shape, bool)
    tail_sum = np.zeros_like(x)
    max_l = l.copy()
    first_cross = np.where(l > 2, 0, -1)
    with np.errstate(all="ignore"):
        for t in range(1, steps + 1):
            c1 = (1 - eps) * l + 2 * eps * x
            c2 = (1 - eps + eps**2) * l + 2 * eps * (1 - eps) * x
            x2 = x - l * x + 0.5 * x * x * c1
            l2 = l - 2 * x * c1 + x * x * c2
            div |= ~(np.isfinite(x2) & np.isfinite(l2))
            x = np.where(div, x, x2)
            l = np.where(div, l, l2)
            if t > steps - tail:
                tail_sum += l
            np.maximum(max_l, l, out=max_l)
            first_cross = np.where((first_cross < 0) & (l > 2), t, first_cross)
    return {"ratio": np.where(div, np.nan, tail_sum / (2 * tail)), "diverged": div, "first_cross": first_cross}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inits", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    theta0 = sample_inits(jax.random.PRNGKey(0), a.inits, a.eps, a.lr)
    work = a.inits * a.steps

    def run_eoslab():
        s = q2d.simulate(a.eps, a.lr, theta0, a.steps, chunk=a.steps)
        return jax.block_until_ready(s)

    t0 = time.perf_counter()
    ref = run_eoslab()  # includes compilation
    first = time.perf_counter() - t0
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        run_eoslab()
        times.append(time.perf_counter() - t0)
    t_jax = min(times)

    th_np = np.asarray(theta0)
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        out_np = numpy_simulate(a.eps, a.lr, th_np, a.steps)
        times.append(time.perf_counter() - t0)
    t_np = min(times)

    r_jax, r_np = np.asarray(ref["ratio"]), out_np["ratio"]
    same_div = np.array_equal(np.asarray(ref["diverged"]), out_np["diverged"])
    diff = np.nanmax(np.abs(r_jax - r_np))

    tab = Table(title=f"2-D model, {a.inits:,} initialisations × {a.steps:,} steps, float64 "
                      f"(ε = {a.eps}, η = {a.lr}; best of {a.repeats})")
    for col in ("implementation", "seconds", "trajectory-steps / s", "speed-up vs NumPy"):
        tab.add_column(col, justify="right")
    tab.add_row("eoslab (q2d.simulate: vmap + lax.scan)", f"{t_jax:.3f}", f"{work / t_jax:.3g}", f"{t_np / t_jax:.1f}×")
    tab.add_row("eoslab, first call (incl. compile)", f"{first:.3f}", f"{work / first:.3g}", f"{t_np / first:.1f}×")
    tab.add_row("NumPy vectorised loop", f"{t_np:.3f}", f"{work / t_np:.3g}", "1.0×")
    con = Console()
    con.print(tab)
    con.print(f"same results: max |Δ ratio| = {diff:.1e}, same divergence flags: {same_div}, "
              f"devices: {jax.devices()}")


if __name__ == "__main__":
    main()
