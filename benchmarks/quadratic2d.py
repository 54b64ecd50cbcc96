"""Benchmark: batched GD on the 2-D model (Theorem 1), trajectory-steps per second.

eoslab path: :func:`eoslab.dynamics.quadratic2d.simulate` (what ``eoslab run quadratic2d`` and the
phase diagrams run): the exact (z, λ) map on x + iℓ packed in one complex128 array, blocks of runs
(``lax.map``) advanced in segments, with divergence detection and the per-run summaries (tail mean
of ηλ/2, max, first crossing of the edge). Reference: the same update and summaries as a vectorised NumPy loop over
steps, same run. Next to it, the fraction of the machine's float64 peak, measured in the same
process: a 2048³ matmul (XLA's dot, all cores) and a jitted elementwise kernel of 8 independent
chains of 64 ``a·x + b`` over 2²⁰ floats, compiled at XLA's default vector width and at the
sweep's (512 bits); the peak is the best of the three. The sweep's flops are counted analytically: 19 per
trajectory-step for the map (the divergence test, running max, crossing and tail bookkeeping are
not counted). Times are the best of ``--repeats`` in wall-clock seconds and in CPU seconds
of this process (all its threads): on a shared machine the wall-clock ratio moves with the
other processes' load, the CPU-time ratio much less (it compares work done per core-second).

With ``q2d.THREADS = N`` :func:`q2d.simulate` splits its blocks into N groups, each advanced by its
own thread; the row "N threads" (N = the cores) times that and checks the results are bit-identical.

    python benchmarks/quadratic2d.py [--inits 100000] [--steps 1000] [--blocks 2048,16384,65536]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import jax
import numpy as np
from _timing import timed
from rich.console import Console
from rich.table import Table

import eoslab
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


#: Flops of one step of the map (``dynamics.quadratic2d.scaled_step`` as written): f = x + e (1),
#: c1 and c2 (3 each), x' (6), ℓ' (6).
MAP_FLOPS = 19




def float64_peak(repeats):
    """Float64 GFLOP/s measured now, ``{name: (per wall second, per CPU second)}``: a 2048³
    matmul and 8 independent chains of 64 ``a·x + b`` over 2²⁰ floats (one fused loop)."""
    import jax.numpy as jnp

    A = jax.random.normal(jax.random.PRNGKey(1), (2048, 2048), jnp.float64)
    mm = jax.jit(lambda a: a @ a)
    w_mm, c_mm = timed(lambda: jax.block_until_ready(mm(A)), repeats, warmup=True)

    def chains(x):
        ys = [x + i for i in range(8)]
        for _ in range(64):
            ys = [1.0000001 * y + 1e-7 for y in ys]
        return sum(ys)

    x = jax.random.normal(jax.random.PRNGKey(2), (1 << 20,), jnp.float64)
    f_mm, f_ew = 2.0 * 2048**3 / 1e9, 2.0 * 8 * 64 * x.size / 1e9
    out = {"matmul 2048³": (f_mm / w_mm, f_mm / c_mm)}
    # The chains at XLA:CPU's default vector width and at the sweep's own (AVX-512 where present).
    for name, opts in (("FMA chains", {}), ("FMA chains, 512-bit", q2d._XLA_OPTIONS)):
        ew = jax.jit(chains, compiler_options=opts)
        w_ew, c_ew = timed(lambda: jax.block_until_ready(ew(x)), repeats, warmup=True)
        out[name] = (f_ew / w_ew, f_ew / c_ew)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inits", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--blocks", default="", help="also time these runs-per-block sizes, e.g. 2048,16384,65536")
    a = ap.parse_args()
    with eoslab.x64():
        run_benchmark(a)


def _digest(summary) -> str:
    """A hash of every summary array (bit-identical results have the same digest)."""
    h = hashlib.sha256()
    for k in sorted(summary):
        h.update(np.asarray(summary[k]).tobytes())
    return h.hexdigest()


def run_benchmark(a):
    theta0 = sample_inits(jax.random.PRNGKey(0), a.inits, a.eps, a.lr)
    work = a.inits * a.steps

    def run_eoslab():
        return jax.block_until_ready(q2d.simulate(a.eps, a.lr, theta0, a.steps, chunk=a.steps))

    t0 = time.perf_counter()
    ref = run_eoslab()  # includes compilation
    first = time.perf_counter() - t0
    rows = [(f"eoslab (q2d.simulate, blocks of ≤ {q2d.BLOCK:,} runs)", *timed(run_eoslab, a.repeats, warmup=True))]
    default_block = q2d.BLOCK
    for b in [int(s) for s in a.blocks.split(",") if s.strip()]:
        q2d.BLOCK = b
        rows.append((f"  same, blocks of ≤ {b:,} runs", *timed(run_eoslab, a.repeats, warmup=True)))
    q2d.BLOCK = default_block
    threads, q2d.THREADS = q2d.THREADS, len(os.sched_getaffinity(0))
    rows.append((f"  same, THREADS = {q2d._workers()} (one thread per core)", *timed(run_eoslab, a.repeats, warmup=True)))
    same_threads = _digest(run_eoslab()) == _digest(ref)
    n_threads, q2d.THREADS = q2d._workers(), threads
    th_np = np.asarray(theta0)
    out_np = numpy_simulate(a.eps, a.lr, th_np, a.steps)
    w_np, c_np = timed(lambda: numpy_simulate(a.eps, a.lr, th_np, a.steps), a.repeats, warmup=True)
    peaks = float64_peak(a.repeats)
    peak_w = max(w for w, _ in peaks.values())
    peak_c = max(c for _, c in peaks.values())

    r_jax, r_np = np.asarray(ref["ratio"]), out_np["ratio"]
    same_div = np.array_equal(np.asarray(ref["diverged"]), out_np["diverged"])
    diff = np.nanmax(np.abs(r_jax - r_np))
    gf = lambda s: MAP_FLOPS * work / s / 1e9

    tab = Table(title=f"2-D model, {a.inits:,} initialisations × {a.steps:,} steps, float64 "
                      f"(ε = {a.eps}, η = {a.lr}; best of {a.repeats})")
    for col in ("implementation", "wall s", "trajectory-steps / s", "vs NumPy (wall)", "CPU s", "vs NumPy (CPU)",
                "GFLOP/s of the map", "of float64 peak (wall)", "of peak per CPU-s"):
        tab.add_column(col, justify="right")
    for name, w, c in rows:
        tab.add_row(name, f"{w:.3f}", f"{work / w:.3g}", f"{w_np / w:.1f}×", f"{c:.3f}", f"{c_np / c:.1f}×",
                    f"{gf(w):.2f}", f"{gf(w) / peak_w:.1%}", f"{gf(c) / peak_c:.1%}")
    tab.add_row("eoslab, first call (incl. compile)", f"{first:.3f}", f"{work / first:.3g}", f"{w_np / first:.1f}×",
                "", "", "", "", "")
    tab.add_row("NumPy vectorised loop", f"{w_np:.3f}", f"{work / w_np:.3g}", "1.0×", f"{c_np:.3f}", "1.0×",
                f"{gf(w_np):.2f}", f"{gf(w_np) / peak_w:.1%}", f"{gf(c_np) / peak_c:.1%}")
    con = Console(width=200)
    con.print(tab)
    con.print("float64 peak measured now (GFLOP/s per wall second, per CPU second): "
              + ", ".join(f"{k} {w:.1f}, {c:.1f}" for k, (w, c) in peaks.items())
              + f"; the map is {MAP_FLOPS} flops per trajectory-step")
    con.print(f"{n_threads} threads give bit-identical summaries: {same_threads}")
    con.print(f"same results: max |Δ ratio| = {diff:.1e}, same divergence flags: {same_div}, "
              f"devices: {jax.devices()}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
