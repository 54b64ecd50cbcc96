"""Trace (Hutchinson, Hutch++) and spectral density (stochastic Lanczos quadrature) of the
Hessian, Gauss-Newton matrix and NTK of a small network, against dense jax.hessian/jacobian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from eoslab import EoslabError, Problem
from eoslab.spectra import density as sd


def _net(seed=0, n=12, d=3, width=6):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    x, y = jax.random.normal(k[0], (n, d)), 2.0 * jax.random.normal(k[1], (n, 2))
    params = {"w1": jax.random.normal(k[2], (d, width)), "b1": 0.1 * jnp.ones(width),
              "w2": jax.random.normal(k[3], (width, 2)) / width**0.5}
    return Problem.from_model(lambda p, x: jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"], params, x, y)


@jax.jit
def _dense(problem):
    flat, unravel = ravel_pytree(problem.params)
    H = jax.hessian(lambda v: problem.loss_fn(unravel(v)))(flat)
    J = jax.jacobian(lambda v: problem.predict(unravel(v)).reshape(-1))(flat)
    return {"hessian": H, "gauss_newton": J.T @ J / problem.n, "ntk": J @ J.T / problem.n}


def test_traces_within_three_standard_errors_of_dense():
    problem = _net()
    mats = _dense(problem)
    for i, (name, A) in enumerate(mats.items()):
        exact = float(jnp.trace(A))
        for method in ("hutchinson", "hutch++") if name == "hessian" else ("hutch++",):
            est = sd.trace(problem, problem.params, name, key=jax.random.PRNGKey(10 + i), num_products=60,
                           method=method)
            assert est.n_products == 60
            assert float(est.stderr) > 0
            assert abs(float(est.value) - exact) <= 3 * float(est.stderr), (name, method, est, exact)
    # Hutch++ on the Hessian (a few large eigenvalues): a smaller standard error at equal products.
    se = {m: float(sd.trace(problem, problem.params, "hessian", key=jax.random.PRNGKey(3), num_products=60,
                            method=m).stderr)
          for m in ("hutchinson", "hutch++")}
    assert se["hutch++"] < se["hutchinson"]


def test_hutchinson_is_unbiased_and_its_standard_error_is_calibrated():
    # 200 independent estimates of a fixed matrix's trace: their spread matches the reported SE.
    A = jnp.asarray(np.random.default_rng(0).normal(size=(30, 30)))
    A = A + A.T
    est = jax.jit(jax.vmap(lambda k: sd.hutchinson(lambda v: A @ v, 30, k, 20)))(
        jax.random.split(jax.random.PRNGKey(0), 200))
    z = (est.value - jnp.trace(A)) / est.stderr
    assert abs(float(jnp.mean(est.value) - jnp.trace(A))) < 3 * float(jnp.std(est.value)) / 200**0.5
    assert 0.8 < float(jnp.std(z)) < 1.3


@pytest.mark.parametrize("name", ["hessian", "ntk"])
def test_quadrature_moments_are_exact_to_the_lanczos_order(name):
    problem = _net()
    A = _dense(problem)[name]
    m = 6
    dens = sd.density(problem, problem.params, name, key=jax.random.PRNGKey(1), num_probes=3, num_steps=m)
    np.testing.assert_allclose(jnp.sum(dens.weights, axis=1), 1.0, rtol=1e-12)
    Z = sd.rademacher(jax.random.PRNGKey(1), (3, A.shape[0]))      # the probes slq drew
    scale = float(jnp.max(jnp.abs(jnp.linalg.eigvalsh(A))))
    got = sd.quadrature_moments(dens, 2 * m - 1)
    for p in range(2 * m):
        ref = jnp.einsum("pi,ij,pj->p", Z, jnp.linalg.matrix_power(A, p), Z) / A.shape[0]
        np.testing.assert_allclose(got[:, p] / scale**p, ref / scale**p, atol=1e-10, err_msg=f"p={p}")
    # Beyond the order it is no longer exact (the nodes are not the eigenvalues).
    ref = jnp.einsum("pi,ij,pj->p", Z, jnp.linalg.matrix_power(A, 2 * m + 2), Z) / A.shape[0]
    got = sd.quadrature_moments(dens, 2 * m + 2)[:, -1]
    assert float(jnp.max(jnp.abs(got - ref))) / scale ** (2 * m + 2) > 1e-8


def test_full_depth_quadrature_recovers_the_spectrum_and_the_grid_density_integrates_to_one():
    problem = _net(n=6, width=3)
    A = _dense(problem)["ntk"]                           # 12 × 12
    dens = jax.jit(lambda A, key: sd.slq(lambda v: A @ v, A.shape[0], key, num_probes=2, num_steps=12))(
        A, jax.random.PRNGKey(2))
    eig = np.linalg.eigvalsh(A)
    # Each node with weight > 1e-8 is an eigenvalue (12 steps on a 12-dim space: exact).
    big = np.asarray(dens.weights) > 1e-8
    nodes = np.asarray(dens.nodes)[big]
    assert np.max(np.min(np.abs(nodes[:, None] - eig[None, :]), axis=1)) < 1e-8 * eig.max()
    grid = jnp.linspace(eig.min() - 1, eig.max() + 1, 4001)
    g = sd.density_on_grid(dens, grid, 0.05)
    np.testing.assert_allclose(float(jnp.sum(g) * (grid[1] - grid[0])), 1.0, rtol=1e-3)


def test_bad_inputs():
    problem = _net()
    with pytest.raises(EoslabError, match="PRNG key"):
        sd.trace(problem, problem.params, key=None)
    with pytest.raises(EoslabError, match="unknown trace method"):
        sd.trace(problem, problem.params, key=jax.random.PRNGKey(0), method="exact")
    with pytest.raises(EoslabError, match="unknown operator"):
        sd.density(problem, problem.params, "fisher", key=jax.random.PRNGKey(0))
    with pytest.raises(EoslabError, match="num_products"):
        sd.hutchpp(lambda v: v, 5, jax.random.PRNGKey(0), 3)


def test_train_records_trace_and_density_every_k_steps():
    from eoslab.dynamics.train import train

    problem = _net()
    traj, _ = train(problem, 0.1, 7, track=(), density=("hessian", "ntk"), density_every=3, density_probes=2,
                    density_steps=5, trace_products=30, chunk=7)
    rows = np.isfinite(traj["hessian_trace"])
    assert rows.tolist() == [t % 3 == 0 for t in range(7)]
    assert traj["ntk_density_nodes"].shape == (7, 10) and traj["hessian_density_weights"].shape == (7, 10)
    np.testing.assert_allclose(traj["hessian_density_weights"][rows].reshape(3, 2, 5).sum(-1), 1.0, rtol=1e-10)
    # At θ₀ (row 0) against the dense Hessian.
    exact = float(jnp.trace(_dense(problem)["hessian"]))
    assert abs(traj["hessian_trace"][0] - exact) <= 3 * traj["hessian_trace_stderr"][0]
    with pytest.raises(EoslabError, match="density"):
        train(problem, 0.1, 3, track=(), density=("fisher",), density_every=1)
