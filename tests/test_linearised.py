"""Eigenvalues of one optimizer step's Jacobian against closed forms and dense references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eoslab.dynamics import optim
from eoslab.dynamics.linearised import step_eigs
from eoslab.dynamics.thresholds import random_quadratic
from eoslab.errors import EoslabError

A = random_quadratic(jax.random.PRNGKey(3), 6, cond=20.0)
LAM = np.linalg.eigvalsh(np.asarray(A))
THETA = jnp.linspace(-1.0, 1.0, 6)


def quad(theta):
    return 0.5 * theta @ A @ theta


def test_gd_jacobian_is_identity_minus_eta_h():
    eta = 0.07
    dense = step_eigs(quad, optax.sgd(eta), THETA, dense=True, k=6)
    np.testing.assert_allclose(np.sort(dense.eigenvalues.real), np.sort(1 - eta * LAM), atol=1e-12)
    assert dense.ratio == pytest.approx(eta * LAM.max() / 2, abs=1e-12)
    arn = step_eigs(quad, optax.sgd(eta), THETA, krylov=6)  # Krylov space = whole space: exact
    assert arn.ratio == pytest.approx(dense.ratio, abs=1e-10) and arn.products == 6


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_heavy_ball_roots_and_edge(beta):
    eta = 0.05
    got = step_eigs(quad, optax.sgd(eta, momentum=beta), THETA, dense=True, k=12).eigenvalues
    want = np.concatenate([np.roots([1, -(1 + beta - eta * lam), beta]) for lam in LAM])
    key = lambda z: (round(z.real, 8), round(z.imag, 8))
    np.testing.assert_allclose(sorted(got, key=key), sorted(want, key=key), atol=1e-9)
    at_edge = 2 * (1 + beta) / LAM.max()   # the heavy-ball edge: a root at −1
    r = step_eigs(quad, optax.sgd(at_edge, momentum=beta), THETA, dense=True)
    assert r.ratio == pytest.approx(1.0, abs=1e-7)
    # eoslab's heavy-ball keeps η and β in its state: eigenvalues 1 are added, the ratio is the same
    mine = step_eigs(quad, optim.heavy_ball(at_edge, beta), THETA, dense=True)
    assert mine.ratio == pytest.approx(r.ratio, abs=1e-9) and mine.dim == r.dim + 2


def test_nesterov_flip_at_its_reported_edge():
    beta = 0.6
    eta = float(optim.nesterov(1.0, beta).edge(optim.nesterov(1.0, beta).init(THETA))) / LAM.max()
    r = step_eigs(quad, optax.sgd(eta, momentum=beta, nesterov=True), THETA, dense=True)
    assert r.ratio == pytest.approx(1.0, abs=1e-7)


def _mlp():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k1, (20, 3))
    y = jnp.sin(x[:, :1])
    p = {"w1": jax.random.normal(k2, (3, 6)) / 3 ** 0.5, "w2": jax.random.normal(k3, (6, 1)) / 6 ** 0.5}
    loss = lambda p: 0.5 * jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)
    return loss, p


def test_network_gd_ratio_is_eta_lambda_half_and_arnoldi_converges():
    loss, p = _mlp()
    flat, unravel = jax.flatten_util.ravel_pytree(p)
    lam = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(lambda v: loss(unravel(v))))(flat)))
    eta = 1.5
    r = step_eigs(loss, optax.sgd(eta), p, krylov=24)
    assert r.ratio == pytest.approx(eta * lam.max() / 2, rel=1e-8)
    assert r.residuals[0] < 1e-6
    assert r.spectral_radius == pytest.approx(np.abs(1 - eta * lam).max(), rel=1e-8)


def test_adam_arnoldi_matches_dense_and_counts_are_fixed():
    loss, p = _mlp()
    tx = optax.adam(0.05)
    state = tx.init(p)
    @jax.jit
    def step(p, state):
        u, state = tx.update(jax.grad(loss)(p), state, p)
        return optax.apply_updates(p, u), state

    for _ in range(5):  # away from the start, where the moments are zero
        p, state = step(p, state)
    dense = step_eigs(loss, tx, p, state, dense=True)
    arn = step_eigs(loss, tx, p, state, krylov=60)
    assert dense.dim == 3 * 24                     # θ, μ, ν; the int count is held fixed
    assert arn.ratio == pytest.approx(dense.ratio, rel=1e-6)


def test_refuses_bad_arguments():
    with pytest.raises(EoslabError, match="k"):
        step_eigs(quad, optax.sgd(0.1), THETA, k=0)
    with pytest.raises(EoslabError, match="floating"):
        step_eigs(lambda t: jnp.sum(t), optax.identity(), jnp.arange(3))
