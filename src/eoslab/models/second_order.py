"""Second-order regression models: outputs quadratic in the parameters.

    f(θ) = y + Gᵀθ + ½ Q(θ, θ),      f: R^P → R^D,

with ``y`` (D,), ``G`` (P, D) and ``Q`` (D, P, P) symmetric in its last two indices.
Targets are absorbed into ``y``, so the residuals are ``z = f(θ)`` and the loss is
``L = Σ_α z_α² / (2·norm)`` (``norm = D`` by default).

Derived quantities (all exact because f is quadratic):

* Jacobian ``J(θ) = Gᵀ + Q(θ, ·)`` (D, P); NTK ``J Jᵀ``;
* loss Hessian ``H = (JᵀJ + Σ_α z_α Q_α) / norm`` (P, P);
* GD in output space (``g = Jᵀz/norm``)::

      z' = z − η J g + ½ η² Q(g, g),      J' = J − η Q(g, ·).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from eoslab.errors import EoslabError, check_memory
from eoslab.problem import Problem
from eoslab._precision import x64
from eoslab.typing import Array, DTypeLike, Float, PRNGKeyArray


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SecondOrder:
    """Data of a second-order model. ``y`` (D,), ``G`` (P, D), ``Q`` (D, P, P), ``theta0`` (P,).

    ``norm`` is the loss normaliser (static; ``None`` → D).
    """

    y: jax.Array
    G: jax.Array
    Q: jax.Array
    theta0: jax.Array
    norm: float | None = dataclasses.field(default=None, metadata=dict(static=True))

    def __post_init__(self):
        # Shapes are only checked on concrete arrays (not inside vmap/jit tracing).
        if all(hasattr(a, "shape") for a in (self.y, self.G, self.Q, self.theta0)):
            D, P = self.y.shape[-1], self.theta0.shape[-1]
            if self.G.shape[-2:] != (P, D) or self.Q.shape[-3:] != (D, P, P):
                raise EoslabError(
                    f"second-order model shapes do not match: y {self.y.shape}, G {self.G.shape} "
                    f"(expected (P, D) = {(P, D)}), Q {self.Q.shape} (expected (D, P, P) = {(D, P, P)}), "
                    f"theta0 {self.theta0.shape}")

    @property
    def D(self) -> int:
        return self.y.shape[-1]

    @property
    def P(self) -> int:
        return self.theta0.shape[-1]

    @property
    def normaliser(self) -> float:
        return float(self.D if self.norm is None else self.norm)


@x64
def predict(theta: Float[Array, " P"], m: SecondOrder) -> Float[Array, " D"]:
    """f(θ) (D,) for θ (P,)."""
    return m.y + m.G.T @ theta + 0.5 * jnp.einsum("apq,p,q->a", m.Q, theta, theta)


@x64
def jacobian(theta: Float[Array, " P"], m: SecondOrder) -> Float[Array, "D P"]:
    """J(θ) = Gᵀ + Q(θ, ·), shape (D, P)."""
    return m.G.T + jnp.einsum("apq,q->ap", m.Q, theta)


@x64
def problem(m: SecondOrder) -> Problem:
    """The model as a generic :class:`Problem` (targets 0: they live in ``y``)."""
    return Problem(predict, m, jnp.zeros_like(m.y), m.theta0, "mse", m.norm)


@x64
def goe(key: PRNGKeyArray, P: int, sigma_q: float = 1.0, batch: tuple[int, ...] = (),
        dtype: DTypeLike = jnp.float64) -> Float[Array, "*batch P P"]:
    """GOE matrices σ_q (A + Aᵀ)/√2, A i.i.d. N(0, 1), shape (*batch, P, P): symmetric,
    off-diagonal variance σ_q², diagonal variance 2σ_q² (``batch=(D,)``: one per datapoint,
    the Q of Theorem 2)."""
    A = jax.random.normal(key, (*batch, P, P), dtype)
    return sigma_q * (A + jnp.swapaxes(A, -1, -2)) / jnp.sqrt(2.0)


@x64
def random(key: PRNGKeyArray, D: int, P: int, sigma_z: float = 1.0, sigma_j: float = 1.0, sigma_q: float = 1.0,
           norm: float | None = None, dist: str = "gaussian", dtype: DTypeLike = jnp.float64) -> SecondOrder:
    """A random model as in Theorem 2, expanded around θ₀ = 0.

    At θ₀ = 0 the residuals are ``z₀ = y`` and the Jacobian ``J₀ = Gᵀ``, so the three
    ensembles are independent with i.i.d. zero-mean entries:
    ``z₀ ~ σ_z·ξ`` (D,), ``J₀ ~ σ_J·ξ`` (D, P), ``Q = σ_q·(A + Aᵀ)/√2`` (D, P, P),
    with ξ standard Gaussian (``dist="gaussian"``) or Rademacher (``dist="rademacher"``).
    Deterministic in ``key``; ``vmap`` over keys gives a batch of models.
    """
    if dist not in ("gaussian", "rademacher"):
        raise EoslabError(f"unknown distribution {dist!r}; expected 'gaussian' or 'rademacher'")
    # Q alone is D·P² numbers (and its symmetrisation a second copy): refuse what cannot fit
    # before XLA aborts the process on the allocation
    check_memory(f"D = {D:,}, P = {P:,}", 2.0 * jnp.dtype(dtype).itemsize * D * P * P, "Q alone is D·P² numbers")
    kz, kj, kq = jax.random.split(key, 3)

    def draw(k, shape):
        if dist == "gaussian":
            return jax.random.normal(k, shape, dtype)
        return jax.random.rademacher(k, shape, dtype)

    if dist == "gaussian":
        Q = goe(kq, P, batch=(D,), dtype=dtype)
    else:
        A = draw(kq, (D, P, P))
        Q = (A + jnp.swapaxes(A, -1, -2)) / jnp.sqrt(2.0)
    return SecondOrder(y=sigma_z * draw(kz, (D,)), G=sigma_j * draw(kj, (P, D)).astype(dtype),
                       Q=sigma_q * Q, theta0=jnp.zeros(P, dtype), norm=norm)


@x64
def from_initial(z0: Float[Array, " D"], J0: Float[Array, "D P"], Q: Float[Array, "D P P"],
                 norm: float | None = None) -> SecondOrder:
    """The model with prescribed initial residuals ``z0`` (D,), Jacobian ``J0`` (D, P) and
    curvature ``Q`` (D, P, P), expanded around θ₀ = 0."""
    z0, J0, Q = jnp.asarray(z0), jnp.asarray(J0), jnp.asarray(Q)
    if J0.ndim != 2 or J0.shape[0] != z0.shape[0]:
        raise EoslabError(f"J0 must have shape (D, P) with D = len(z0) = {z0.shape[0]}, got {J0.shape}")
    return SecondOrder(y=z0, G=J0.T, Q=Q, theta0=jnp.zeros(J0.shape[1], J0.dtype), norm=norm)
