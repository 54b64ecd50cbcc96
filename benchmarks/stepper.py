"""Benchmark: the one stepper (``dynamics.stepper``) against the hand-written GD scan it replaced.

Plain GD must not get slower. Reference (measured in the same run): the former ``dynamics.gd``
loop, a ``lax.scan`` over flat parameters with a velocity vector and the same divergence
masking and records, copied here verbatim. Measured: compiled step time (compilation excluded,
median of ``--repeats``) of

* the 2-D model (Theorem 1), ``--inits`` initialisations vmapped, no spectra (``gd`` /
  ``sweep``): the smallest step, where overhead would show;
* a tanh MLP (``--width``, P ≈ width² parameters) on ``--n`` examples, no spectra: ``gd`` and
  ``train(track=())``.

    python benchmarks/stepper.py [--inits 20000] [--steps 500] [--width 128] [--n 512]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from rich.console import Console
from rich.table import Table

import eoslab  # noqa: F401
from eoslab import Problem
from eoslab.dynamics import gd, sweep
from eoslab.dynamics.train import train
from eoslab.models import quadratic2d

jax.config.update("jax_enable_x64", True)


# ---- the former implementation (reference) ------------------------------------------------
def _old_all_finite(tree):
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _old_masked_scan(advance, state0, steps):
    def body(carry, _):
        state, div = carry
        new, rec, check = advance(state)
        div = div | ~(_old_all_finite(check) & _old_all_finite(state))
        rec = jax.tree_util.tree_map(
            lambda x: jnp.where(div, jnp.nan, x) if jnp.issubdtype(x.dtype, jnp.inexact) else x, rec)
        rec["diverged"] = div
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(div, a, b), state, new)
        return (new, div), rec

    (state, _), recs = jax.lax.scan(body, (state0, jnp.array(False)), None, length=steps)
    return state, recs


@functools.partial(jax.jit, static_argnames=("steps",))
def old_gd(problem, lr, params0, *, steps, momentum=0.0):
    flat0, unravel = ravel_pytree(params0)
    loss_flat = lambda v: problem.loss_fn(unravel(v))
    k, dtype = 2, flat0.dtype

    def advance(state):
        v, vel = state
        loss, g = jax.value_and_grad(loss_flat)(v)
        nan = jnp.full((k,), jnp.nan, dtype)
        rec = {"loss": loss, "residual_norm": jnp.linalg.norm(problem.residuals(unravel(v)).reshape(-1)),
               "grad_norm": jnp.linalg.norm(g), "hessian_eigs": nan, "ntk_eigs": nan,
               "eta_lambda_half": lr * nan[0] / 2, "eta_ntk_half": lr * nan[0] / 2}
        vel = momentum * vel - lr * g
        return (v + vel, vel), rec, loss

    (v, _), traj = _old_masked_scan(advance, (flat0, jnp.zeros_like(flat0)), steps)
    return traj, unravel(v)


# ---- timing -------------------------------------------------------------------------------
def timed(fn, repeats):
    jax.block_until_ready(fn())  # compile
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return float(np.min(ts))  # the least disturbed repeat: the machine may be shared


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inits", type=int, default=20_000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    rows = []

    # 2-D model, vmapped over initialisations
    eps, lr = 0.1, 1.0
    p = quadratic2d.problem(eps, [0.1, 2.0])
    th0 = jnp.stack([jnp.full(a.inits, 0.1), jnp.linspace(1.0, 3.0, a.inits) / eps**0.5], axis=1)
    old = jax.jit(lambda th: jax.vmap(lambda t: old_gd(p, lr, t, steps=a.steps))(th))
    new = jax.jit(lambda th: sweep(gd, batched={"params0": th}, problem=p, lr=lr, steps=a.steps, spectra="none"))
    t_old, t_new = timed(lambda: old(th0), a.repeats), timed(lambda: new(th0), a.repeats)
    work = a.inits * a.steps
    rows.append(("2-D model, vmapped (per trajectory-step)", t_old / work, t_new / work))

    # tanh MLP, full batch, no spectra
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (a.n, 32))
    y = jnp.sin(x[:, 0])
    w = a.width
    params = {"w1": jax.random.normal(key, (32, w)) / 32**0.5, "w2": jax.random.normal(key, (w, w)) / w**0.5,
              "w3": jax.random.normal(key, (w,)) / w**0.5}
    f = lambda q, x: jnp.tanh(jnp.tanh(x @ q["w1"]) @ q["w2"]) @ q["w3"]
    prob = Problem.from_model(f, params, x, y)
    t_old = timed(lambda: old_gd(prob, 0.05, params, steps=a.steps), a.repeats)
    t_new = timed(lambda: gd(prob, 0.05, a.steps, spectra="none"), a.repeats)
    rows.append((f"MLP {ravel_pytree(params)[0].size} params, gd (per step)", t_old / a.steps, t_new / a.steps))
    t_tr = timed(lambda: train(prob, 0.05, a.steps, track=(), chunk=a.steps)[0]["loss"], a.repeats)
    rows.append((f"MLP {ravel_pytree(params)[0].size} params, train(track=()) (per step)", t_old / a.steps,
                 t_tr / a.steps))

    table = Table(title=f"one stepper vs the former hand-written GD scan ({jax.devices()[0].platform})")
    for c in ("case", "former (s)", "stepper (s)", "stepper / former"):
        table.add_column(c)
    for name, o, n_ in rows:
        table.add_row(name, f"{o:.3e}", f"{n_:.3e}", f"{n_ / o:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
