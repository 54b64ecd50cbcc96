"""Core API: models, parameter/output-space GD, spectra against dense references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eoslab
from eoslab.dynamics import gd, gd_output, summarize, sweep
from eoslab.models import quadratic2d, second_order
from eoslab.spectra import hessian_top, lanczos, ntk_top, top_eigvals


def _random_model(seed, D=5, P=7):
    m = second_order.random(jax.random.PRNGKey(seed), D, P)
    theta = 0.3 * jax.random.normal(jax.random.PRNGKey(seed + 100), (P,))
    return second_order.SecondOrder(m.y, m.G, m.Q, theta)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spectra_match_dense_autodiff(seed):
    m = _random_model(seed)
    p = second_order.problem(m)
    H = jax.hessian(lambda t: 0.5 * jnp.sum(second_order.predict(t, m) ** 2) / m.D)(m.theta0)
    J = jax.jacobian(second_order.predict)(m.theta0, m)
    ref_h = jnp.linalg.eigvalsh(H)[::-1][:3]
    ref_k = jnp.linalg.eigvalsh(J @ J.T / m.D)[::-1][:3]
    for method in ("dense", "lanczos"):
        np.testing.assert_allclose(hessian_top(p, k=3, method=method, num_iters=7, key=jax.random.PRNGKey(0)),
                                   ref_h, rtol=1e-8)
        np.testing.assert_allclose(ntk_top(p, k=3, method=method, num_iters=5, key=jax.random.PRNGKey(1)),
                                   ref_k, rtol=1e-8)


def test_lanczos_is_algebraic_not_magnitude():
    # A large negative eigenvalue must not be reported as the top one.
    A = jnp.diag(jnp.array([-50.0, 1.0, 2.0, 3.0]))
    r = lanczos(lambda v: A @ v, jnp.ones(4), 4, 2)
    np.testing.assert_allclose(r.values, [3.0, 2.0], atol=1e-12)
    assert jnp.all(r.residuals < 1e-10)


def test_top_eigvals_closed_form_2x2():
    M = jnp.array([[2.0, 0.7], [0.7, -1.0]])
    np.testing.assert_allclose(top_eigvals(M, 2), jnp.linalg.eigvalsh(M)[::-1], rtol=1e-14)
    assert jnp.isnan(top_eigvals(M, 3)[2])


def test_quadratic2d_is_a_second_order_model():
    eps, th = 0.05, jnp.array([0.2, 1.5])
    a, _ = gd(quadratic2d.problem(eps, th, E=0.1, angle=0.3), 0.7, 200)
    b, _ = gd(second_order.problem(quadratic2d.as_second_order(eps, th, E=0.1, angle=0.3)), 0.7, 200)
    for key in ("loss", "hessian_eigs", "ntk_eigs"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-300)


def test_output_space_matches_parameter_space_random_model():
    m = _random_model(4, D=6, P=9)
    a, _ = gd(second_order.problem(m), 0.05, 300)
    b, _ = gd_output(m, 0.05, 300)
    scale = jnp.max(a["residual_norm"])
    np.testing.assert_allclose(a["residual_norm"], b["residual_norm"], atol=1e-12 * scale)
    np.testing.assert_allclose(a["hessian_eigs"], b["hessian_eigs"], rtol=1e-10)


def test_divergence_is_a_result():
    eps = 0.02
    tr, _ = gd(quadratic2d.problem(eps, [0.3, 3 / eps**0.5]), 1.0, 50)
    s = summarize(tr)
    assert bool(s["diverged"]) and 0 < int(s["diverged_at"]) <= 8
    assert jnp.all(jnp.isnan(tr["loss"][int(s["diverged_at"]):]))


def test_sweep_equals_loop():
    p = quadratic2d.problem(0.1, [0.1, 2.0])
    lrs = jnp.array([0.5, 1.0, 2.0])
    batched, _ = sweep(gd, batched={"lr": lrs}, problem=p, steps=50)
    for i, lr in enumerate(lrs):
        single, _ = gd(p, lr, 50)
        np.testing.assert_array_equal(batched["loss"][i], single["loss"])


def test_bad_input_is_a_clear_error():
    with pytest.raises(eoslab.EoslabError, match="step size"):
        gd(quadratic2d.problem(0.1, [0.1, 2.0]), -1.0, 10)
    with pytest.raises(eoslab.EoslabError, match="eps"):
        quadratic2d.problem(1.5, [0.1, 2.0])
    with pytest.raises(eoslab.EoslabError, match="shape"):
        second_order.SecondOrder(jnp.zeros(3), jnp.zeros((4, 2)), jnp.zeros((3, 4, 4)), jnp.zeros(4))
