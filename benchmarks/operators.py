"""Benchmark: the cost of one operator-vector product inside a loop, in gradients.

The tracker takes its guard and expansion products inside ``lax.while_loop`` / ``lax.cond``,
where XLA cannot share work with the training step, so what a product costs there is what
tracking costs. For a tanh MLP (``--n`` examples, d → width → width → 1, float32, MSE; the
default is the network of ``benchmarks/sharpness.py``, P = 100,501), each row is the time of
one product in a ``fori_loop`` of ``--products`` normalised products (the loop's fixed cost
removed by also timing a loop of one), as a ratio to one jitted gradient of the same loss
measured in the same round:

  hvp (ravel)     the Hessian product with its tangent raveled by ``ravel_pytree`` (one
                  ``concatenate``): the reference, the way the library computed it before;
  hvp             ``eoslab.spectra.hvp(..., linearized=True)`` (leaf-by-leaf ``flatten``);
  ntk (ravel)     the NTK product through a flat parameter vector (``ravel_pytree``);
  ntk             ``eoslab.spectra.ntk_vp`` (no flat parameter vector).

Timings alternate between the rows for ``--rounds`` rounds (each the minimum of 3 calls) and
the table gives the median over rounds of each round's ratio, so that a shared machine's
drifting speed cancels; the last column is the ratio to the reference row.

Usage: python benchmarks/operators.py [--n 1000] [--d 32] [--width 300] [--products 11] [--rounds 12]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from rich.console import Console
from rich.table import Table

import eoslab
from eoslab.spectra import hvp, ntk_vp


def mlp_apply(p, x):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    h = jnp.tanh(h @ p["w2"] + p["b2"])
    return (h @ p["w3"] + p["b3"])[:, 0]


def build(n, d, width, seed=0):
    """The network of ``tracking_overhead.py``, copied rather than imported: importing that script
    switches on float64 for the whole process, which changes what XLA compiles here."""
    kx, ky, k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 5)
    f32 = jnp.float32
    params = {"w1": jax.random.normal(k1, (d, width), f32) / d**0.5, "b1": jnp.zeros(width, f32),
              "w2": jax.random.normal(k2, (width, width), f32) / width**0.5, "b2": jnp.zeros(width, f32),
              "w3": jax.random.normal(k3, (width, 1), f32) / width**0.5, "b3": jnp.zeros(1, f32)}
    return eoslab.Problem.from_model(mlp_apply, params, jax.random.normal(kx, (n, d), f32),
                                     jax.random.normal(ky, (n,), f32))


def raveled_hvp(problem, params):
    """The reference: the gradient of the loss of the flat vector, linearised (one concatenate)."""
    flat, unravel = ravel_pytree(params)
    _, lin = jax.linearize(jax.grad(lambda v: problem.loss_fn(unravel(v))), flat)
    return lin, flat.size


def raveled_ntk(problem, params):
    """The reference NTK product: J Jᵀ u through the flat parameter vector."""
    flat, unravel = ravel_pytree(params)
    out, jac = jax.linearize(lambda v: problem.predict(unravel(v)).reshape(-1), flat)
    jac_t = jax.linear_transpose(jac, flat)
    return (lambda u: jac(jac_t(u)[0]) / problem.normaliser), out.size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--width", type=int, default=300)
    ap.add_argument("--products", type=int, default=11)
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    problem = build(args.n, args.d, args.width)
    flat, unravel = ravel_pytree(problem.params)
    builders = {"hvp (ravel)": raveled_hvp, "hvp": lambda pr, p: hvp(pr, p, linearized=True),
                "ntk (ravel)": raveled_ntk, "ntk": ntk_vp}

    def loop(params, v, count, name):
        mv = builders[name](problem, params)[0]

        def body(_, v):
            w = mv(v)
            return w / jnp.linalg.norm(w)
        return jax.lax.fori_loop(0, count, body, v)

    run = jax.jit(loop, static_argnums=(2, 3))
    grad = jax.jit(jax.grad(lambda v: problem.loss_fn(unravel(v))))
    starts = {"hvp": jax.random.normal(jax.random.PRNGKey(1), flat.shape, flat.dtype),
              "ntk": jax.random.normal(jax.random.PRNGKey(1), (problem.n,), flat.dtype)}
    calls = {"gradient": lambda: grad(flat)}
    for name in builders:
        v0 = starts[name.split()[0]]
        for count in (1, args.products):
            calls[(name, count)] = (lambda n, c, v: lambda: run(problem.params, v, c, n))(name, count, v0)
    for fn in calls.values():                       # compile
        jax.block_until_ready(fn())

    def best(fn):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - t0)
        return min(times)

    ratios = {name: [] for name in builders}
    grads = []
    for _ in range(args.rounds):
        g = best(calls["gradient"])
        grads.append(g)
        for name in builders:
            per = (best(calls[(name, args.products)]) - best(calls[(name, 1)])) / (args.products - 1)
            ratios[name].append(per / g)
    med = {name: float(np.median(r)) for name, r in ratios.items()}
    table = Table(title=f"one product inside a fori_loop, P = {flat.size:,}, n = {problem.n}: "
                        f"median of {args.rounds} rounds (gradient {np.median(grads) * 1e3:.2f} ms)")
    for col in ("product", "gradients per product", "× reference"):
        table.add_column(col, justify="right")
    for name in builders:
        ref = name.split()[0] + " (ravel)"
        r = float(np.median(np.asarray(ratios[name]) / np.asarray(ratios[ref])))
        table.add_row(name, f"{med[name]:.2f}", f"{r:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
