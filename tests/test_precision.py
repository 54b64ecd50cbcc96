"""Precision policy: importing eoslab changes no global JAX setting; float32 user models stay
float32 everywhere (gd, sweep, train, spectra), also inside a float64 program; the papers'
models and theory compute in float64 whatever the caller's mode. Run in a fresh interpreter,
since the test session itself turns float64 on (tests/conftest.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

SCRIPT = r'''
import json
import jax, jax.numpy as jnp
out = {"before": bool(jax.config.jax_enable_x64)}
import eoslab, eoslab.dynamics, eoslab.spectra.top, eoslab.theory.eos2d, eoslab.theory.theorem2
import eoslab.models.second_order, eoslab.dynamics.train, eoslab.cli
from eoslab.experiments.registry import discover
discover()                                           # every experiment kind module imported
out["after_import"] = bool(jax.config.jax_enable_x64)
out["default_dtype"] = str(jnp.zeros(1).dtype)

import flax.linen as nn
import equinox as eqx
from eoslab import Problem, x64
from eoslab.dynamics import gd, summarize, sweep
from eoslab.dynamics.train import train
from eoslab.spectra.top import hessian_top

emodel = eqx.nn.MLP(4, 1, 8, depth=1, key=jax.random.PRNGKey(0))
out["equinox_init"] = sorted({str(l.dtype) for l in jax.tree_util.tree_leaves(eqx.filter(emodel, eqx.is_array))})

x = jax.random.normal(jax.random.PRNGKey(1), (16, 4), jnp.float32)
y = jnp.sin(x[:, :1])
model = nn.Sequential([nn.Dense(8), nn.tanh, nn.Dense(1)])
params = model.init(jax.random.PRNGKey(0), x)
p32 = Problem.from_model(model.apply, params, x, y)

dtypes = lambda tree: sorted({str(l.dtype) for l in jax.tree_util.tree_leaves(tree)})

def f32_paths(tag, full):
    b, final = sweep(gd, batched={"lr": jnp.linspace(0.05, 0.2, 3)}, problem=p32, steps=5, spectra="none")
    out[tag] = {"sweep": str(b["loss"].dtype), "sweep_params": dtypes(final)}
    if full:
        tr, fp = train(p32, lr=0.1, steps=4, k=1)
        out[tag].update(hessian_top=str(hessian_top(p32, k=1).dtype), train_params=dtypes(fp),
                        train_loss=str(jnp.asarray(tr["loss"]).dtype), train_eigs=str(jnp.asarray(tr["hessian_eigs"]).dtype))

f32_paths("f32_plain", False)
with x64():                                          # a float64 program (like the eoslab command)
    out["inside_x64"] = str(jnp.zeros(1).dtype)
    f32_paths("f32_in_x64", True)
out["after_scope"] = bool(jax.config.jax_enable_x64)

from eoslab.models import quadratic2d
from eoslab.theory import eos2d
p = quadratic2d.problem(eps=0.02, theta0=[0.1, 2 / 0.02**0.5])
traj, _ = gd(p, lr=1.0, steps=20000)
out["paper_gd"] = str(traj["loss"].dtype)
out["paper_limit"] = float(summarize(traj)["final_eta_ntk_half"] * 2)
out["theory_limit"] = float(eos2d.limit_numeric(0.02)[0])
out["end"] = bool(jax.config.jax_enable_x64)
print("RESULT" + json.dumps(out))
'''


def test_import_has_no_side_effect_and_float32_stays_float32(tmp_path):
    pytest.importorskip("flax")
    pytest.importorskip("equinox")
    env = {**os.environ, "PYTHONPATH": SRC, "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_ENABLE_X64", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.split("RESULT")[-1])
    assert out["before"] is False and out["after_import"] is False and out["default_dtype"] == "float32"
    assert out["equinox_init"] == ["float32"]
    assert out["f32_plain"] == {"sweep": "float32", "sweep_params": ["float32"]}
    assert out["inside_x64"] == "float64"
    assert out["f32_in_x64"] == {"sweep": "float32", "sweep_params": ["float32"],  # the former scan carry-type error
                                 "hessian_top": "float32", "train_params": ["float32"], "train_loss": "float32",
                                 "train_eigs": "float32"}
    assert out["after_scope"] is False and out["end"] is False
    # The paper's 2-D model: float64 in a float32 program, to the digits of the theory (README).
    assert out["paper_gd"] == "float64"
    assert out["theory_limit"] == pytest.approx(1.98965258142, abs=1e-11)
    assert out["paper_limit"] == pytest.approx(out["theory_limit"], abs=1e-9)
