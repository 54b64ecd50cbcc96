"""The 2-D model of Theorem 1: one datapoint, two parameters.

    f(θ) = ½ θᵀ Q θ,   Q = R diag(1, −ε) Rᵀ,   L(θ) = ½ (f(θ) − E)²,

with R the rotation by ``angle`` (default 0: Q's eigenbasis, where f = ½(θ₁² − εθ₂²),
J = (θ₁, −εθ₂) and the NTK is λ = θ₁² + ε²θ₂²).
"""

from __future__ import annotations

import jax.numpy as jnp

from eoslab.errors import EoslabError
from eoslab.models.second_order import SecondOrder
from eoslab.problem import Problem


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not (0.0 < eps < 1.0):
        raise EoslabError(f"eps must lie in (0, 1), got {eps!r}")
    return eps


def curvature(eps: float, angle: float = 0.0) -> jnp.ndarray:
    """Q (2, 2) with eigenvalues {1, −ε}, rotated by ``angle`` radians."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    R = jnp.array([[c, -s], [s, c]], dtype=jnp.float64)
    return R @ jnp.diag(jnp.array([1.0, -eps], dtype=jnp.float64)) @ R.T


def predict(theta, Q):
    """f(θ) as a (1,) array, for θ (2,)."""
    return (0.5 * theta @ Q @ theta)[None]


def problem(eps: float, theta0, E: float = 0.0, angle: float = 0.0) -> Problem:
    """The 2-D model as a :class:`Problem` with θ₀ = ``theta0`` (2,)."""
    theta0 = jnp.asarray(theta0, dtype=jnp.float64)
    if theta0.shape != (2,):
        raise EoslabError(f"theta0 of the 2-D model must have shape (2,), got {theta0.shape}")
    return Problem(predict, curvature(check_eps(eps), angle), jnp.array([E], jnp.float64), theta0)


def as_second_order(eps: float, theta0, E: float = 0.0, angle: float = 0.0) -> SecondOrder:
    """The same model as a :class:`SecondOrder` with D = 1, P = 2 (y = −E, G = 0)."""
    Q = curvature(check_eps(eps), angle)
    return SecondOrder(y=jnp.array([-E], jnp.float64), G=jnp.zeros((2, 1), jnp.float64), Q=Q[None],
                       theta0=jnp.asarray(theta0, dtype=jnp.float64))


def ntk(theta, eps: float):
    """λ = θ₁² + ε²θ₂² in the eigenbasis (angle 0); θ (..., 2)."""
    return theta[..., 0] ** 2 + eps**2 * theta[..., 1] ** 2


def output(theta, eps: float):
    """f = ½(θ₁² − εθ₂²) in the eigenbasis; θ (..., 2)."""
    return 0.5 * (theta[..., 0] ** 2 - eps * theta[..., 1] ** 2)
