"""Benchmark: B trainings in one compiled call (:func:`eoslab.dynamics.batched.train_batch`)
against B sequential :func:`eoslab.dynamics.train.train` runs in the same process.

Members differ by their step size (η spread over [0.02, 0.1]) and share θ₀ and the data, the
setting of a step-size sweep. Every run tracks the top-2 Hessian eigenvalues at every step
(``--track-every``; 0: no spectra). Both sides are timed after a first call has compiled them,
so the table gives steady-state member-steps per second; compile times are printed apart. Each
side is the best of ``--repeats`` runs, by wall time and by the process's CPU time (on a shared
machine the wall time also counts the time other processes hold the cores; the CPU time does not).

Networks: the small MLP of the sweeps (2 hidden tanh layers of width 32, n = 256 synthetic
examples of dimension 16) and the MLP of ``benchmarks/sharpness.py`` (32 → 300 → 300 → 1,
n = 1,000; ``--big``), both float32.

    python benchmarks/batched_train.py [--sizes 1,8,32] [--steps 100] [--track-every 1] [--repeats 3] [--big]
    python benchmarks/batched_train.py --ops [--sizes 8] [--big]

``--ops`` times the operations a tracked step is made of (a Hessian-vector product, a gradient,
the tracker's small ``eigh`` and QR), B of them vmapped against B times one, each in one jitted
loop: whether vectorising members can pay at all on this machine.
"""

from __future__ import annotations

import argparse

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
    """CPU µs per call of each operation vmapped over B members against B × the single call."""
    from jax.flatten_util import ravel_pytree

    from eoslab.spectra.operators import hvp

    flat, unravel = ravel_pytree(p.params)
    n, M = flat.size, 11  # the tracker's basis capacity for k = 2

    def per_call(f, *a):
        looped = jax.jit(lambda c, *rest: jax.lax.fori_loop(0, loops, lambda i, c: f(c, *rest), c))
        jax.block_until_ready(looped(*a))
        return timed(lambda: jax.block_until_ready(looped(*a)), repeats)[1] / loops * 1e6

    def hv(v, w):
        return ravel_pytree(hvp(p, unravel(w))[0](v))[0] * 1e-3 + v

    def grad(w):
        return ravel_pytree(jax.grad(p.loss_fn)(unravel(w)))[0] * 1e-3 + w

    sym = lambda a: a + jnp.swapaxes(a, -1, -2)
    cases = {"Hessian-vector product": (hv, lambda B: (jnp.ones((B, n), flat.dtype), jnp.stack([flat] * B))),
             "gradient": (grad, lambda B: (jnp.stack([flat] * B),)),
             f"eigh {M}×{M}": (lambda a: a + 1e-6 * jnp.linalg.eigh(a)[1],
                               lambda B: (sym(jax.random.normal(jax.random.PRNGKey(0), (B, M, M), flat.dtype)),)),
             f"QR {n}×3": (lambda x: x + 1e-6 * jnp.linalg.qr(x)[0],
                           lambda B: (jax.random.normal(jax.random.PRNGKey(0), (B, n, 3), flat.dtype),))}
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,8,32", help="batch sizes B")
    ap.add_argument("--steps", type=int, default=100, help="steps per member")
    ap.add_argument("--track-every", type=int, default=1, help="spectra every this many steps (0: none)")
    ap.add_argument("--modes", default="map,vmap", help="spectra modes of train_batch")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best one kept)")
    ap.add_argument("--ops", action="store_true", help="time the step's operations vmapped vs one by one")
    ap.add_argument("--big", action="store_true", help="the 100k-parameter MLP of benchmarks/sharpness.py")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    n, d, width = (1000, 32, 300) if args.big else (256, 16, 32)
    p = problem(n, d, width)
    track = ("hessian",) if args.track_every else ()
    every = max(args.track_every, 1)
    chunk = min(50, args.steps)
    kw = dict(k=2, track=track, track_every=every, chunk=chunk)
    console = Console(width=150)
    console.print(f"MLP {d} → {width} → {width} → 1 (tanh, float32, {p.num_params} parameters), n = {n}; "
                  f"{args.steps} steps per member; "
                  f"spectra: {'top-2 Hessian every ' + str(every) if track else 'none'}; "
                  f"JAX {jax.__version__} on {jax.devices()[0].platform}")
    if args.ops:
        ops_table(p, sizes, console, args.repeats, loops=10 if args.big else 200)
        return
    c_seq = timed(lambda: train(p, 0.05, chunk, **kw))[0]
    console.print(f"compile (sequential train): {c_seq:.1f} s")
    t = Table(title="member-steps per second by wall time / by CPU time (higher is better); "
                    "speed-up = batched / sequential")
    for col in ("B", "sequential", *(f"batched ({m})" for m in modes), *(f"speed-up ({m})" for m in modes)):
        t.add_column(col, justify="right")
    pair = lambda a, b, fmt: f"{a:{fmt}} / {b:{fmt}}"
    for B in sizes:
        lrs = np.linspace(0.02, 0.1, B)
        seq = timed(lambda: [train(p, float(lr), args.steps, **kw) for lr in lrs], args.repeats)
        rates, ups = [], []
        for m in modes:
            c = timed(lambda: train_batch(p, lrs, chunk, spectra=m, **kw))[0]
            bt = timed(lambda: train_batch(p, lrs, args.steps, spectra=m, **kw), args.repeats)
            console.print(f"B = {B}, {m}: compile {c:.1f} s")
            rates.append(pair(B * args.steps / bt[0], B * args.steps / bt[1], ".3g"))
            ups.append(pair(seq[0] / bt[0], seq[1] / bt[1], ".2f"))
        t.add_row(str(B), pair(B * args.steps / seq[0], B * args.steps / seq[1], ".3g"), *rates, *ups)
    console.print(t)


if __name__ == "__main__":
    main()
