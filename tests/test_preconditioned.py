"""Each optimizer's edge from first principles (bisection on η), and Adam's preconditioned
sharpness against dense eigh of P^{-1/2} H P^{-1/2} with P taken from optax's own Adam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eoslab import Problem
from eoslab.dynamics import optim
from eoslab.dynamics.thresholds import bisect_threshold, predicted_threshold, random_quadratic
from eoslab.dynamics.train import train


@pytest.mark.parametrize("name,hyper", [("gd", {}), ("heavy_ball", {"beta": 0.9}), ("nesterov", {"beta": 0.5}),
                                        ("rmsprop", {}), ("adam", {"b1": 0.9})])
def test_bisection_agrees_with_the_reported_edge(name, hyper):
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    A = random_quadratic(k1, 8, cond=20.0)
    p = jnp.exp(jax.random.uniform(k2, (8,), minval=-1.0, maxval=1.0))  # frozen P = diag(p)
    pred = predicted_threshold(name, A, hyper, p)
    meas = bisect_threshold(name, A, hyper, p, key=jax.random.PRNGKey(0), steps=3000, rtol=1e-3)
    assert meas == pytest.approx(pred, rel=0.01)


def test_preconditioned_sharpness_equals_dense_eigh():
    x = jax.random.normal(jax.random.PRNGKey(0), (12, 3))
    y = jnp.sin(x[:, 0])
    f = lambda q, x: jnp.tanh(x @ q["w"]) @ q["v"]
    q0 = {"w": jax.random.normal(jax.random.PRNGKey(1), (3, 5)), "v": jax.random.normal(jax.random.PRNGKey(2), (5,)) / 2}
    prob = Problem.from_model(f, q0, x, y)
    steps, lr, b1, b2, eps = 6, 0.05, 0.9, 0.99, 1e-8
    traj, _ = train(prob, steps=steps, optimizer=optim.adam(lr, b1, b2, eps), track=("hessian",), k=2, tol=1e-9)
    # reference: optax's Adam; P from its (bias-corrected) second moment, dense Hessian, eigh
    tx = optax.adam(lr, b1, b2, eps)
    q, st = q0, tx.init(q0)
    flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]
    unravel = jax.flatten_util.ravel_pytree(q0)[1]
    hess = jax.jit(jax.hessian(lambda v: prob.loss_fn(unravel(v))))
    for t in range(steps):
        u, st = tx.update(jax.grad(prob.loss_fn)(q), st, q)
        adam_state = st[0]
        nu_hat = flat(adam_state.nu) / (1 - b2 ** int(adam_state.count))
        s = 1.0 / jnp.sqrt(jnp.sqrt(nu_hat) + eps)
        ref = np.linalg.eigvalsh(np.asarray(s[:, None] * hess(flat(q)) * s[None, :]))[::-1][:2]
        np.testing.assert_allclose(traj["preconditioned_eigs"][t], ref, rtol=1e-6)
        # the residual norm bounds the distance to the (dense) spectrum
        assert np.all(np.abs(traj["preconditioned_eigs"][t] - ref) <= traj["preconditioned_residuals"][t] + 1e-12)
        q = optax.apply_updates(q, u)
    np.testing.assert_allclose(traj["edge"], (2 + 2 * b1) / ((1 - b1) * lr), rtol=1e-12)
    np.testing.assert_allclose(traj["edge_ratio"], traj["preconditioned_eigs"][:, 0] / traj["edge"], rtol=1e-12)
