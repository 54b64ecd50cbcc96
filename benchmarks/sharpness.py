"""Benchmark: the cost of tracking the top-1 and top-3 Hessian eigenvalues at every GD step.

An MLP (32 → 300 → 300 → 1, tanh, ≈100k parameters, float32) is trained with full-batch GD
on 1,000 synthetic examples (Gaussian inputs, Gaussian random targets, MSE) at a step size
for which progressive sharpening brings the sharpness to 2/η within the run. At every step
the top-k (k = 1, 3) Hessian eigenvalues are computed to 1e-3 relative error by:

  (a) cold ARPACK Lanczos: scipy.sparse.linalg.eigsh on the jitted HVP (LinearOperator,
      random start, which='LA'), as Cohen et al.'s code does;
  (b) cold power iteration stopped at 1e-3 relative change of the Rayleigh quotient
      (PyHessian's rule; deflated for k = 3);
  (c) jax.experimental.sparse.linalg.lobpcg_standard warm-started from the previous step's
      vectors (products counted as k·(1 + 4·iterations): one block product for the start
      and 4k per iteration, checked once against a counting matvec), at the relative
      residuals ``--lobpcg-rho`` (default 1e-2 and 5e-3);
  (d) eoslab.spectra.track, warm-started (products counted by the tracker itself), at the
      tolerances ``--tols`` (default 1e-3, the library default, then 1.5e-3 and 3e-3).

"Equal accuracy" is decided on the measured errors: the last line compares, for each k, the
cheapest LOBPCG setting and the cheapest eoslab setting whose max error is ≤ ``--tol``
(use ``--check-every 1`` so that every step counts).

The cold methods (a), (b) do not depend on the previous step, so they are run (and timed)
every ``--check-every`` steps only; the warm methods (c), (d) run at every step. At the same
steps a float64 reference (eigsh, tol 1e-10, on the float64 HVP) gives each method's
achieved relative error. Also measured: the cost of one jitted HVP (forward-over-reverse)
relative to one jitted gradient.

Usage: python benchmarks/sharpness.py [--steps 60] [--check-every 10] [--lr 0.22]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg as sla
from jax.experimental.sparse.linalg import lobpcg_standard
from jax.flatten_util import ravel_pytree
from rich.console import Console
from rich.table import Table

import eoslab
from eoslab.spectra import hvp, track, track_init

KS = (1, 3)


# ---- the network and its data -------------------------------------------------------------
def mlp_apply(p, x):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    h = jnp.tanh(h @ p["w2"] + p["b2"])
    return (h @ p["w3"] + p["b3"])[:, 0]


def mlp_init(key, d, width, dtype):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"w1": jax.random.normal(k1, (d, width), dtype) / d**0.5, "b1": jnp.zeros(width, dtype),
            "w2": jax.random.normal(k2, (width, width), dtype) / width**0.5, "b2": jnp.zeros(width, dtype),
            "w3": jax.random.normal(k3, (width, 1), dtype) / width**0.5, "b3": jnp.zeros(1, dtype)}


def build(n, d, width, seed, dtype=jnp.float32):
    kx, ky, kp = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(kx, (n, d), dtype)
    y = jax.random.normal(ky, (n,), dtype)
    return eoslab.Problem.from_model(mlp_apply, mlp_init(kp, d, width, dtype), x, y)


def as_float64(problem):
    cast = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), t)
    return eoslab.Problem.from_model(mlp_apply, cast(problem.params), cast(problem.data),
                                     cast(problem.targets))


# ---- the four methods ---------------------------------------------------------------------
def make_methods(problem, unravel, power_tol, power_max):
    n = ravel_pytree(problem.params)[0].size
    mv_at = lambda flat: hvp(problem, unravel(flat))[0]
    block_mv = lambda flat: jax.vmap(mv_at(flat), in_axes=1, out_axes=1)

    hvp_jit = jax.jit(lambda flat, v: mv_at(flat)(v))

    @jax.jit
    def ours(flat, state, tol):
        state, r = track(mv_at(flat), state, tol=tol)
        return state, r.values, r.n_products, r.entered

    @functools.partial(jax.jit, static_argnums=2)
    def lobpcg(flat, X, lobpcg_rho):
        # lobpcg_standard's rule: ‖r_i‖ < tol·10·n·(‖A x_i‖ + θ_i) ≈ tol·20·n·θ_i; this tol
        # asks for a relative residual ‖r‖/θ below lobpcg_rho.
        theta, X, iters = lobpcg_standard(block_mv(flat), X, m=200, tol=lobpcg_rho / (20.0 * n))
        return theta, X, iters

    def power(flat, k, key):
        """PyHessian's power iteration with deflation: stop at relative change < power_tol."""
        mv = mv_at(flat)

        def one(found, key):
            def body(c):
                v, lam, _, it = c
                v = v - found.T @ (found @ v)
                hv = mv(v)
                new = v @ hv
                return hv / jnp.linalg.norm(hv), new, lam, it + 1

            def cond(c):
                _, lam, old, it = c
                return (it < 1) | ((jnp.abs(lam - old) / (jnp.abs(old) + 1e-6) >= power_tol) & (it < power_max))

            v0 = jax.random.normal(key, (n,), found.dtype)
            v0 = v0 / jnp.linalg.norm(v0)
            v, lam, _, it = jax.lax.while_loop(cond, body, (v0, jnp.zeros((), found.dtype),
                                                            jnp.zeros((), found.dtype), 0))
            return v, lam, it

        found = jnp.zeros((k, n), jnp.float32)
        lams, its = [], 0
        for i in range(k):
            v, lam, it = one(found, jax.random.fold_in(key, i))
            found = found.at[i].set(v)
            lams.append(lam)
            its = its + it
        return jnp.stack(lams), its

    power_jit = jax.jit(power, static_argnums=1)
    return hvp_jit, ours, lobpcg, power_jit


def eigsh_cold(hvp_jit, flat, k, tol, rng, dtype=np.float32):
    n = flat.size
    count = [0]

    def mv(v):
        count[0] += 1
        return np.asarray(hvp_jit(flat, jnp.asarray(v, dtype)), dtype=np.float64)

    op = sla.LinearOperator((n, n), matvec=mv, dtype=np.float64)
    vals = sla.eigsh(op, k=k, which="LA", tol=tol, v0=rng.standard_normal(n),
                     return_eigenvectors=False)
    return np.sort(vals)[::-1], count[0]


def timed(f, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(f(*args))
    return out, time.perf_counter() - t


def hvp_vs_grad(problem, flat, unravel, repeats=30):
    """Median and minimum over interleaved repeats of t(HVP) / t(gradient), both jitted."""
    grad = jax.jit(jax.grad(lambda f: problem.loss_fn(unravel(f))))
    h = jax.jit(lambda f, v: hvp(problem, unravel(f))[0](v))
    v = jnp.ones_like(flat)
    jax.block_until_ready((grad(flat), h(flat, v)))
    tg, th = [], []
    for _ in range(repeats):
        tg.append(timed(grad, flat)[1])
        th.append(timed(h, flat, v)[1])
    tg, th = np.array(tg), np.array(th)
    return np.median(th) / np.median(tg), th.min() / tg.min(), np.median(tg), np.median(th)


# ---- the run --------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--check-every", type=int, default=10, help="cold methods and reference every s steps")
    ap.add_argument("--lr", type=float, default=0.22)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--width", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-3, help="target relative accuracy")
    ap.add_argument("--eigsh-tol", type=float, default=1e-2, help="ARPACK tol (its residual rule)")
    ap.add_argument("--lobpcg-rho", default="1e-2,5e-3", help="LOBPCG relative residuals (comma list)")
    ap.add_argument("--power-max", type=int, default=100)
    ap.add_argument("--tols", default="1e-3,1.5e-3,3e-3", help="eoslab tracker tolerances (comma list)")
    ap.add_argument("--guard", type=int, default=1, help="eoslab tracker guard vectors (block = k + guard)")
    args = ap.parse_args(argv)
    console = Console(width=150)

    problem = build(args.n, args.dim, args.width, args.seed)
    flat, unravel = ravel_pytree(problem.params)
    P = flat.size
    ref_problem = as_float64(problem)
    flat64, unravel64 = ravel_pytree(ref_problem.params)
    ref_hvp = jax.jit(lambda f, v: hvp(ref_problem, unravel64(f))[0](v))
    loss_grad = jax.jit(jax.value_and_grad(lambda f: problem.loss_fn(unravel(f))))
    hvp_jit, ours, lobpcg, power = make_methods(problem, unravel, args.tol, args.power_max)
    rhos = [float(r) for r in args.lobpcg_rho.split(",")]
    lob_names = {f"LOBPCG (ρ {r:g})": r for r in rhos}
    console.print(f"MLP {args.dim}→{args.width}→{args.width}→1 tanh, P = {P:,} parameters (float32), "
                  f"n = {args.n}, lr = {args.lr}, {args.steps} steps; device: {jax.devices()[0].device_kind}")

    ratio_med, ratio_min, tg, th = hvp_vs_grad(problem, flat, unravel)
    rng = np.random.default_rng(args.seed)
    key = jax.random.PRNGKey(args.seed + 1)
    tracker_tols = {f"eoslab (tol {float(t):g})": float(t) for t in args.tols.split(",")}
    first = next(iter(tracker_tols))
    states = {(m, k): track_init(P, k, jax.random.fold_in(key, k), jnp.float32, block=k + args.guard)
              for m in tracker_tols for k in KS}
    X0 = {k: jax.random.normal(jax.random.fold_in(key, 10 + k), (P, k), jnp.float32) for k in KS}
    lob_X = {(m, k): X0[k] for m in lob_names for k in KS}

    # Compile everything once, outside the timings.
    for k in KS:
        jax.block_until_ready(ours(flat, states[first, k], args.tol))
        for r in rhos:
            jax.block_until_ready(lobpcg(flat, X0[k], r))
        jax.block_until_ready(power(flat, k, key))
    jax.block_until_ready(ref_hvp(flat64, flat64))

    names = ["eigsh (cold)", "power (cold)", *lob_names, *tracker_tols]
    base = next(iter(lob_names))
    prods = {(m, k): [] for m in names for k in KS}
    secs = {(m, k): [] for m in names for k in KS}
    errs = {(m, k): [] for m in names for k in KS}
    sharp, entered, t_run = [], {k: 0 for k in KS}, time.perf_counter()
    for t in range(args.steps):
        vals = {}
        for k in KS:
            for m, tol in tracker_tols.items():
                (states[m, k], v, npr, ent), dt = timed(ours, flat, states[m, k], tol)
                vals[m, k] = np.asarray(v)
                prods[m, k].append(int(npr)), secs[m, k].append(dt)
                entered[k] += int(bool(ent)) if m == first else 0
            for m, r in lob_names.items():
                (theta, lob_X[m, k], it), dt = timed(lobpcg, flat, lob_X[m, k], r)
                vals[m, k] = np.asarray(theta)
                prods[m, k].append(k * (1 + 4 * int(it))), secs[m, k].append(dt)
        sharp.append(float(vals[first, 1][0]))
        if t % args.check_every == 0:
            ref, _ = eigsh_cold(ref_hvp, flat.astype(jnp.float64), 4, 1e-10, rng, np.float64)
            for k in KS:
                t0 = time.perf_counter()
                v, npr = eigsh_cold(hvp_jit, flat, k, args.eigsh_tol, rng)
                secs["eigsh (cold)", k].append(time.perf_counter() - t0)
                vals["eigsh (cold)", k] = v
                prods["eigsh (cold)", k].append(npr)
                (v, npr), dt = timed(power, flat, k, jax.random.fold_in(key, 100 + t))
                vals["power (cold)", k] = np.asarray(v)
                prods["power (cold)", k].append(int(npr)), secs["power (cold)", k].append(dt)
                for m in names:
                    errs[m, k].append(float(np.max(np.abs(vals[m, k] - ref[:k]) / np.abs(ref[:k]))))
            console.print(f"step {t:4d}: ηλ₁/2 = {args.lr * ref[0] / 2:.3f}, top-4 = {np.round(ref, 4)}")
        _, g = loss_grad(flat)
        flat = flat - args.lr * g
    t_run = time.perf_counter() - t_run

    table = Table(title=f"Tracking top-k Hessian eigenvalues to {args.tol:g} relative error, P = {P:,}")
    for col in ("method", "k", "HVPs/step (mean)", "max", "seconds/step", "max rel. error",
                f"HVPs vs {base}", "HVPs vs eigsh", f"time vs {base}"):
        table.add_column(col, justify="right")
    for k in KS:
        base_l = np.mean(prods[base, k][1:])
        base_e = np.mean(prods["eigsh (cold)", k])
        base_t = np.mean(secs[base, k][1:])
        for m in names:
            warm = m not in ("eigsh (cold)", "power (cold)")
            p = np.array(prods[m, k][1:] if warm else prods[m, k])
            s = np.array(secs[m, k][1:] if warm else secs[m, k])
            table.add_row(m, str(k), f"{p.mean():.2f}", str(p.max()), f"{s.mean():.3f}",
                          f"{max(errs[m, k]):.1e}", f"{p.mean() / base_l:.2f}", f"{p.mean() / base_e:.2f}",
                          f"{s.mean() / base_t:.2f}")
    console.print(table)
    console.print("Warm methods: mean over steps 1…N−1 (step 0 is a cold start: "
                  + ", ".join(f"k={k}: {first} {prods[first, k][0]}, {base} {prods[base, k][0]}"
                              for k in KS) + " HVPs). Cold methods: mean over the checked steps.")
    console.print(f"Errors: max over {len(errs[names[0], 1])} checked steps of max_i |θ_i − λ_i|/|λ_i| "
                  "against float64 eigsh (tol 1e-10).")
    for k in KS:   # equal accuracy: the cheapest setting of each warm method within --tol
        ok = lambda group: [(np.mean(prods[m, k][1:]), m) for m in group if max(errs[m, k]) <= args.tol]
        lo, us = min(ok(lob_names), default=None), min(ok(tracker_tols), default=None)
        if lo and us:
            console.print(f"Equal accuracy (max error ≤ {args.tol:g}), k={k}: {us[1]} {us[0]:.2f} HVPs/step vs "
                          f"{lo[1]} {lo[0]:.2f}: ratio {us[0] / lo[0]:.2f}")
        else:
            console.print(f"Equal accuracy, k={k}: no LOBPCG or no eoslab setting reached {args.tol:g}")
    eos = np.nonzero(args.lr * np.array(sharp) / 2 >= 1)[0]
    console.print(f"Sharpness (top Ritz value): {sharp[0]:.3f} → max {max(sharp):.3f} (2/η = {2 / args.lr:.3f}); "
                  f"first step with ηλ/2 ≥ 1: {int(eos[0]) if eos.size else 'none'}; "
                  f"'entered' events: k=1: {entered[1]}, k=3: {entered[3]}")
    console.print(f"One HVP = {ratio_med:.2f} gradients (median time; {ratio_min:.2f} by minimum time; "
                  f"grad {tg * 1e3:.1f} ms, HVP {th * 1e3:.1f} ms). Run time {t_run:.0f} s.")


if __name__ == "__main__":
    main()
