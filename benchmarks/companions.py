"""Benchmark: the companion models' two heavy computations, each against a reference in the same run.

1. Linear-net convergence sweep (what ``eoslab linear-net`` runs): ½(uv − 1)², lrs × inits runs of
   N GD steps with per-step det(I − η∇²L) tracking, one jitted vmap
   (:func:`eoslab.dynamics.convergence.convergence_sweep`). Reference: the same update, det and
   convergence test as a vectorised NumPy loop over steps (closed-form gradient and Hessian).
2. GFS sharpness (the two-layer diagnostics): the closed form from the conserved α² − ‖β‖²,
   vmapped over points, vs integrating the gradient flow to convergence with SciPy's adaptive DOP853.

    python benchmarks/companions.py [--inits 1000] [--lrs 21] [--steps 2000] [--gfs-points 2000]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

import eoslab  # noqa: F401  (float64)
from eoslab.dynamics.convergence import convergence_sweep
from eoslab.models import linear_net, two_layer
from eoslab.theory import two_layer as tl_theory


def numpy_sweep(lrs, u0, v0, steps, grad_tol=1e-6):
    """½(uv − 1)² GD for every (lr, init) in NumPy: converged fraction per lr and min |det|."""
    lr = np.asarray(lrs)[:, None] * np.ones((1, u0.size))
    u, v = np.tile(u0, (lr.shape[0], 1)), np.tile(v0, (lr.shape[0], 1))
    div = np.zeros(u.shape, bool)
    mindet = np.full(u.shape, np.inf)
    with np.errstate(all="ignore"):
        for _ in range(steps):
            r = u * v - 1
            huu, hvv, huv = v * v, u * u, 2 * u * v - 1
            det = (1 - lr * huu) * (1 - lr * hvv) - (lr * huv) ** 2
            mindet = np.where(div, mindet, np.fmin(mindet, np.abs(det)))
            u2, v2 = u - lr * v * r, v - lr * u * r
            div |= ~(np.isfinite(u2) & np.isfinite(v2))
            u, v = np.where(div, u, u2), np.where(div, v, v2)
        r = u * v - 1
        gn = np.hypot(v * r, u * r)
    conv = ~div & (gn <= grad_tol)
    return conv.mean(axis=1), mindet


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inits", type=int, default=1000)
    ap.add_argument("--lrs", type=int, default=21)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--gfs-points", type=int, default=2000)
    ap.add_argument("--ode-points", type=int, default=20)
    a = ap.parse_args()
    console = Console()
    table = Table(title="eoslab companions: JAX (eoslab) vs reference, same run")
    for col in ("computation", "size", "eoslab s", "reference s", "speed-up", "agreement"):
        table.add_column(col)

    # 1. convergence sweep
    problem = linear_net.scalar_problem(2)
    lrs = np.linspace(0.5, 1.5, a.lrs)
    inits = jax.vmap(lambda k: linear_net.init(k, (1, 1, 1), 0.5))(jax.random.split(jax.random.PRNGKey(0), a.inits))
    convergence_sweep(problem, lrs[:2], jax.tree_util.tree_map(lambda x: x[:2], inits), 10)  # warm the imports
    t = time.perf_counter()
    out = convergence_sweep(problem, lrs, inits, a.steps)
    frac = np.asarray(out["converged"]).mean(axis=1)
    t_cold = time.perf_counter() - t
    t = time.perf_counter()
    out = convergence_sweep(problem, lrs, inits, a.steps)
    frac = np.asarray(out["converged"]).mean(axis=1)
    t_jax = time.perf_counter() - t
    u0, v0 = np.asarray(inits[0][:, 0, 0]), np.asarray(inits[1][:, 0, 0])
    t = time.perf_counter()
    frac_np, det_np = numpy_sweep(lrs, u0, v0, a.steps)
    t_np = time.perf_counter() - t
    same = np.array_equal(frac, frac_np)
    # Only converged runs are comparable step by step: beyond the threshold the bounded runs are chaotic
    # (rounding differences between autodiff and the closed form grow), diverged ones stop differently.
    ok = np.asarray(out["converged"])
    det_err = np.max(np.abs(np.asarray(out["min_abs_det"])[ok] - det_np[ok]) / det_np[ok])
    size = f"{a.lrs}×{a.inits} runs × {a.steps} steps"
    table.add_row("linear-net sweep (compiled)", size, f"{t_jax:.2f}", f"{t_np:.2f}", f"{t_np / t_jax:.1f}×",
                  f"fractions equal: {same}; min|det| max rel. diff {det_err:.1e} (converged runs)")
    table.add_row("linear-net sweep (incl. compile)", size, f"{t_cold:.2f}", f"{t_np:.2f}", f"{t_np / t_cold:.1f}×", "")

    # 2. GFS sharpness
    sigma = two_layer.covariance(1.0, 0.1)
    pts = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (a.gfs_points, 3), minval=0.1, maxval=1.5))
    f = jax.jit(jax.vmap(lambda th: tl_theory.gfs_sharpness(th, sigma)))
    f(jnp.asarray(pts)).block_until_ready()
    t = time.perf_counter()
    gfs = np.asarray(f(jnp.asarray(pts)).block_until_ready())
    t_closed = (time.perf_counter() - t) / a.gfs_points
    t = time.perf_counter()
    errs = []
    for th in pts[: a.ode_points]:
        end = tl_theory.gradient_flow(th, sigma, 400.0)
        errs.append(abs(float(two_layer.sharpness(jnp.asarray(end), sigma)) / gfs[len(errs)] - 1))
    t_ode = (time.perf_counter() - t) / a.ode_points
    table.add_row("GFS sharpness per point", f"{a.gfs_points} closed / {a.ode_points} ODE", f"{t_closed:.2e}",
                  f"{t_ode:.2e}", f"{t_ode / t_closed:.0f}×", f"max rel. diff {max(errs):.1e}")
    console.print(table)


if __name__ == "__main__":
    main()
