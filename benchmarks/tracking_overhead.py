"""Benchmark: the wall-time overhead of tracking the spectra at every step of `train`.

For each network (a small tanh MLP 8 → 32 → 32 → 1 on 200 examples, P = 1,377, and the
`benchmarks/sharpness.py` network 32 → 300 → 300 → 1 on 1,000 examples, P = 100,501; float32,
Gaussian inputs and random targets, MSE) `eoslab.dynamics.train.train` runs the same GD
trajectory (through progressive sharpening into the edge of stability) five ways, in one process:

  none     no spectra (the reference: plain full-batch GD in the same jitted scan),
  top-1    the top Hessian eigenvalue at every step,
  top-3    the top-3 Hessian eigenvalues at every step,
  default  Hessian top-2 + NTK top-2 at every step (what `eoslab train` does by default).

and, for each tracking mode, its physical floor (`floor <mode>` rows, :func:`floor_chunks`): the same
jitted training scan (`stepper.make_step`) whose step computes the gradient and the Hessian products
of k carried vectors in one linearisation, as `train` fuses them (default mode: and k NTK products),
the products only normalised and carried, no tracker logic: one product per tracked vector per step.
Its ratio to plain GD is measured in the same bare scan (`none` timed there too), and each mode's
column "× floor" is its ratio to GD over its floor's. The `bound <mode>` rows (:func:`bound`) add to
the floor the products that the tracker's guarantees make unavoidable, at the price of one product
measured in the same run (a jitted chain of products at θ₀, :func:`time_product`): the first call's
Krylov space (``cold_basis`` products, of which the floor already has k) and the guard rows, which
are multiplied at least every ``guard_every`` calls. No tracker with those guarantees can run faster
than that row; the overhead above it is extra products and the tracker's own linear algebra.

Each is compiled once (excluded), then timed ``--repeats`` times from θ₀, in two jitted chunks of
``steps/2``; the table gives the median seconds per step, the ratio to `none` (of the medians over
all steps, of the minimum times, which are steadier on a shared machine, of the median CPU times of
this process, steadier still when other processes compete for the cores, and of the minimum times
of the second chunk alone: the steady state, without the tracker's cold start at step 0, whose ~32
products are a fixed cost that a 100-step run spreads over few steps), the mean operator-vector
products per step (steps ≥ 1, and in the second chunk) and the max relative error of the tracked values against
a float64 reference (scipy ``eigsh``, tol 1e-10, on the float64 operators at the float32 iterates of
the same trajectory, replayed by a plain jitted GD scan whose losses must match `train`'s) at every
``--check-every`` steps.

Usage: python benchmarks/tracking_overhead.py [--steps 100] [--repeats 3] [--sizes small,benchmark]
"""

from __future__ import annotations

import argparse
import inspect
import time

import jax

jax.config.update("jax_enable_x64", True)   # the float64 reference; the networks are float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse.linalg as sla  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import eoslab  # noqa: E402
from eoslab.dynamics.train import train  # noqa: E402
from eoslab.dynamics import optim, stepper  # noqa: E402
from eoslab.spectra import davidson, hvp, ntk_vp  # noqa: E402
from eoslab.spectra.operators import operator, rows  # noqa: E402

MODES = {"none": dict(track=(), k=1), "top-1": dict(track=("hessian",), k=1),
         "top-3": dict(track=("hessian",), k=3), "default": dict(track=("hessian", "ntk"), k=2)}
TARGETS = {"top-1": 3.0, "top-3": 7.0, "default": 8.0}
GUARD_EVERY = inspect.signature(davidson.track).parameters["guard_every"].default
SIZES = {"small": dict(n=200, d=8, width=32, lr=0.5), "benchmark": dict(n=1000, d=32, width=300, lr=0.22)}


def mlp_apply(p, x):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    h = jnp.tanh(h @ p["w2"] + p["b2"])
    return (h @ p["w3"] + p["b3"])[:, 0]


def build(n, d, width, seed=0, dtype=jnp.float32):
    kx, ky, k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 5)
    params = {"w1": jax.random.normal(k1, (d, width), dtype) / d**0.5, "b1": jnp.zeros(width, dtype),
              "w2": jax.random.normal(k2, (width, width), dtype) / width**0.5, "b2": jnp.zeros(width, dtype),
              "w3": jax.random.normal(k3, (width, 1), dtype) / width**0.5, "b3": jnp.zeros(1, dtype)}
    x, y = jax.random.normal(kx, (n, d), dtype), jax.random.normal(ky, (n,), dtype)
    return eoslab.Problem.from_model(mlp_apply, params, x, y)


def as_float64(problem):
    cast = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), t)
    return eoslab.Problem.from_model(mlp_apply, cast(problem.params), cast(problem.data), cast(problem.targets))


def replay(problem, lr, steps):
    """The float32 iterates θ_0 … θ_{steps−1} of plain GD and their losses (one jitted scan)."""
    flat, unravel = ravel_pytree(problem.params)
    vg = jax.value_and_grad(lambda v: problem.loss_fn(unravel(v)))

    def body(v, _):
        loss, g = vg(v)
        return v - jnp.asarray(lr, v.dtype) * g, (v, loss)

    _, (thetas, losses) = jax.jit(lambda v: jax.lax.scan(body, v, None, length=steps))(flat)
    return np.asarray(thetas), np.asarray(losses)


def floor_chunks(problem, lr, half, track, k):
    """The physical floor of a mode: the same training step (``stepper.make_step``, the gradient
    and the Hessian products of k carried vectors from one linearisation, as `train` fuses them;
    for the NTK, k products of the model's linearisation) with no tracker logic: the products
    are only normalised and carried (a power step, so no product can be folded away). ``track=()``:
    plain GD in the same scan. Returns ``(run, state0)``, ``run(state) -> state`` one jitted
    chunk of ``half`` steps."""
    flat, _ = ravel_pytree(problem.params)
    key = jax.random.PRNGKey(1)
    unit = lambda X: X / jnp.linalg.norm(X, axis=1, keepdims=True)
    aux = {}
    if "hessian" in track:
        aux["hessian"] = unit(jax.random.normal(key, (k, flat.size), flat.dtype))
    if "ntk" in track:
        aux["ntk"] = unit(jax.random.normal(key, (k, problem.n), flat.dtype))

    def observe(ctx):
        new = dict(ctx.aux)
        if "hessian" in new:
            new["hessian"] = unit(ctx.hvps)
        if "ntk" in new:
            mv = operator(problem, ctx.params, "ntk")[0]
            new["ntk"] = unit(rows(mv, ctx.aux["ntk"]))
        return new, {}

    tangents = (lambda a: a["hessian"]) if "hessian" in track else None
    opt = optim.gd(jnp.asarray(lr, flat.dtype))             # `train`'s optimizer for plain GD
    step = stepper.make_step(problem.loss_fn, opt, observe=observe if track else None, tangents=tangents,
                             stochastic=False)
    state0 = stepper.init_state(problem.params, opt, aux=aux)
    run = jax.jit(lambda st: stepper.scan(step, st, half, records=False)[0])
    return run, state0


def time_floor(problem, lr, steps, track, k, repeats):
    """Median and min seconds per step of :func:`floor_chunks` (two chunks of steps/2, as `train`)."""
    half = steps // 2
    run, state0 = floor_chunks(problem, lr, half, track, k)
    jax.block_until_ready(run(state0))                   # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(run(state0)))
        times.append(time.perf_counter() - t0)
    return np.median(times) / (2 * half), np.min(times) / (2 * half)


def time_product(problem, op, steps, repeats):
    """Min seconds per product of ``op`` (``"hessian"``, ``"ntk"``) at θ₀ in a jitted chain of
    ``steps`` products v ← Av/‖Av‖ (the operator built as the tracker builds it, once per chain)."""
    dim = operator(problem, problem.params, op)[1]

    @jax.jit
    def chain(params, v):
        mv = operator(problem, params, op)[0]

        def power(v, _):
            w = mv(v)
            return w / jnp.linalg.norm(w), None

        return jax.lax.scan(power, v, None, length=steps)[0]

    v0 = jnp.ones(dim, ravel_pytree(problem.params)[0].dtype) / dim ** 0.5
    jax.block_until_ready(chain(problem.params, v0))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(chain(problem.params, v0))
        times.append(time.perf_counter() - t0)
    return min(times) / steps


def unavoidable(dim, k, steps):
    """``(first, guards)``: the products beyond the floor's k that a tracker of the top k (default
    block k + 1) spends whatever the spectrum over ``steps`` calls: at the first call, its Krylov
    space less the k the floor counts; after it, the guard rows once every ``guard_every`` calls."""
    state = davidson.track_init(dim, k, jax.random.PRNGKey(0), jnp.float32)
    sz = davidson._sizes(state, k, None, None, 100, 8)
    return sz.cold - k, (sz.b - k) * ((steps - 1) // GUARD_EVERY)


def bound(problem, mode, steps, floor_seconds, price):
    """Seconds per step of the ``bound <mode>`` row, the floor plus the unavoidable products
    (:func:`unavoidable`) at ``price[op]`` seconds each, and its products per step over the steps
    after the first (as the table's other rows count them; the first call's go into the time)."""
    kw, n = MODES[mode], problem.n
    dims = {"hessian": ravel_pytree(problem.params)[0].size, "ntk": n}
    extra = {op: unavoidable(dims[op], kw["k"], steps) for op in kw["track"]}
    seconds = floor_seconds + sum(sum(extra[op]) * price[op] for op in extra) / steps
    return seconds, len(kw["track"]) * kw["k"] + sum(g for _, g in extra.values()) / (steps - 1)


_JITTED = {}


def _jitted(op, problem64):
    if (op, id(problem64)) not in _JITTED:
        build = {"hessian": hvp, "ntk": ntk_vp}[op]
        _JITTED[(op, id(problem64))] = jax.jit(lambda p, v: build(problem64, p)[0](v))
    return _JITTED[(op, id(problem64))]


def reference(problem64, theta, op, k):
    """Top-k float64 eigenvalues of ``op`` at the float32 iterate ``theta`` (scipy eigsh)."""
    _, unravel = ravel_pytree(problem64.params)
    build = {"hessian": hvp, "ntk": ntk_vp}[op]
    p = unravel(jnp.asarray(theta, jnp.float64))
    dim = build(problem64, p)[1]
    mv = _jitted(op, problem64)        # the iterate is an argument (no constant folding of θ)
    A = sla.LinearOperator((dim, dim), matvec=lambda v: np.asarray(mv(p, jnp.asarray(v.ravel()))), dtype=np.float64)
    w = sla.eigsh(A, k=k, which="LA", tol=1e-10, return_eigenvectors=False)
    return np.sort(w)[::-1]


def run_size(name, cfg, args, console):
    problem = build(cfg["n"], cfg["d"], cfg["width"])
    P = ravel_pytree(problem.params)[0].size
    lr, steps = cfg["lr"], args.steps
    console.print(f"[bold]{name}[/]: P = {P:,}, n = {cfg['n']}, lr = {lr}, {steps} steps, 2/η = {2 / lr:.3g}")
    rows, half = {}, steps // 2
    for mode, kw in MODES.items():
        train(problem, lr, steps, chunk=half, **kw)                       # compile
        times, second, cpu, traj = [], [], [], None
        for _ in range(args.repeats):
            c0 = time.process_time()
            traj, _ = train(problem, lr, steps, chunk=half, **kw)
            cpu.append(time.process_time() - c0)
            times.append(float(traj.meta["seconds"]))
            second.append(float(traj.meta["seconds"] - traj.meta["first_chunk_seconds"]))
        rows[mode] = (np.median(times) / steps, np.min(times) / steps, traj, kw, np.min(second) / (steps - half),
                      np.median(cpu) / steps)
    floors = {mode: time_floor(problem, lr, steps, kw["track"], kw["k"], args.repeats) for mode, kw in MODES.items()}
    price = {op: time_product(problem, op, steps, args.repeats) for op in ("hessian", "ntk")}
    thetas, losses = replay(problem, lr, steps)
    problem64 = as_float64(problem)
    base, base_min, base_2, base_cpu = rows["none"][0], rows["none"][1], rows["none"][4], rows["none"][5]
    loss_dev = float(np.max(np.abs(rows["top-1"][2]["loss"] - losses) / np.abs(losses)))
    checks = list(range(0, steps, args.check_every))
    refs = {}
    for t in checks:
        refs[("hessian", t)] = reference(problem64, thetas[t], "hessian", 3)
        refs[("ntk", t)] = reference(problem64, thetas[t], "ntk", 2)
    eta_l = [lr * refs[("hessian", t)][0] / 2 for t in checks]
    table = Table(title=f"{name} MLP (P = {P:,}): wall time per step, median of {args.repeats}, compilation excluded")
    for col in ("mode", "s/step (median)", "× GD", "target", "× floor", "× GD (min times)", "× GD (CPU time)",
                "× GD (2nd half, min)", "products/step", "(2nd half)", "max rel. error"):
        table.add_column(col, justify="right")
    out = {}
    floor_gd, floor_gd_min = floors["none"]
    for mode, (sec, sec_min, traj, kw, sec_2, sec_cpu) in rows.items():
        if mode == "none":
            table.add_row(mode, f"{sec:.2e}", "1.00", "", "", "1.00", "1.00", "1.00", "0", "0", "")
            continue
        prods = sum(float(np.mean(traj[f"{op}_products"][1:])) for op in kw["track"])
        prods_2 = sum(float(np.mean(traj[f"{op}_products"][half:])) for op in kw["track"])
        err = max(float(np.max(np.abs(traj[f"{op}_eigs"][t] - refs[(op, t)][:kw["k"]]) / refs[(op, t)][:kw["k"]]))
                  for op in kw["track"] for t in checks)
        ratio = sec / base
        floor = floors[mode][0] / floor_gd             # the floor's own ratio to GD in the same bare scan
        out[mode] = dict(ratio=ratio, ratio_min=sec_min / base_min, ratio_cpu=sec_cpu / base_cpu,
                         ratio_steady=sec_2 / base_2, products=prods, products_steady=prods_2, error=err,
                         floor=floor, floor_min=floors[mode][1] / floor_gd_min, over_floor=ratio / floor,
                         bound=bound(problem, mode, steps, floors[mode][0], price)[0] / floor_gd)
        table.add_row(mode, f"{sec:.2e}", f"{ratio:.2f}", f"≤ {TARGETS[mode]:g}", f"{ratio / floor:.2f}",
                      f"{sec_min / base_min:.2f}", f"{sec_cpu / base_cpu:.2f}", f"{sec_2 / base_2:.2f}", f"{prods:.2f}",
                      f"{prods_2:.2f}", f"{err:.1e}")
    for mode, kw in MODES.items():
        if mode != "none":
            f, f_min = floors[mode][0] / floor_gd, floors[mode][1] / floor_gd_min
            table.add_row(f"floor {mode}", f"{floors[mode][0]:.2e}", f"{f:.2f}", "", "1.00", f"{f_min:.2f}", "", "",
                          f"{len(kw['track']) * kw['k']}", f"{len(kw['track']) * kw['k']}", "")
    for mode in MODES:
        if mode != "none":
            sec, prods = bound(problem, mode, steps, floors[mode][0], price)
            if out[mode]["products"] < prods:
                console.print(f"[red]{mode}: {out[mode]['products']:.2f} products per step, below the bound's "
                              f"{prods:.2f}: its count of unavoidable products is wrong[/]")
            table.add_row(f"bound {mode}", f"{sec:.2e}", f"{sec / floor_gd:.2f}", "", f"{sec / floors[mode][0]:.2f}",
                          "", "", "", f"{prods:.2f}", "", "")
    console.print(table)
    console.print(f"one product at θ₀, in a chain: Hessian {price['hessian'] / floor_gd:.2f}, NTK "
                  f"{price['ntk'] / floor_gd:.2f} GD steps; bound = floor + the first call's Krylov space and a "
                  f"guard product every {GUARD_EVERY} calls at that price")
    console.print(f"ηλ₁/2 at the checked steps: {', '.join(f'{e:.2f}' for e in eta_l)}; "
                  f"replayed GD vs train's losses: max relative difference {loss_dev:.1e}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="GD steps (even: timed in two chunks of steps/2)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-every", type=int, default=10)
    ap.add_argument("--sizes", default="small,benchmark")
    args = ap.parse_args()
    if args.steps < 4 or args.steps % 2:
        ap.error(f"--steps must be an even number ≥ 4 (two chunks of steps/2), got {args.steps}")
    console = Console(width=160)    # the table is wider than a pipe's default 80 columns
    t0 = time.perf_counter()
    for name in args.sizes.split(","):
        run_size(name, SIZES[name], args, console)
    console.print(f"total {time.perf_counter() - t0:.0f} s; device {jax.devices()[0].platform}")


if __name__ == "__main__":
    main()
