"""The 2-D model of Theorem 1: one datapoint, two parameters.

    f(θ) = ½ θᵀ Q θ,   Q = R diag(1, −ε) Rᵀ,   L(θ) = ½ (f(θ) − E)²,

with R the rotation by ``angle`` (default 0: Q's eigenbasis, where f = ½(θ₁² − εθ₂²),
J = (θ₁, −εθ₂) and the NTK is λ = θ₁² + ε²θ₂²).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from eoslab.errors import EoslabError, check_positive_int
from eoslab.models.second_order import SecondOrder
from eoslab.problem import Problem
from eoslab._precision import x64
from eoslab.typing import Array, ArrayLike, Float, PRNGKeyArray


@x64
def check_eps(eps: float) -> float:
    eps = float(eps)
    if not (0.0 < eps < 1.0):
        raise EoslabError(f"eps must lie in (0, 1), got {eps!r}")
    return eps


@x64
def curvature(eps: float, angle: float = 0.0) -> Float[Array, "2 2"]:
    """Q (2, 2) with eigenvalues {1, −ε}, rotated by ``angle`` radians."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    R = jnp.array([[c, -s], [s, c]], dtype=jnp.float64)
    return R @ jnp.diag(jnp.array([1.0, -eps], dtype=jnp.float64)) @ R.T


@x64
def predict(theta: Float[Array, "2"], Q: Float[Array, "2 2"]) -> Float[Array, "1"]:
    """f(θ) as a (1,) array, for θ (2,)."""
    return (0.5 * theta @ Q @ theta)[None]


@x64
def problem(eps: float, theta0: Float[ArrayLike, "2"], E: float = 0.0, angle: float = 0.0) -> Problem:
    """The 2-D model as a :class:`Problem` with θ₀ = ``theta0`` (2,)."""
    theta0 = jnp.asarray(theta0, dtype=jnp.float64)
    if theta0.shape != (2,):
        raise EoslabError(f"theta0 of the 2-D model must have shape (2,), got {theta0.shape}")
    return Problem(predict, curvature(check_eps(eps), angle), jnp.array([E], jnp.float64), theta0)


@x64
def as_second_order(eps: float, theta0: Float[ArrayLike, "2"], E: float = 0.0, angle: float = 0.0) -> SecondOrder:
    """The same model as a :class:`SecondOrder` with D = 1, P = 2 (y = −E, G = 0)."""
    Q = curvature(check_eps(eps), angle)
    return SecondOrder(y=jnp.array([-E], jnp.float64), G=jnp.zeros((2, 1), jnp.float64), Q=Q[None],
                       theta0=jnp.asarray(theta0, dtype=jnp.float64))


@x64
def ntk(theta: Float[Array, "*batch 2"], eps: float) -> Float[Array, "*batch"]:
    """λ = θ₁² + ε²θ₂² in the eigenbasis (angle 0); θ (..., 2)."""
    return theta[..., 0] ** 2 + eps**2 * theta[..., 1] ** 2


@x64
def output(theta: Float[Array, "*batch 2"], eps: float) -> Float[Array, "*batch"]:
    """f = ½(θ₁² − εθ₂²) in the eigenbasis; θ (..., 2)."""
    return 0.5 * (theta[..., 0] ** 2 - eps * theta[..., 1] ** 2)


#: Default box of initialisations of ``eoslab run quadratic2d``, in the scaled coordinates
#: (θ₁√η, θ₂√(εη)). At ε = 0.1 about 93 % of its runs end at the EoS (≈ 90 % cross ηλ = 2),
#: none diverge; the basin narrows as ε decreases (at ε = 0.02 use θ₂√(εη) ∈ [1.6, 2.2]).
DEFAULT_THETA1 = (0.1, 0.3)
DEFAULT_THETA2 = (1.8, 2.6)


@x64
def sample_inits(key: PRNGKeyArray, n: int, eps: float, lr: float, theta1: tuple[float, float] = DEFAULT_THETA1,
                 theta2: tuple[float, float] = DEFAULT_THETA2) -> Float[Array, "n 2"]:
    """(n, 2) initialisations uniform in θ₁√η ∈ ``theta1``, θ₂√(εη) ∈ ``theta2``.

    With E = 0, θ ↦ √η θ maps GD at step size η to GD at η = 1, so these scaled ranges give
    the same dynamics at every η (and θ₂ ~ c/√ε puts f ≈ −c²/2 at O(1) for every ε)."""
    n = check_positive_int("number of initialisations", n)
    for name, (lo, hi) in (("theta1", theta1), ("theta2", theta2)):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise EoslabError(f"{name} range must be finite with lo <= hi, got {(lo, hi)}")
    k1, k2 = jax.random.split(key)
    u1 = jax.random.uniform(k1, (n,), jnp.float64, theta1[0], theta1[1])
    u2 = jax.random.uniform(k2, (n,), jnp.float64, theta2[0], theta2[1])
    return jnp.stack([u1 / math.sqrt(lr), u2 / math.sqrt(eps * lr)], axis=1)
