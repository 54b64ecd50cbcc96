"""Losses and labels of Problem.from_model: callable (optax) losses equal the built-in ones,
integer labels become one-hot targets, and mutable model state is refused with a recipe."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eoslab import EoslabError, Problem


def _model(p, x):
    return jnp.tanh(x @ p["w1"]) @ p["w2"]


def _setup(c=3, n=20):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(k1, (n, 4))
    params = {"w1": jax.random.normal(k2, (4, 8)), "w2": jax.random.normal(k3, (8, c))}
    labels = jax.random.randint(k4, (n,), 0, c)
    return x, params, labels


def test_optax_losses_and_integer_labels_match_the_builtin_ones():
    optax = pytest.importorskip("optax")
    x, params, labels = _setup()
    onehot = jax.nn.one_hot(labels, 3)
    ref = Problem.from_model(_model, params, x, onehot, loss="cross_entropy")
    by_int = Problem.from_model(_model, params, x, labels, loss="cross_entropy")
    by_optax = Problem.from_model(_model, params, x, labels, loss=optax.softmax_cross_entropy)
    np.testing.assert_array_equal(by_int.targets, onehot)
    for p in (by_int, by_optax):
        np.testing.assert_allclose(p.loss_fn(params), ref.loss_fn(params), rtol=1e-12)
        g, g_ref = jax.grad(p.loss_fn)(params), jax.grad(ref.loss_fn)(params)
        np.testing.assert_allclose(g["w1"], g_ref["w1"], rtol=1e-10)
    # optax's integer-label loss directly, and l2_loss against the built-in MSE (½Σ(f−y)²/n).
    by_int_optax = Problem(_model, x, labels, params, loss=optax.softmax_cross_entropy_with_integer_labels)
    np.testing.assert_allclose(by_int_optax.loss_fn(params), ref.loss_fn(params), rtol=1e-12)
    y = jax.random.normal(jax.random.PRNGKey(5), (20, 3))
    np.testing.assert_allclose(Problem.from_model(_model, params, x, y, loss=optax.l2_loss).loss_fn(params),
                               Problem.from_model(_model, params, x, y).loss_fn(params), rtol=1e-12)
    with pytest.raises(EoslabError, match="0..2"):
        Problem.from_model(_model, params, x, labels + 5, loss="cross_entropy")
    with pytest.raises(EoslabError, match="unknown loss"):
        Problem.from_model(_model, params, x, onehot, loss="hinge")


def test_mutable_state_is_refused_with_a_recipe():
    x, params, _ = _setup()
    with pytest.raises(EoslabError, match="batch_stats.*eval mode"):
        Problem.from_model(lambda v, x: _model(v["params"], x), {"params": params, "batch_stats": {"m": jnp.zeros(8)}},
                           x, jnp.zeros((20, 3)))
