"""Benchmark: B trainings in one compiled call (:func:`eoslab.dynamics.batched.train_batch`)
against B sequential :func:`eoslab.dynamics.train.train` runs in the same process.

Members differ by their step size (η spread over [0.02, 0.1]) and share θ₀ and the data, the
setting of a step-size sweep. Every run tracks the top-2 Hessian eigenvalues at every step
(``--track-every``; 0: no spectra). Both sides are timed after a first call has compiled them,
so the table gives steady-state member-steps per second; compile times are printed apart. Each
side is the best of ``--repeats`` runs, by wall time and by the process's CPU time (on a shared
machine the wall time also counts the time other processes hold the cores; the CPU time does not),
the sides' runs taken in turn (round-robin), so that each side gets the same chances at a free core.

Networks: the small MLP of the sweeps (2 hidden tanh layers of width 32, n = 256 synthetic
examples of dimension 16) and the MLP of ``benchmarks/sharpness.py`` (32 → 300 → 300 → 1,
n = 1,000; ``--big``), both float32.

    python benchmarks/batched_train.py [--sizes 1,8,32] [--steps 100] [--track-every 1] [--repeats 3] [--big]
        [--threads 1,2]
    python benchmarks/batched_train.py --ops [--sizes 8] [--big]
    python benchmarks/batched_train.py --chunks [--sizes 8] [--big]

``--ops`` times the operations a tracked step is made of (a gradient, a Hessian-vector product,
the gradient with the 2 products a tracked step computes in the same pass, the tracker's small
``eigh`` and QR), B of them vmapped against B times one, each in one jitted loop: whether
vectorising members can pay at all on this machine. ``--chunks`` times one warm compiled chunk
per member-step (the trackers past their cold start, no Python around it): B sequential ``train``
chunks, one ``train_batch`` chunk per mode, and the batched step without its tracker (the
gradient, and the gradient with its 2 fused products): a tracked step cannot cost less than the
last column, which bounds any speed-up by vectorising on a CPU.

``--threads`` (default: 1 and the cores this process may use): ``train_batch``'s ``threads``, how
many of its parts of members (one per core) run at the same time; a sequential ``train`` of this
MLP keeps about one core busy, so the other cores are what threads can add by wall time.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from _timing import timed
from rich.console import Console
from rich.table import Table

from eoslab import Problem
from eoslab.data import synthetic
from eoslab.dynamics.batched import train_batch
from eoslab.dynamics.train import train
from eoslab.models.mlp import MLP


def problem(n, d, width):
    ds = synthetic(n, d, seed=0)
    net = MLP(2, width, "tanh", 1)
    return Problem.from_model(net, net.init(jax.random.PRNGKey(0), d, jnp.float32), jnp.asarray(ds.x),
                              jnp.asarray(ds.y))




def ops_table(p, sizes, console, repeats, loops=200):
    """CPU µs per member of each operation: B members vmapped against B × the single call, each in
    one jitted loop whose operands move at every iteration (nothing is hoisted out of it)."""
    from jax.flatten_util import ravel_pytree

    from eoslab.dynamics.stepper import _value_grad_hvps

    flat, unravel = ravel_pytree(p.params)
    n, M = flat.size, 11  # the tracker's basis capacity for k = 2
    lf = lambda w: p.loss_fn(unravel(w))

    def per_call(f, *a):
        looped = jax.jit(lambda c, *rest: jax.lax.fori_loop(0, loops, lambda i, c: f(c, *rest), c))
        jax.block_until_ready(looped(*a))
        return timed(lambda: jax.block_until_ready(looped(*a)), repeats)[1] / loops * 1e6

    def hv(w, v):  # the parameters move, as in training: the primal pass is not loop-invariant
        return w + 1e-6 * jax.jvp(jax.grad(lf), (w,), (v,))[1]

    def grad(w):
        return w - 1e-3 * jax.grad(lf)(w)

    def fused(w, V):  # a tracked step's gradient and its 2 tracked products in one pass
        _, g, h = _value_grad_hvps(p.loss_fn, unravel(w), V)
        return w - 1e-3 * ravel_pytree(g)[0] + 1e-6 * h.sum(0)

    key = jax.random.PRNGKey(0)
    sym = lambda a: a + jnp.swapaxes(a, -1, -2)
    stack = lambda x, B: jnp.stack([x] * B)
    cases = {"gradient": (grad, lambda B: (stack(flat, B),)),
             "Hessian-vector product": (hv, lambda B: (stack(flat, B), jax.random.normal(key, (B, n), flat.dtype))),
             "gradient + 2 products (one pass)": (fused, lambda B: (stack(flat, B),
                                                                     jax.random.normal(key, (B, 2, n), flat.dtype))),
             f"eigh {M}×{M}": (lambda a: a + 1e-6 * jnp.linalg.eigh(a)[1],
                               lambda B: (sym(jax.random.normal(key, (B, M, M), flat.dtype)),)),
             f"QR {n}×3": (lambda x: x + 1e-6 * jnp.linalg.qr(x)[0],
                           lambda B: (jax.random.normal(key, (B, n, 3), flat.dtype),))}
    t = Table(title="CPU µs per call: B members vmapped vs B × one member (ratio > 1: vectorising pays)")
    for col in ("operation", "B", "one member", "B × one", "vmapped", "ratio"):
        t.add_column(col, justify="right")
    for name, (f, args) in cases.items():
        for B in sizes:
            a = args(B)
            one = per_call(f, *(x[0] for x in a))
            vm = per_call(jax.vmap(f), *a)
            t.add_row(name, str(B), f"{one:.3g}", f"{B * one:.3g}", f"{vm:.3g}", f"{B * one / vm:.2f}×")
    console.print(t)
    console.print("A vmapped operation is large enough for XLA to split over the CPU's threads, which costs CPU "
                  "time that a busy machine does not give back as wall time: `taskset -c 0` compares one core.")


def chunk_table(p, sizes, modes, console, repeats, length=50):
    """CPU µs per member-step of one warm compiled chunk (trackers past their cold start): B
    sequential ``train`` chunks against one ``train_batch`` chunk per mode, and the same step
    without spectra (its gradient only, and with the 2 products a tracked step fuses with it):
    the floor that vectorising cannot go below on a CPU."""
    from jax.flatten_util import ravel_pytree

    from eoslab.dynamics import optim
    from eoslab.dynamics.batched import _batch_chunk, _group
    from eoslab.dynamics.stepper import make_step, init_state, masked, scan
    from eoslab.dynamics.train import _chunk, initial_state

    dtype = ravel_pytree(p.params)[0].dtype
    tol, total = jnp.asarray(1e-3, dtype), jnp.asarray(10 ** 9)
    one = dict(length=length, every=1, nonlinear=False, project=False, max_products=None, batch_size=None,
               n_mc=32, density=None)
    t = Table(title=f"CPU µs per member-step, one warm {length}-step chunk (lower is better; speed-up vs sequential)")
    for col in ("B", "sequential train", *(f"train_batch ({m})" for m in modes), "no spectra: gradient",
                "gradient + 2 products"):
        t.add_column(col, justify="right")
    for B in sizes:
        opts = [optim.gd(jnp.asarray(a, dtype)) for a in np.linspace(0.02, 0.1, B)]
        starts = [initial_state(p, o, k=2, track=("hessian",), seed=0) for o in opts]
        seq = [_chunk(p, None, tol, s, total, o, **one)[0] for s, o in zip(starts, opts)]
        cost = lambda f: timed(lambda: jax.block_until_ready(f()), repeats, warmup=True)[1] / (B * length) * 1e6
        ref = cost(lambda: [_chunk(p, None, tol, s, total, o, **one) for s, o in zip(seq, opts)])
        row = [str(B), f"{ref:.3g}"]
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *starts)
        for m in modes:
            kw = dict(length=length, every=1, max_products=None, p_axis=None, spectra=m, batch_size=None, n_mc=32,
                      group=_group(B))
            warm = _batch_chunk(p, tol, stacked, total, opts[0], **kw)[0]
            c = cost(lambda: _batch_chunk(p, tol, warm, total, opts[0], **kw))
            row.append(f"{c:.3g} ({ref / c:.2f}×)")
        V = jnp.stack([s.aux["hessian"].vectors[:2] for s in seq])
        for tangents in (None, lambda aux: aux):
            step = masked(make_step(p.loss_fn, opts[0], tangents=tangents, stochastic=False,
                                    observe=lambda c: (c.aux, {} if c.hvps is None else {"h": c.hvps.sum(1)})))
            states = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[
                init_state(p.params, o, aux=V[i]) for i, o in enumerate(opts)])
            run = jax.jit(lambda s: jax.lax.scan(lambda c, _: jax.vmap(step)(c), s, None, length=length))
            c = cost(lambda: run(states))
            row.append(f"{c:.3g} ({ref / c:.2f}×)")
        t.add_row(*row)
    console.print(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,8,32", help="batch sizes B")
    ap.add_argument("--steps", type=int, default=100, help="steps per member")
    ap.add_argument("--track-every", type=int, default=1, help="spectra every this many steps (0: none)")
    ap.add_argument("--modes", default="map,vmap", help="spectra modes of train_batch")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best one kept)")
    ap.add_argument("--ops", action="store_true", help="time the step's operations vmapped vs one by one")
    ap.add_argument("--chunks", action="store_true",
                    help="CPU time of one warm chunk per member-step: sequential, batched, and the no-spectra floor")
    ap.add_argument("--big", action="store_true", help="the 100k-parameter MLP of benchmarks/sharpness.py")
    ap.add_argument("--threads", default=None, help="train_batch threads= values (default: 1,<cores>)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = sorted({1, cores}) if args.threads is None else [int(s) for s in args.threads.split(",")]
    modes = [(m, th) for m in args.modes.split(",") for th in threads]
    n, d, width = (1000, 32, 300) if args.big else (256, 16, 32)
    p = problem(n, d, width)
    track = ("hessian",) if args.track_every else ()
    every = max(args.track_every, 1)
    chunk = min(50, args.steps)
    kw = dict(k=2, track=track, track_every=every, chunk=chunk)
    console = Console(width=150)
    if args.ops or args.chunks:
        modes = sorted({m for m, _ in modes}, key=args.modes.split(",").index)
    console.print(f"MLP {d} → {width} → {width} → 1 (tanh, float32, {p.num_params} parameters), n = {n}; "
                  f"{args.steps} steps per member; "
                  f"spectra: {'top-2 Hessian every ' + str(every) if track else 'none'}; "
                  f"JAX {jax.__version__} on {jax.devices()[0].platform}")
    if args.ops:
        ops_table(p, sizes, console, args.repeats, loops=10 if args.big else 200)
        return
    if args.chunks:
        chunk_table(p, sizes, modes, console, args.repeats, length=chunk)
        return
    c_seq = timed(lambda: train(p, 0.05, chunk, **kw))[0]
    console.print(f"compile (sequential train): {c_seq:.1f} s")
    t = Table(title="member-steps per second by wall time / by CPU time (higher is better); "
                    "speed-up = batched / sequential")
    name = lambda m: f"{m[0]}, {m[1]} thread{'s' if m[1] > 1 else ''}"
    for col in ("B", "sequential", *(f"batched ({name(m)})" for m in modes),
                *(f"speed-up ({name(m)})" for m in modes)):
        t.add_column(col, justify="right")
    pair = lambda a, b, fmt: f"{a:{fmt}} / {b:{fmt}}"
    for B in sizes:
        lrs = np.linspace(0.02, 0.1, B)
        sides = {None: lambda: [train(p, float(lr), args.steps, **kw) for lr in lrs]}
        for m, th in modes:
            c = timed(lambda: train_batch(p, lrs, chunk, spectra=m, threads=th, **kw))[0]
            console.print(f"B = {B}, {name((m, th))}: compile {c:.1f} s")
            sides[m, th] = lambda m=m, th=th: train_batch(p, lrs, args.steps, spectra=m, threads=th, **kw)
        best = {side: (np.inf, np.inf) for side in sides}
        for _ in range(args.repeats):  # round-robin: every side gets the same chances at a free core
            for side, f in sides.items():
                best[side] = tuple(map(min, best[side], timed(f)))
        seq = best[None]
        rates = [pair(B * args.steps / best[m][0], B * args.steps / best[m][1], ".3g") for m in modes]
        ups = [pair(seq[0] / best[m][0], seq[1] / best[m][1], ".2f") for m in modes]
        t.add_row(str(B), pair(B * args.steps / seq[0], B * args.steps / seq[1], ".3g"), *rates, *ups)
    console.print(t)


if __name__ == "__main__":
    main()
