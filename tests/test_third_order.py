"""Third-order derivatives (spectra.third_order) against finite differences of dense
eigenvalues (float64) and against the closed form of a second-order model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eoslab import EoslabError, Problem
from eoslab.models import second_order
from eoslab.models.mlp import MLP
from eoslab.spectra.third_order import (block_gradient, block_jacobian, flat_loss, sharpness_gradient,
                                        smat, svec)


def _mlp_problem():
    key = jax.random.PRNGKey(3)
    x = jax.random.normal(key, (12, 3), jnp.float64)
    y = jnp.sin(x[:, :1] * 2.0) + x[:, 1:2]
    net = MLP(1, 6, "tanh", 1, "standard")
    params = net.init(jax.random.PRNGKey(1), 3, dtype=jnp.float64)
    return Problem.from_model(net, params, x, y)


def _second_order_problem():
    m = second_order.random(jax.random.PRNGKey(5), D=6, P=9, sigma_z=0.7)
    m = second_order.SecondOrder(m.y, m.G, m.Q, 0.3 * jax.random.normal(jax.random.PRNGKey(6), (9,)))
    return second_order.problem(m), m



def _fd_grad(f, w, h=1e-5):
    """Central finite differences of the scalar f at w, one coordinate at a time."""
    f = jax.jit(f)
    E = h * np.eye(w.size)
    return np.array([(float(f(w + e)) - float(f(w - e))) / (2 * h) for e in E])


@pytest.mark.parametrize("which", ["mlp", "second_order"])
def test_sharpness_gradient_matches_finite_differences_of_the_top_eigenvalue(which):
    problem = _mlp_problem() if which == "mlp" else _second_order_problem()[0]
    loss, w = flat_loss(problem)
    H = jax.jit(jax.hessian(loss))
    evals, evecs = jnp.linalg.eigh(H(w))
    assert evals[-1] - evals[-2] > 1e-3 * abs(evals[-1])        # a simple top eigenvalue
    S, gS = jax.jit(lambda v, u: sharpness_gradient(loss, v, u))(w, evecs[:, -1])
    np.testing.assert_allclose(S, evals[-1], rtol=1e-12)
    top = lambda v: jnp.linalg.eigvalsh(jax.hessian(loss)(v))[-1]
    fd = _fd_grad(top, w)
    np.testing.assert_allclose(gS, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_block_gradient_of_the_top_k_sum_matches_finite_differences():
    problem = _mlp_problem()
    loss, w = flat_loss(problem)
    H = jax.jit(jax.hessian(loss))
    evals, evecs = jnp.linalg.eigh(H(w))
    k = 3
    U = evecs[:, ::-1][:, :k].T
    # ⟨UᵀHU, I⟩ with U the top-k eigenvectors: the gradient of λ₁ + … + λ_k (valid while
    # λ_k > λ_{k+1}, even inside a cluster).
    bg = jax.jit(lambda v, U, X: block_gradient(loss, v, U, X))
    g = bg(w, U, jnp.eye(k))
    topk = lambda v: jnp.sum(jnp.linalg.eigvalsh(jax.hessian(loss)(v))[-k:])
    fd = _fd_grad(topk, w)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())
    # A general symmetric X, with U held fixed: finite differences of ⟨UᵀH(w)U, X⟩.
    X = jnp.array([[1.0, -0.4, 0.2], [-0.4, 0.5, 0.3], [0.2, 0.3, -0.7]])
    gX = bg(w, U, X)
    form = lambda v: jnp.sum((U @ jax.hessian(loss)(v) @ U.T) * X)
    fdX = _fd_grad(form, w)
    np.testing.assert_allclose(gX, fdX, rtol=1e-6, atol=1e-6 * np.abs(fdX).max())
    # The (P, m) matrix of the same linear map.
    A = jax.jit(lambda v, U: block_jacobian(loss, v, U))(w, U)
    np.testing.assert_allclose(A @ svec(X), gX, rtol=1e-10, atol=1e-12 * np.abs(gX).max())
    np.testing.assert_allclose(smat(svec(X), k), X, rtol=1e-15)


def test_second_order_model_closed_form():
    problem, m = _second_order_problem()
    loss, w = flat_loss(problem)
    J = second_order.jacobian(w, m)                      # (D, P)
    z = second_order.predict(w, m)
    norm = m.normaliser
    H = (J.T @ J + jnp.einsum("a,apq->pq", z, m.Q)) / norm
    np.testing.assert_allclose(jax.jit(jax.hessian(loss))(w), H, rtol=1e-12, atol=1e-12)
    evecs = jnp.linalg.eigh(H)[1]
    U = evecs[:, ::-1][:, :2].T
    X = jnp.array([[0.8, 0.3], [0.3, -0.2]])
    # ∇_w⟨UᵀHU, X⟩ for f quadratic: H' along v is (Q(v)ᵀJ + JᵀQ(v) + Σ_α (Jv)_α Q_α)/norm,
    # so the gradient is (2 Σ_α Q_α U ᵀX (JUᵀ)_α-terms + Jᵀ tr(X UQ_αUᵀ))/norm.
    JU = J @ U.T                                         # (D, k)
    QU = jnp.einsum("apq,kq->akp", m.Q, U)               # (D, k, P)
    term1 = 2 * jnp.einsum("akp,al,kl->p", QU, JU, X)
    uQu = jnp.einsum("akp,lp->akl", QU, U)               # (D, k, k)
    term2 = J.T @ jnp.einsum("akl,kl->a", uQu, X)
    closed = (term1 + term2) / norm
    got = jax.jit(lambda v, U, X: block_gradient(loss, v, U, X))(w, U, X)
    np.testing.assert_allclose(got, closed, rtol=1e-10,
                               atol=1e-12 * np.abs(closed).max())


def test_block_gradient_refuses_bad_shapes():
    problem = _mlp_problem()
    loss, w = flat_loss(problem)
    with pytest.raises(EoslabError, match="block_gradient"):
        block_gradient(loss, w, jnp.ones((2, w.size)), jnp.eye(3))
