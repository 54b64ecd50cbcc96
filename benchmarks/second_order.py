"""Benchmark: output-space GD of a random second-order model, single run vs batched sweeps.

D = P = 256, float64, 200 steps. The cost of a step is the curvature contraction
Q(g, ·), 2·D·P²·B flops for B runs; the batched stepper does it as ONE (D·P, P) × (P, B)
matmul, so its rate is compared with the machine's own float64 matmul rate measured here
(the same-shape matmul and a square 2048³ one).

Rows:
  * pure dynamics (no spectra): parameter space ``gd`` (reference), output space ``gd_output``,
    ``jax.vmap(gd_output)`` over B step sizes, and the dedicated ``batched_gd_output``;
  * with spectra: ``gd_output(spectra="dense")`` (Hessian P×P + NTK eigvalsh every step) and
    ``batched_gd_output(ntk="lanczos")`` (16 warm-started Lanczos products per step and run).

Run: ``.venv/bin/python benchmarks/second_order.py [--steps 200] [--size 256] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from rich.console import Console
from rich.table import Table

import eoslab  # noqa: F401  (float64)
from eoslab.dynamics import gd, gd_output
from eoslab.dynamics.highdim import batched_gd_output, natural_scales
from eoslab.models import second_order


def best_time(fn, repeat: int) -> float:
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    D = P = args.size
    steps, rep = args.steps, args.repeat
    sj, sq = natural_scales(D, P)
    m = second_order.random(jax.random.PRNGKey(0), D, P, 1.0, sj, sq)
    step_flops = 2.0 * D * P * P + 8.0 * D * P  # per run and step: Q(g,·) + the O(D·P) products

    # The machine's float64 matmul rate, measured now (same shape as the batched contraction,
    # and a large square one).
    k = jax.random.PRNGKey(1)
    Qmat = m.Q.reshape(D * P, P)
    G64 = jax.random.normal(k, (P, 64))
    A = jax.random.normal(k, (2048, 2048))
    mm_shape = jax.jit(lambda a, b: a @ b)
    t_shape = best_time(lambda: mm_shape(Qmat, G64), rep + 2)
    t_sq = best_time(lambda: mm_shape(A, A), rep)
    rate_shape = 2.0 * D * P * P * 64 / t_shape / 1e9
    rate_sq = 2.0 * 2048**3 / t_sq / 1e9
    peak = max(rate_shape, rate_sq)

    rows = []

    def add(name, kind, B, fn, useful=True):
        t = best_time(fn, rep)
        per_step = t / steps
        gf = B * step_flops / per_step / 1e9 if useful else float("nan")
        rows.append((name, kind, B, per_step * 1e3, per_step * 1e3 / B, gf, gf / peak))

    lr = 0.5
    # The model is always a jit ARGUMENT (closing over it would make Q a compile-time constant).
    gd_j = jax.jit(lambda m, lr: gd(second_order.problem(m), lr, steps, spectra="none")[0]["loss"])
    add("gd (parameter space)", "dynamics", 1, lambda: gd_j(m, lr))
    out_j = jax.jit(lambda m, lr: gd_output(m, lr, steps, spectra="none")[0]["loss"])
    add("gd_output", "dynamics", 1, lambda: out_j(m, lr))
    add("batched_gd_output", "dynamics", 1,
        lambda: batched_gd_output(m, jnp.array([lr]), steps, ntk="none")[0]["loss"])
    for B in (16, 64):
        lrs = jnp.linspace(0.2, 1.0, B)
        vm = jax.jit(jax.vmap(lambda m, lr: gd_output(m, lr, steps, spectra="none")[0]["loss"], in_axes=(None, 0)))
        add("vmap(gd_output)", "dynamics", B, lambda lrs=lrs: vm(m, lrs))
        add("batched_gd_output", "dynamics", B, lambda lrs=lrs: batched_gd_output(m, lrs, steps, ntk="none")[0]["loss"])
    lrs = jnp.linspace(0.2, 1.0, 16)
    add("gd_output spectra=dense", "+spectra", 1,
        lambda: gd_output(m, lr, steps, spectra="dense")[0]["loss"], useful=False)
    add("batched_gd_output ntk=lanczos", "+spectra", 16,
        lambda: batched_gd_output(m, lrs, steps, ntk="lanczos")[0]["loss"], useful=False)

    t = Table(title=f"Output-space GD, D = P = {D}, float64, {steps} steps "
                    f"(float64 matmul: {rate_shape:.1f} GFLOP/s at ({D * P}×{P})·({P}×64), "
                    f"{rate_sq:.1f} GFLOP/s at 2048³; peak used = {peak:.1f})")
    for c in ("implementation", "what", "B", "ms / step", "ms / step / run", "GFLOP/s (Q contraction)",
              "fraction of matmul peak"):
        t.add_column(c, justify="right")
    ref = rows[0][4]
    for name, kind, B, ms, msr, gf, frac in rows:
        t.add_row(name, kind, str(B), f"{ms:.3f}", f"{msr:.3f} ({ref / msr:.1f}× vs gd)",
                  "-" if gf != gf else f"{gf:.2f}", "-" if frac != frac else f"{100 * frac:.0f}%")
    Console(width=170).print(t)
    Console(width=170).print("GFLOP/s counts the useful work of the pure dynamics, B·(2DP² + 8DP) per step; "
                    "'+spectra' rows add per-step eigenvalue work, so no rate is given for them.")


if __name__ == "__main__":
    main()
