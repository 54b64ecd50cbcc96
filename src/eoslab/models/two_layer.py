"""The minimalist two-layer network of Liu, Zhang, Du & Zhao (arXiv 2503.02809).

A width-one linear network with a two-dimensional input,

    f(x) = α (β₁x₁ + β₂x₂),      θ = (α, β₁, β₂) ∈ R³,

inputs x ~ N(0, diag(λ₁, λ₂)), target y = x₂ (x₁ is irrelevant; in the interesting regime its
variance λ₁ is the larger one). Because y = w*·x with w* = e₂ exactly, every version of the
loss is a quadratic form in the end-to-end weight r = αβ − w*,

    L(θ) = ½ rᵀ Σ r,      Σ = E[xxᵀ] = diag(λ₁, λ₂)      (population loss),
                         Σ = XᵀX / n                    (empirical loss on n samples),

so L_pop = ½λ₁(αβ₁)² + ½λ₂(αβ₂ − 1)² (E[½(α β·x − x₂)²], x₁ ⟂ x₂, zero mean). Both versions are
:class:`~eoslab.Problem` s and run through :func:`eoslab.dynamics.gd` like every other model.
The population loss is realised exactly as an MSE problem on two "whitened" points
x⁽¹⁾ = (√λ₁, 0), x⁽²⁾ = (0, √λ₂) with targets (0, √λ₂) and normaliser 1.

Closed forms (any SPD Σ; derivations in docs/companions.md):

    ∇_α L = βᵀΣr,   ∇_β L = αΣr,
    ∇²L = [[βᵀΣβ, (Σr + αΣβ)ᵀ], [Σr + αΣβ, α²Σ]].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from eoslab.errors import EoslabError, check_positive, check_positive_int
from eoslab.problem import Problem
from eoslab._precision import x64
from eoslab.typing import Array, ArrayLike, Float, PRNGKeyArray

#: Target end-to-end weight: y = x₂.
W_STAR = np.array([0.0, 1.0])  # NumPy: a float64 constant whatever the JAX mode at import
#: Default initialisation θ₀ = (α, β₁, β₂): small, so that the sharpness starts near 0.
THETA0 = (0.05, 0.1, 0.05)


@x64
def predict(theta: Float[Array, "3"], x: Float[Array, "n 2"]) -> Float[Array, " n"]:
    """f(x) = α β·x for θ = (α, β₁, β₂) (3,) and inputs x (n, 2); returns (n,)."""
    return theta[0] * (x @ theta[1:])


@x64
def covariance(lam1: float, lam2: float) -> Float[Array, "2 2"]:
    """Σ = diag(λ₁, λ₂) (2, 2), after checking both variances are positive."""
    return jnp.diag(jnp.array([check_positive("lam1", lam1), check_positive("lam2", lam2)],
                              dtype=jnp.float64))


def _theta(theta0) -> jax.Array:
    theta0 = jnp.asarray(theta0, dtype=jnp.float64)
    if theta0.shape != (3,):
        raise EoslabError(f"theta0 of the two-layer model must be (alpha, beta1, beta2), got shape "
                          f"{theta0.shape}")
    return theta0


@x64
def population_problem(lam1: float, lam2: float, theta0: Float[ArrayLike, "3"] = THETA0) -> Problem:
    """The population loss ½λ₁(αβ₁)² + ½λ₂(αβ₂ − 1)² as a :class:`Problem` (exact, see module doc)."""
    root = jnp.sqrt(jnp.diag(covariance(lam1, lam2)))
    x = jnp.diag(root)                      # two whitened points, (2, 2)
    y = x @ W_STAR                          # y = x₂ on each, (2,)
    return Problem.from_model(predict, _theta(theta0), x, y, "mse", norm=1.0)


@x64
def sample(key: PRNGKeyArray, lam1: float, lam2: float, n: int) -> tuple[Float[Array, "n 2"], Float[Array, " n"]]:
    """n samples ``x`` (n, 2) ~ N(0, diag(λ₁, λ₂)) and their targets ``y = x₂`` (n,)."""
    n = check_positive_int("n", n)
    std = jnp.sqrt(jnp.diag(covariance(lam1, lam2)))
    x = jax.random.normal(key, (n, 2), jnp.float64) * std
    return x, x[:, 1]


@x64
def empirical_problem(key: PRNGKeyArray, lam1: float, lam2: float, n: int, theta0: Float[ArrayLike, "3"] = THETA0) -> Problem:
    """The empirical loss (1/2n) Σᵢ (f(xᵢ) − yᵢ)² on n fresh samples (deterministic in ``key``)."""
    x, y = sample(key, lam1, lam2, n)
    return Problem.from_model(predict, _theta(theta0), x, y, "mse")


@x64
def problem_covariance(problem: Problem) -> Float[Array, "2 2"]:
    """Σ of a two-layer problem: the loss is ½ rᵀΣr with Σ = XᵀX / norm (for either version)."""
    x = problem.data
    return x.T @ x / problem.normaliser


# ---- closed forms -------------------------------------------------------------------------
@x64
def end_to_end_residual(theta: Float[Array, "*batch 3"]) -> Float[Array, "*batch 2"]:
    """r = αβ − w* (..., 2) for θ (..., 3)."""
    return theta[..., :1] * theta[..., 1:] - W_STAR


@x64
def loss(theta: Float[Array, "3"], sigma: Float[Array, "2 2"]) -> Float[Array, ""]:
    """L = ½ rᵀΣr for θ (3,) and Σ (2, 2)."""
    r = end_to_end_residual(theta)
    return 0.5 * r @ sigma @ r


@x64
def grad(theta: Float[Array, "3"], sigma: Float[Array, "2 2"]) -> Float[Array, "3"]:
    """∇L (3,): (βᵀΣr, αΣr)."""
    r = end_to_end_residual(theta)
    sr = sigma @ r
    return jnp.concatenate([(theta[1:] @ sr)[None], theta[0] * sr])


@x64
def hessian(theta: Float[Array, "3"], sigma: Float[Array, "2 2"]) -> Float[Array, "3 3"]:
    """∇²L (3, 3) in closed form (see module doc)."""
    a, b = theta[0], theta[1:]
    r = end_to_end_residual(theta)
    off = sigma @ r + a * (sigma @ b)
    top = jnp.concatenate([(b @ sigma @ b)[None], off])
    rest = jnp.concatenate([off[:, None], a * a * sigma], axis=1)
    return jnp.concatenate([top[None], rest], axis=0)


@x64
def sharpness(theta: Float[Array, "3"], sigma: Float[Array, "2 2"]) -> Float[Array, ""]:
    """S(θ) = λ_max(∇²L(θ)) (exact, 3×3 ``eigh``)."""
    return jnp.linalg.eigvalsh(hessian(theta, sigma))[-1]
