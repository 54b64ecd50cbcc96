"""Third-order derivatives of the loss, matrix-free: gradients of Hessian quadratic forms.

The central flow (Cohen et al., "Understanding optimization in deep learning with central
flows", ICLR 2025, §3) and self-stabilization (Damian, Nichani & Lee, ICLR 2023, §4) need the
gradient of the sharpness S(w) = λ₁(∇²L(w)). For a simple eigenvalue with unit eigenvector u,
∇S = ∇_w (uᵀ ∇²L(w) u) with u held fixed (first-order perturbation theory), and for a block U
(P, k) and a small symmetric X (k, k),

    ∇_w ⟨Uᵀ ∇²L(w) U, X⟩ = ∇_w Σ_ab X_ab u_aᵀ ∇²L(w) u_b = ∇³L(w)[U X Uᵀ],

the adjoint of v ↦ Uᵀ (∇³L(w)[v]) U. Each is computed by reverse mode over a nested
forward-mode second directional derivative ``∂²/∂s∂t L(w + s a + t b)`` (one gradient of a
jvp-of-jvp), so the third-order tensor is never formed: one call costs a small constant
number of gradient evaluations, whatever P is.

All functions act on flat parameter vectors (P,) (``ravel_pytree`` of the params) and keep
their dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from eoslab.errors import EoslabError
from eoslab.problem import Problem
from eoslab.typing import Array, Float, Int, LossFn, Params


def flat_loss(problem: Problem, params: Params | None = None) -> tuple[LossFn, Float[Array, " P"]]:
    """``(L: (P,) -> scalar, w (P,))`` for ``problem`` at ``params`` (default θ₀)."""
    flat, unravel = ravel_pytree(problem.params if params is None else params)
    return (lambda v: problem.loss_fn(unravel(v))), flat


def quad_form(loss: LossFn, w: Float[Array, " P"], a: Float[Array, " P"], b: Float[Array, " P"]) -> Float[Array, ""]:
    """``aᵀ ∇²L(w) b`` (scalar) by forward-over-forward differentiation; a, b, w (P,)."""
    first = lambda v: jax.jvp(loss, (v,), (a,))[1]
    return jax.jvp(first, (w,), (b,))[1]


def grad_quad_form(loss: LossFn, w: Float[Array, " P"], a: Float[Array, " P"], b: Float[Array, " P"]
                   ) -> Float[Array, " P"]:
    """``∇_w (aᵀ ∇²L(w) b)`` (P,) with a, b held fixed: ``∇³L(w)[a, b, ·]``."""
    return jax.grad(lambda v: quad_form(loss, v, a, b))(w)


def sharpness_gradient(loss: LossFn, w: Float[Array, " P"], u: Float[Array, " P"]
                       ) -> tuple[Float[Array, ""], Float[Array, " P"]]:
    """``(S, ∇S)``: the Rayleigh quotient S = uᵀ∇²L(w)u of the unit vector u (P,) and its
    gradient ∇_w(uᵀ∇²L(w)u) (P,). When u is the top eigenvector of a simple top eigenvalue
    this is the gradient of the sharpness λ₁(∇²L(w))."""
    return jax.value_and_grad(lambda v: quad_form(loss, v, u, u))(w)


def block_gradient(loss: LossFn, w: Float[Array, " P"], U: Float[Array, "k P"], X: Float[Array, "k k"]
                   ) -> Float[Array, " P"]:
    """``∇_w ⟨Uᵀ ∇²L(w) U, X⟩`` (P,) for a block U (k, P) (rows are the vectors) and a
    symmetric X (k, k): ``∇³L(w)[U X Uᵀ]``.

    X is diagonalised (X = Σ_i x_i v_i v_iᵀ), so the cost is k gradients of a quadratic form
    along the rotated vectors Vᵀ U, whatever X's sparsity."""
    U, X = jnp.asarray(U), jnp.asarray(X)
    if U.ndim != 2 or X.shape != (U.shape[0], U.shape[0]):
        raise EoslabError(f"block_gradient needs U (k, P) and X (k, k); got {U.shape} and {X.shape}")
    x, V = jnp.linalg.eigh(0.5 * (X + X.T))
    R = V.T @ U                                           # (k, P) rotated block
    grads = jax.vmap(lambda r: grad_quad_form(loss, w, r, r))(R)
    return jnp.einsum("i,ip->p", x, grads)


def svec_pairs(k: int) -> tuple[Int[Array, " m"], Int[Array, " m"], Float[Array, " m"]]:
    """Index pairs (a, b), a ≤ b, of the ``m = k(k+1)/2`` coordinates of a symmetric k×k
    matrix and the weights that make the coordinates an isometry (1 on the diagonal, √2 off it)."""
    pairs = [(a, b) for a in range(k) for b in range(a, k)]
    ia = jnp.array([p[0] for p in pairs], jnp.int32)
    ib = jnp.array([p[1] for p in pairs], jnp.int32)
    wts = jnp.where(ia == ib, 1.0, 2.0 ** 0.5)
    return ia, ib, wts


def svec(X: Float[Array, "k k"]) -> Float[Array, " m"]:
    """Isometric coordinates (m,) of a symmetric (k, k) matrix: ⟨X, Y⟩ = svec(X)·svec(Y)."""
    ia, ib, wts = svec_pairs(X.shape[-1])
    return X[..., ia, ib] * wts.astype(X.dtype)


def smat(x: Float[Array, " m"], k: int) -> Float[Array, "k k"]:
    """The symmetric (k, k) matrix of the isometric coordinates x (m,)."""
    ia, ib, wts = svec_pairs(k)
    vals = x / wts.astype(x.dtype)
    X = jnp.zeros(x.shape[:-1] + (k, k), x.dtype)
    X = X.at[..., ia, ib].set(vals)
    return X.at[..., ib, ia].set(vals)


def block_jacobian(loss: LossFn, w: Float[Array, " P"], U: Float[Array, "k P"]) -> Float[Array, "P m"]:
    """The matrix A (P, m) of the linear map X ↦ ∇_w⟨Uᵀ∇²L(w)U, X⟩ in the isometric
    coordinates of X (:func:`svec`): ``A @ svec(X) = block_gradient(loss, w, U, X)``.

    Column (a, b) is ∇³L[u_a, u_b, ·] (× √2 off the diagonal): m = k(k+1)/2 gradients of a
    quadratic form, one batched call. Its transpose maps a direction v (P,) to svec of
    Uᵀ(∇³L[v])U, the rate of change of the block's Hessian along v."""
    k = U.shape[0]
    ia, ib, wts = svec_pairs(k)
    cols = jax.vmap(lambda a, b: grad_quad_form(loss, w, a, b))(U[ia], U[ib])   # (m, P)
    return (cols * wts[:, None].astype(cols.dtype)).T
