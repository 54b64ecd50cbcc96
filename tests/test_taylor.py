"""The second-order Taylor model of a network: second-order accuracy, exactness as a
quadratic model, and agreement with the dense SecondOrder model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eoslab import EoslabError, Problem
from eoslab.dynamics import gd
from eoslab.spectra import hvp
from eoslab.models import second_order
from eoslab.models.mlp import MLP
from eoslab.models.taylor import nonlinear_terms, taylor_problem, to_second_order
from references import plain_gd_losses


def _net_problem(seed=0, n=5, d=3, width=4, out=2, activation="tanh"):
    net = MLP(2, width, activation, out)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = net.init(k1, d, jnp.float64)
    x = jax.random.normal(k2, (n, d), jnp.float64)
    y = jax.random.normal(k3, (n, out), jnp.float64)
    return Problem.from_model(net, params, x, y)


def _direction(params, seed):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])


def _shift(params, delta, s):
    return jax.tree_util.tree_map(lambda p, d: p + s * d, params, delta)


@pytest.mark.parametrize("activation", ["tanh", "elu"])
def test_taylor_error_is_third_order(activation):
    p = _net_problem(activation=activation)
    t = taylor_problem(p)
    delta = _direction(p.params, 1)
    gap = jax.jit(lambda theta: jnp.linalg.norm(p.predict(theta) - t.predict(theta)))
    errors = [float(gap(_shift(p.params, delta, s))) for s in (0.02, 0.01)]
    # error = O(‖δ‖³): halving δ divides it by 2³ = 8 (up to the O(‖δ‖⁴) term)
    assert 7.0 < errors[0] / errors[1] < 9.0
    # and it is much smaller than the first-order (linearised) model's error
    theta = _shift(p.params, delta, 0.02)
    jd, _ = nonlinear_terms(p, p.params, jax.tree_util.tree_map(lambda d: 0.02 * d, delta))
    lin = p.predict(p.params).reshape(-1) + jd
    assert errors[0] < 0.05 * float(jnp.linalg.norm(p.predict(theta).reshape(-1) - lin))


def test_taylor_is_exactly_quadratic_with_the_networks_derivatives():
    p = _net_problem(seed=2)
    t = taylor_problem(p)
    flat0, unravel = jax.flatten_util.ravel_pytree(p.params)
    f_net = jax.jit(lambda v: p.predict(unravel(v)).reshape(-1))
    f_tay = jax.jit(lambda v: t.predict(unravel(v)).reshape(-1))
    u = jax.random.normal(jax.random.PRNGKey(5), flat0.shape)
    np.testing.assert_allclose(f_tay(flat0), f_net(flat0), rtol=1e-13)
    np.testing.assert_allclose(jax.jvp(f_tay, (flat0,), (u,))[1], jax.jvp(f_net, (flat0,), (u,))[1], rtol=1e-11)
    # along any line, far from θ₀, f₂ is a parabola whose curvature is the network's Q₀(u, u)
    far = flat0 + 0.7 * jax.random.normal(jax.random.PRNGKey(6), flat0.shape)
    g = [f_tay(far + s * u) for s in range(4)]
    scale = float(jnp.max(jnp.abs(jnp.stack(g))))
    np.testing.assert_allclose(g[3] - 3 * g[2] + 3 * g[1] - g[0], 0.0, atol=1e-11 * scale)
    Q_uu = u @ jax.hessian(f_net)(flat0) @ u
    np.testing.assert_allclose(g[2] - 2 * g[1] + g[0], Q_uu, rtol=1e-9, atol=1e-11 * scale)


def test_dense_second_order_model_matches_the_matrix_free_one():
    p = _net_problem(seed=3, n=4, width=4)
    t = taylor_problem(p)
    m = to_second_order(p)
    flat0, unravel = jax.flatten_util.ravel_pytree(p.params)
    assert m.Q.shape == (p.targets.size, flat0.size, flat0.size) and m.normaliser == p.n
    delta = 0.3 * jax.random.normal(jax.random.PRNGKey(1), flat0.shape)
    np.testing.assert_allclose(second_order.predict(delta, m),
                               t.residuals(unravel(flat0 + delta)).reshape(-1), rtol=1e-10, atol=1e-12)
    # the matrix-free Hessian-vector product of the Taylor loss is the model's (JᵀJ + Σ z_α Q_α)/n
    z, J = second_order.predict(delta, m), second_order.jacobian(delta, m)
    H = (J.T @ J + jnp.einsum("a,apq->pq", z, m.Q)) / m.normaliser
    v = jax.random.normal(jax.random.PRNGKey(2), flat0.shape)
    Hv = jax.jit(lambda th, v: hvp(t, unravel(th))[0](v))(flat0 + delta, v)
    np.testing.assert_allclose(Hv, H @ v, rtol=1e-9, atol=1e-12)
    # both are Problems usable by gd, with the same losses
    a, _ = gd(t, 0.1, 30, spectra="none")
    np.testing.assert_allclose(a["loss"], plain_gd_losses(second_order.problem(m), 0.1, 30), rtol=1e-10)
    with pytest.raises(EoslabError, match="max_params"):
        to_second_order(p, max_params=10)
    with pytest.raises(EoslabError, match="already"):
        taylor_problem(t)
