"""Matrix-free products on flat vectors: Hessian-vector, NTK-vector, Gauss-Newton-vector.

Each builder returns ``(matvec, dim)`` with ``matvec: (dim,) -> (dim,)`` closed over the
current parameters; they are cheap to rebuild inside a jitted step.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from eoslab.errors import EoslabError
from eoslab.problem import Params, Problem
from eoslab.typing import Array, DTypeLike, Float, Matvec, PyTree


def rows(matvec: Matvec, X: Float[Array, "m n"]) -> Float[Array, "m n"]:
    """The products ``matvec(X[i])`` stacked, (m, n): one after the other on a CPU (the m calls
    unrolled; m is static and small, a tracker's block), one ``vmap``-ped batch elsewhere.

    Why: ``vmap`` turns each matrix product of a product into a batched one, which XLA:CPU runs
    slower than the same matrix products one at a time (the batch gets no faster kernel there);
    on accelerators the batch is the faster form. Measured on the 100k-parameter MLP of
    ``benchmarks/tracking_overhead.py``: the step with 3 fused Hessian products 7.8 GD steps
    vmapped, 6.7 unrolled; with 1, 3.1 either way."""
    def one_by_one(X):
        return jnp.stack([matvec(X[i]) for i in range(X.shape[0])])

    return jax.lax.platform_dependent(X, cpu=one_by_one, default=jax.vmap(matvec))


def tree_rows(tangent: Callable[[Array], PyTree], X: Float[Array, "m n"], dtype: DTypeLike) -> Float[Array, "m n"]:
    """The products ``tangent(X[i])`` (pytrees of the parameters' structure) flattened into the
    rows of one (m, n) array of ``dtype``, as :func:`rows` of ``flatten(tangent(v))``.

    On a CPU the m products run one after the other (see :func:`rows`) and each leaf's m
    tangents are written at once, one ``dynamic_update_slice`` of an (m, size) block per leaf:
    stacking m flattened rows instead lets XLA:CPU fuse the row writes and the stack into one
    elementwise loop (nearly 3 ms per step for two rows at P = 10⁵, profiled), and one
    ``ravel_pytree`` of a single row fuses a 2-D leaf's layout transpose into its concatenate."""
    def one_by_one(X):
        outs = [jax.tree_util.tree_leaves(tangent(X[i])) for i in range(X.shape[0])]
        out = jnp.zeros(X.shape, dtype)
        at = 0
        for j, leaf in enumerate(outs[0]):
            if leaf.size:
                block = jnp.stack([o[j].reshape(-1) for o in outs]).astype(dtype)
                out = jax.lax.dynamic_update_slice(out, block, (0, at))
            at += leaf.size
        return out

    return jax.lax.platform_dependent(X, cpu=one_by_one, default=jax.vmap(lambda v: flatten(tangent(v), dtype)))


def flatten(tree: PyTree, dtype: DTypeLike) -> Float[Array, " P"]:
    """The leaves of ``tree`` one after the other in a (P,) vector of ``dtype``: the order and
    values of ``ravel_pytree(tree)[0]``, built by one ``dynamic_update_slice`` per leaf.

    Why not ``ravel_pytree``: its single ``concatenate``, applied to a product's tangents inside
    a ``while_loop`` (the tracker's expansions) on XLA:CPU, gets the layout transpose of a 2-D
    leaf fused into it, and that one fusion then costs about as much as all the product's matmuls
    (``benchmarks/operators.py``, P ≈ 10⁵ on 2 cores: 1.7–1.8 gradients per product, against
    1.8–2.7 with the concatenate, whose slow fusion does not form in every run).
    Written leaf by leaf, each transpose stays in a small fusion of its own."""
    leaves = jax.tree_util.tree_leaves(tree)
    out = jnp.zeros((sum(x.size for x in leaves),), dtype)
    at = 0
    for x in leaves:
        if x.size:
            out = jax.lax.dynamic_update_slice(out, jnp.ravel(x).astype(dtype), (at,))
        at += x.size
    return out


def hvp(problem: Problem, params: Params, *, linearized: bool = False) -> tuple[Matvec, int]:
    """``v ↦ ∇²L(θ) v`` by forward-over-reverse (one JVP of the gradient), on (P,) vectors.

    ``linearized``: linearise the gradient at θ once, when the builder is called
    (``jax.linearize``: the gradient's forward and backward passes run then, whether or not a
    product is ever taken), so that each product is only the tangent part (about 2 gradients
    instead of 3 when the product sits inside a ``lax.cond`` / ``while_loop``, where XLA does
    not share the primal with the rest of the step). Use it where products are certain."""
    flat, unravel = ravel_pytree(params)
    grad = jax.grad(problem.loss_fn)      # on the pytree: the flat vectors only at the ends (flatten)
    if linearized:
        _, lin = jax.linearize(grad, params)
        return (lambda v: flatten(lin(unravel(v.astype(flat.dtype))), flat.dtype)), flat.size

    def mv(v):
        return flatten(jax.jvp(grad, (params,), (unravel(v.astype(flat.dtype)),))[1], flat.dtype)

    return mv, flat.size


def ntk_vp(problem: Problem, params: Params) -> tuple[Matvec, int]:
    """``u ↦ J (Jᵀ u) / norm`` on (N,) output-space vectors (one VJP and one JVP).

    The model is linearised once at θ (``jax.linearize``; Jᵀ is its transpose), so a product
    is two tangent passes and never re-runs the forward pass, also inside ``lax.cond`` /
    ``while_loop`` (there, a ``jax.jvp`` per product re-ran it: about 1.3× the cost)."""
    f = lambda p: problem.predict(p).reshape(-1)
    out, jac = jax.linearize(f, params)     # on the pytree: no flat parameter vector at all
    jac_t = jax.linear_transpose(jac, params)

    def mv(u):
        (w,) = jac_t(u.astype(out.dtype))
        return jac(w) / problem.normaliser

    return mv, out.size


def gnvp(problem: Problem, params: Params) -> tuple[Matvec, int]:
    """``v ↦ Jᵀ (∂²L/∂f²) J v`` on (P,) vectors (Gauss-Newton; MSE or cross-entropy)."""
    flat, unravel = ravel_pytree(params)
    out, jac = jax.linearize(problem.predict, params)   # one forward pass, shared by J and Jᵀ (see ntk_vp)
    jac_t = jax.linear_transpose(jac, params)
    lossh = lambda o: problem.loss_from_outputs(o)

    def mv(v):
        Jv = jac(unravel(v.astype(flat.dtype)))
        HJv = jax.jvp(jax.grad(lossh), (out,), (Jv,))[1]
        return flatten(jac_t(HJv)[0], flat.dtype)

    return mv, flat.size


def dense_from_matvec(mv: Matvec, dim: int, dtype: DTypeLike = jnp.float64) -> Float[Array, "n n"]:
    """Materialise a matvec as a (dim, dim) matrix (tests, tiny problems)."""
    return jax.vmap(mv, out_axes=1)(jnp.eye(dim, dtype=dtype))


#: Operators of a Problem that can be tracked. For MSE the Hessian is the Gauss-Newton term
#: ``JᵀJ/norm`` plus the residual term ``Σ_α z_α ∇²f_α / norm``; the NTK ``J Jᵀ/norm`` has
#: the same non-zero eigenvalues as the Gauss-Newton matrix (it acts on outputs, not params).
OPERATORS = ("hessian", "ntk", "gauss_newton")


def operator(problem: Problem, params: Params, which: str) -> tuple[Matvec, int]:
    """``(matvec, dim)`` of the named operator of ``problem`` at ``params`` (see :data:`OPERATORS`),
    for callers that take products for certain (trackers, densities): the Hessian's is
    ``hvp(..., linearized=True)``."""
    builders = {"hessian": lambda pr, p: hvp(pr, p, linearized=True), "ntk": ntk_vp, "gauss_newton": gnvp}
    if which not in builders:
        raise EoslabError(f"unknown operator {which!r}; expected one of {OPERATORS}")
    return builders[which](problem, params)
