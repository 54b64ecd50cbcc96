"""Matrix-free products on flat vectors: Hessian-vector, NTK-vector, Gauss-Newton-vector.

Each builder returns ``(matvec, dim)`` with ``matvec: (dim,) -> (dim,)`` closed over the
current parameters; they are cheap to rebuild inside a jitted step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from eoslab.errors import EoslabError
from eoslab.problem import Params, Problem
from eoslab.typing import Array, DTypeLike, Float, Matvec


def hvp(problem: Problem, params: Params) -> tuple[Matvec, int]:
    """``v ↦ ∇²L(θ) v`` by forward-over-reverse (one JVP of the gradient), on (P,) vectors."""
    flat, unravel = ravel_pytree(params)
    grad = jax.grad(lambda v: problem.loss_fn(unravel(v)))

    def mv(v):
        return jax.jvp(grad, (flat,), (v.astype(flat.dtype),))[1]

    return mv, flat.size


def ntk_vp(problem: Problem, params: Params) -> tuple[Matvec, int]:
    """``u ↦ J (Jᵀ u) / norm`` on (N,) output-space vectors (one VJP and one JVP)."""
    flat, unravel = ravel_pytree(params)
    f = lambda v: problem.predict(unravel(v)).reshape(-1)
    out, vjp = jax.vjp(f, flat)

    def mv(u):
        (w,) = vjp(u.astype(out.dtype))
        return jax.jvp(f, (flat,), (w,))[1] / problem.normaliser

    return mv, out.size


def gnvp(problem: Problem, params: Params) -> tuple[Matvec, int]:
    """``v ↦ Jᵀ (∂²L/∂f²) J v`` on (P,) vectors (Gauss-Newton; MSE or cross-entropy)."""
    flat, unravel = ravel_pytree(params)
    f = lambda v: problem.predict(unravel(v))
    out, vjp = jax.vjp(f, flat)
    lossh = lambda o: problem.loss_from_outputs(o)

    def mv(v):
        Jv = jax.jvp(f, (flat,), (v.astype(flat.dtype),))[1]
        HJv = jax.jvp(jax.grad(lossh), (out,), (Jv,))[1]
        return vjp(HJv)[0]

    return mv, flat.size


def dense_from_matvec(mv: Matvec, dim: int, dtype: DTypeLike = jnp.float64) -> Float[Array, "n n"]:
    """Materialise a matvec as a (dim, dim) matrix (tests, tiny problems)."""
    return jax.vmap(mv, out_axes=1)(jnp.eye(dim, dtype=dtype))


#: Operators of a Problem that can be tracked. For MSE the Hessian is the Gauss-Newton term
#: ``JᵀJ/norm`` plus the residual term ``Σ_α z_α ∇²f_α / norm``; the NTK ``J Jᵀ/norm`` has
#: the same non-zero eigenvalues as the Gauss-Newton matrix (it acts on outputs, not params).
OPERATORS = ("hessian", "ntk", "gauss_newton")


def operator(problem: Problem, params: Params, which: str) -> tuple[Matvec, int]:
    """``(matvec, dim)`` of the named operator of ``problem`` at ``params`` (see :data:`OPERATORS`)."""
    builders = {"hessian": hvp, "ntk": ntk_vp, "gauss_newton": gnvp}
    if which not in builders:
        raise EoslabError(f"unknown operator {which!r}; expected one of {OPERATORS}")
    return builders[which](problem, params)
