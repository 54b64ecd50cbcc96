"""The second-order Taylor model of any :class:`~eoslab.Problem` around θ₀.

    f₂(θ) = f(θ₀) + J₀ δ + ½ Q₀(δ, δ),      δ = θ − θ₀,

with J₀ = ∂f/∂θ(θ₀) and Q₀ = ∂²f/∂θ²(θ₀). It is a second-order regression model
(G = J₀ᵀ, Q = Q₀, y = f(θ₀) − targets, in δ coordinates), but here it is evaluated
*matrix-free*: one nested JVP of the network gives ``f(θ₀)``, ``J₀δ`` and ``Q₀(δ, δ)``
together (for the inner JVP δ is a constant, so differentiating ``θ ↦ J(θ)δ`` along δ
gives ``Q(δ, δ)``), and nothing of size P² or N·P is ever formed. Its cost is a few
forward passes of the network; gradients and Hessian-vector products go through it by
ordinary autodiff.

:func:`taylor_problem` returns a :class:`~eoslab.Problem` (the same data, targets, loss
and θ₀) that every routine of :mod:`eoslab.spectra`, :mod:`eoslab.dynamics` and
:func:`eoslab.dynamics.train.train` accepts. :func:`to_second_order` materialises the
dense :class:`~eoslab.models.SecondOrder` (Q of shape (N, P, P)) for tiny problems.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from eoslab.errors import EoslabError
from eoslab.models.second_order import SecondOrder
from eoslab.problem import Params, Problem
from eoslab.typing import Array, Float, PredictFn


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TaylorData:
    """The data of a Taylor problem: the base problem's ``inputs`` and the expansion point
    ``anchor`` (θ₀, the base parameter pytree). A pytree."""

    inputs: Any
    anchor: Params

    def subset(self, indices) -> "TaylorData":
        """The examples ``indices`` of the inputs; the expansion point is not sliced
        (used by :meth:`eoslab.Problem.subset`)."""
        return TaylorData(jax.tree_util.tree_map(lambda x: jnp.asarray(x)[indices], self.inputs), self.anchor)


def expand(fn: PredictFn, anchor: Params, delta: Params, inputs: Any) -> tuple[Array, Array, Array]:
    """``(f(θ₀), J₀δ, Q₀(δ, δ))`` of ``fn(·, inputs)`` at θ₀ = ``anchor``: one nested JVP."""
    f = lambda p: fn(p, inputs)
    inner = lambda p: jax.jvp(f, (p,), (delta,))
    (f0, jd), (_, qdd) = jax.jvp(inner, (anchor,), (delta,))
    return f0, jd, qdd


@dataclasses.dataclass(frozen=True)
class TaylorFn:
    """``fn₂(θ, TaylorData) = f(θ₀) + J₀δ + ½Q₀(δ, δ)`` for a base ``fn(θ, inputs)``.
    Hashable (a static field of a Problem)."""

    base: Callable

    def __call__(self, params, data: TaylorData):
        delta = jax.tree_util.tree_map(lambda a, b: a - b, params, data.anchor)
        f0, jd, qdd = expand(self.base, data.anchor, delta, data.inputs)
        return f0 + jd + 0.5 * qdd


def taylor_problem(problem: Problem, anchor: Params | None = None) -> Problem:
    """The second-order Taylor model of ``problem`` around ``anchor`` (default θ₀ =
    ``problem.params``), as a Problem starting at the anchor (δ = 0).

    Same data, targets, loss and normaliser, so both can be trained with the same η and
    compared step by step.
    """
    anchor = problem.params if anchor is None else anchor
    if isinstance(problem.fn, TaylorFn):
        raise EoslabError("the problem is already a Taylor model")
    return Problem(TaylorFn(problem.fn), TaylorData(problem.data, anchor), problem.targets, anchor,
                   problem.loss, problem.norm)


def is_taylor(problem: Problem) -> bool:
    return isinstance(problem.fn, TaylorFn)


def nonlinear_terms(problem: Problem, params: Params, delta: Params) -> tuple[Float[Array, " N"], Float[Array, " N"]]:
    """For an update ``δ`` at θ: ``(J δ, ½ Q(δ, δ))`` of the problem's outputs, flattened
    (N,) each. For the parameter update of one GD step (δ = −η∇L) these are the linear and
    the non-linear (η²) parts of the output change: the *non-linear dynamical
    contribution* is ``½ Q(δ, δ)``. Works for any Problem (a network or its Taylor model)."""
    _, jd, qdd = expand(problem.fn, params, delta, problem.data)
    return jd.reshape(-1), 0.5 * qdd.reshape(-1)


def to_second_order(problem: Problem, anchor: Params | None = None, max_params: int = 2000) -> SecondOrder:
    """The Taylor model as a dense :class:`SecondOrder` in δ coordinates (tiny P only).

    ``y = f(θ₀) − targets`` (N,) (outputs flattened: N = n·c), ``G = J₀ᵀ`` (P, N),
    ``Q = ∂²f/∂θ²`` (N, P, P), θ₀ = 0, and the problem's loss normaliser, so that
    :func:`eoslab.models.second_order.problem` has the same loss as
    :func:`taylor_problem` (MSE only).
    """
    if problem.loss != "mse":
        raise EoslabError("a SecondOrder model has an MSE loss; the problem uses " + problem.loss)
    anchor = problem.params if anchor is None else anchor
    flat, unravel = ravel_pytree(anchor)
    if flat.size > max_params:
        raise EoslabError(f"to_second_order materialises Q of size N·P² with P = {flat.size} > "
                          f"max_params = {max_params}; use taylor_problem (matrix-free) instead")
    f = lambda v: problem.fn(unravel(v), problem.data).reshape(-1)
    y = f(flat) - problem.targets.reshape(-1)
    J = jax.jacfwd(f)(flat)
    Q = jax.jacfwd(jax.jacfwd(f))(flat)
    return SecondOrder(y=y, G=J.T, Q=Q, theta0=jnp.zeros_like(flat), norm=problem.normaliser)
