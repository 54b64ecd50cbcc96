"""Mini-batch SGD: the sampling, and the batch-sharpness estimator against exact enumeration."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eoslab import Problem
from eoslab.dynamics.train import batch_sharpness, sample_batch, summarize, train
from eoslab.errors import EoslabError


def _problem():
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 2))
    y = jnp.sin(2 * x[:, 0])
    f = lambda q, x: jnp.tanh(x @ q["w"]) @ q["v"]
    return Problem.from_model(f, {"w": jax.random.normal(jax.random.PRNGKey(1), (2, 4)), "v": jnp.ones(4) / 2}, x, y)


def test_batch_sharpness_equals_exact_enumeration():
    p, B = _problem(), 3
    flat, unravel = jax.flatten_util.ravel_pytree(p.params)

    def ratio(idx):  # dense Hessian of one batch's loss
        sub = Problem.from_model(p.fn, p.params, p.data[idx], p.targets[idx])
        lb = lambda v: sub.loss_fn(unravel(v))
        g, H = jax.grad(lb)(flat), jax.hessian(lb)(flat)
        return g @ H @ g / (g @ g)

    combos = jnp.array(list(itertools.combinations(range(p.n), B)))  # all 20 batches, equally likely
    exact = float(jnp.mean(jax.jit(jax.vmap(ratio))(combos)))
    mean, se = batch_sharpness(p, p.params, jax.random.PRNGKey(3), B, 400)
    assert abs(float(mean) - exact) <= 4 * float(se) and 0 < float(se) < 0.2 * abs(exact)
    # the batches are B distinct examples
    idx = np.asarray(sample_batch(jax.random.PRNGKey(5), p.n, B))
    assert len(set(idx.tolist())) == B and idx.min() >= 0 and idx.max() < p.n


def test_sgd_train_records_batch_and_full_quantities():
    p = _problem()
    tr, _ = train(p, 0.2, 6, batch_size=2, track=(), track_every=3, batch_sharpness_samples=8)
    assert np.all(np.isfinite(tr["batch_sharpness"][::3])) and np.all(np.isnan(tr["batch_sharpness"][1::3]))
    np.testing.assert_allclose(tr["loss"][0], float(p.loss_fn(p.params)), rtol=1e-12)  # full-batch loss
    assert tr.meta["batch_size"] == 2 and summarize(tr)["final_batch_sharpness"] == tr["batch_sharpness"][3]
    with pytest.raises(EoslabError, match="batch_size"):
        train(p, 0.2, 3, batch_size=7)
