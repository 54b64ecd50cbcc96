"""A tiny experiment kind for the experiment-machinery tests (not a test module itself).

``test.toy``: each run draws ``n`` standard normals from its seed and stores their mean; the
claim-level measure is the mean over runs, whose exact expectation is 0. ``delay`` (seconds)
slows each chunk down so a test can kill a sweep half-way; the environment variable
``EOSLAB_TOY_DELAY`` does the same without changing the runs' identity.
"""

import os
import time

import numpy as np

from eoslab.experiments import Field, Kind, Measurement, register
from eoslab.experiments.registry import KINDS

SCHEMA = {
    "model": {"name": Field(str, "toy", choices=("toy",)),
              "scale": Field(float, 1.0, doc="standard deviation", check=lambda v: None if v > 0 else "must be > 0")},
    "dynamics": {"n": Field(int, doc="samples per run", static=True),
                 "delay": Field(float, 0.0, doc="seconds to sleep per chunk"),
                 "shift": Field(list, [0.0, 0.0], length=2, doc="a 2-vector added to the samples")},
}


def run(points):
    time.sleep(points[0]["delay"] + float(os.environ.get("EOSLAB_TOY_DELAY", "0")))
    out = []
    for p in points:
        x = np.random.default_rng(p["seed"]).normal(0.0, p["scale"], p["n"])
        out.append({"samples": x, "mean": np.float64(x.mean()), "shift": np.asarray(p["shift"])})
    return out


def grand_mean(runs):
    m = np.array([r.scalars()["mean"] for r in runs])
    n = runs[0].params["n"]
    return Measurement(m.mean(), runs[0].params["scale"] / np.sqrt(n * len(m)))


def zero(runs):
    return 0.0


def figures(results):
    from eoslab.plots.style import figure

    fig, ax = figure()
    ax.plot([r.scalars()["mean"] for r in results.runs], "o")
    return [("toy_means", fig, "run means")]


TOY = Kind(name="test.toy", schema=SCHEMA, run=run, measures={"grand_mean": grand_mean},
           predictions={"zero": zero}, figures=figures, chunk=1, doc="test kind")


def register_toy():
    if "test.toy" not in KINDS:
        register(TOY)
    return TOY


CONFIG = """\
[experiment]
name = "toy"
kind = "test.toy"
title = "toy experiment"
source = "the law of large numbers"

[model]
scale = 1.0

[dynamics]
n = 1000
delay = {delay}

[sweep]
seed = {seeds}

[quick.dynamics]
n = 500

[[claims]]
id = "toy-mean-zero"
statement = "the grand mean is 0"
source = "exact"
measure = "grand_mean"
predict = "zero"
tolerance = {tolerance}
sigmas = 4.0
why = "Gaussian mean: 4 standard errors"
"""


def write_config(folder, delay=0.0, seeds=(0, 1, 2, 3), tolerance=0.0, name="toy.toml"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(CONFIG.format(delay=delay, seeds=list(seeds), tolerance=tolerance))
    return path


# ---- a JAX kind for the executor tests: GD on a random quadratic ------------------------------
GD_SCHEMA = {"dynamics": {"dim": Field(int, 8, doc="dimension", static=True),
                          "lr": Field(float, 0.1, doc="step size"),
                          "steps": Field(int, 50, doc="GD steps", static=True)}}


def _gd_losses(seed, lr, dim, steps):
    import jax
    import jax.numpy as jnp

    m = jax.random.normal(jax.random.PRNGKey(seed), (dim, dim), jnp.float64)
    a = m.T @ m / dim

    def step(th, _):
        return th - lr * (a @ th), 0.5 * th @ a @ th

    return jax.lax.scan(step, jnp.ones(dim, jnp.float64), None, length=steps)[1]


_GD_JIT = {}


def run_gd(points):
    """GD θ ← θ − η A θ on A = MᵀM/dim (M from the seed), one compiled ``lax.scan`` per point
    (compiled once per process and shape); stores the loss ½θᵀAθ at every step.
    ``EOSLAB_TOY_DELAY`` seconds of sleep per point."""
    import jax

    out = []
    for p in points:
        time.sleep(float(os.environ.get("EOSLAB_TOY_DELAY", "0")))
        key = (p["dim"], p["steps"])
        if key not in _GD_JIT:
            _GD_JIT[key] = jax.jit(_gd_losses, static_argnums=(2, 3))
        losses = _GD_JIT[key](p["seed"], p["lr"], p["dim"], p["steps"])
        out.append({"loss": np.asarray(losses), "final_loss": np.asarray(losses[-1])})
    return out


GD = Kind(name="test.gd", schema=GD_SCHEMA, run=run_gd, chunk=1, doc="test kind: GD on a random quadratic")
if "test.gd" not in KINDS:
    register(GD)
GD3 = Kind(name="test.gd3", schema=GD_SCHEMA, run=run_gd, chunk=3,
           doc="test kind: GD on a random quadratic, three points per call")
if "test.gd3" not in KINDS:
    register(GD3)

GD_SWEEP = """\
[experiment]
name = "{name}"
kind = "test.gd"
[sweep]
seed = {seeds}
lr = [0.1, 0.2]
"""
